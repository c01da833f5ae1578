"""GPU requests on Ray tasks, covered on a machine without a GPU: a private Ray that declares one (fake) GPU,
the torch backend on the CPU device, and WW_SCAN_GPU_TASKS=1 - the very code path a CUDA scan takes
(pipelines/dispatch.py: a whole GPU for chunks with a large layer, a share for smaller chunks and batches),
with the analysis itself on the CPU. The CUDA analysis was not run here (no GPU on this machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from pipelines_zoo import make_big_model, model_tensors
from support.checkpoints import write_hf_model_folder

from catalogs.store import ResultStore
from pipelines.dispatch import GPU_SMALL_SHARE
from pipelines.settings import ScanSettings
from ww_spectral.analysis import analyze_model

SCRIPT = textwrap.dedent("""
    import json, sys
    import ray
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    from pipelines import dispatch, scan_state
    from pipelines.flows import scan_folder
    asked, seen = [], {}
    gpus, finished = dispatch.ChunkRunner.gpus, scan_state.ScanState.finished

    def probe_gpus(self, largest):  # what each task asks Ray for
        asked.append((largest, gpus(self, largest)))
        return asked[-1][1]

    def probe_finished(self, item, result, keep=True):  # the GPUs Ray gave each model's tasks
        seen[item.repo_id] = result.get("cuda_devices")
        return finished(self, item, result, keep=keep)

    dispatch.ChunkRunner.gpus, scan_state.ScanState.finished = probe_gpus, probe_finished
    summary = scan_folder(folder=sys.argv[1], data_root=sys.argv[2], workers=2, options={"backend": "torch"})
    print(json.dumps({"summary": summary, "asked": asked, "seen": seen}, default=str))
""")

def test_gpu_requests_follow_the_settings():
    assert not ScanSettings.from_env(environ={}).uses_gpus
    assert ScanSettings.from_env(environ={}, options=ScanSettings().options.__class__(backend="torch",
                                                                                      device="cuda")).uses_gpus
    assert ScanSettings.from_env(environ={"WW_SCAN_GPU_TASKS": "1"}).uses_gpus
    assert not ScanSettings.from_env(environ={"WW_SCAN_GPU_TASKS": "0"}, options=ScanSettings().options.__class__(
        backend="torch", device="cuda")).uses_gpus


@pytest.mark.slow
def test_chunks_and_batches_request_gpus_on_a_ray_with_a_gpu(prefect_api, tmp_path):
    from prefect.settings import PREFECT_API_URL

    big = make_big_model(tmp_path / "zoo" / "big", n_layers=4, side=512)
    small = write_hf_model_folder(tmp_path / "zoo" / "small", model_tensors(1))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(PREFECT_API_URL=PREFECT_API_URL.value(), WW_SCAN_GPU_TASKS="1",
               WW_SCAN_GPU_LARGE_BYTES=str(4 * 2**20),   # the 512 x 512 layers (6.3 MB each) count as large
               WW_SCAN_CHUNK_BYTES=str(3 * 2**20),       # the big model: never batched, one layer per chunk
               PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "zoo"), str(tmp_path / "data")], env=env,
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    summary = out["summary"]
    assert (summary["done"], summary["failed"]) == (2, 0), summary["failures"]
    (info,) = summary["models"]  # the big model: a model task of its own, its layers in chunks
    assert info["chunks"] == 4
    # Four chunks with a large layer each asked for a whole GPU, the batch (largest unknown: 0) for a share;
    # Ray gave every one of them the (fake) GPU 0, the small model's batch included.
    assert sorted(g for _, g in out["asked"]) == [GPU_SMALL_SHARE, 1.0, 1.0, 1.0, 1.0]
    assert out["seen"] == {"big": ["0"], "small": ["0"]}
    # The numbers are the torch backend's on the CPU, as the library computes them directly (float32: the
    # Gram's summation order follows torch's thread count, 1 in a Ray task; measured 2e-6 relative here).
    stored = {r["repo_id"]: r["alpha"] for r in ResultStore(str(tmp_path / "data")).read("models").to_pylist()}
    for name, folder in (("big", big), ("small", small)):
        want = analyze_model(str(folder), backend="torch").summary["alpha"]
        assert stored[name] == pytest.approx(want, rel=2e-5)
