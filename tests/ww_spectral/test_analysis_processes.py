"""Layer parallelism in forked processes (scipy's BLAS/LAPACK wrappers hold the GIL, so threads would
not run layers in parallel): same rows as one process, and only taken where forking is safe."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import numpy as np
from support.checkpoints import write_safetensors

from ww_spectral.analysis import _can_fork, analyze_layers, make_options, plan_layers
from ww_spectral.checkpoint import open_checkpoint

# 5 layers of 1024 on a side: ~5e9 Gram flops, above the fork threshold; plus a bias (skipped row).
SHAPES = {f"l{i}.weight": (1024 + 64 * i, 1024) for i in range(5)}


def _write(tmp_path):
    rng = np.random.default_rng(7)
    tensors = {k: (rng.standard_t(3, size=s) / 30).astype(np.float32) for k, s in SHAPES.items()}
    tensors["l0.bias"] = np.zeros(1024, np.float32)
    return write_safetensors(tmp_path / "model.safetensors", tensors)


SCRIPT = """
import json, sys, threading
from ww_spectral.analysis import _can_fork, analyze_layers, make_options, plan_layers
from ww_spectral.checkpoint import open_checkpoint
opts = make_options()
with open_checkpoint(sys.argv[1]) as ck:
    plans = plan_layers(ck, opts)
    forked = _can_fork(ck, plans, opts)
    rows2 = analyze_layers(ck, plans, opts, workers=2, threads=2)
    rows1 = analyze_layers(ck, plans, opts, workers=1, threads=1)
print(json.dumps({"forked": forked, "threads_after": threading.active_count(), "rows2": rows2, "rows1": rows1}))
"""


def test_forked_workers_give_the_same_rows_in_checkpoint_order(tmp_path):
    path = _write(tmp_path)
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(path)], capture_output=True, text=True,
                         timeout=300, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["forked"] is True  # a single-threaded process with local safetensors: the process path
    assert [r["tensor_name"] for r in res["rows2"]] == [r["tensor_name"] for r in res["rows1"]]
    statuses = sorted(r["status"] for r in res["rows2"])
    assert statuses == ["skipped"] + ["success"] * len(SHAPES)  # the bias rides along as a skipped row
    for a, b in zip(res["rows2"], res["rows1"]):
        assert a == b  # same numbers bit for bit: each layer is computed the same way, one BLAS thread


def test_no_fork_from_a_multithreaded_process_or_for_in_memory_sources(tmp_path):
    path = _write(tmp_path)
    opts = make_options()
    stop = threading.Event()
    helper = threading.Thread(target=stop.wait)  # any other live thread makes fork unsafe
    helper.start()
    try:
        with open_checkpoint(str(path)) as ck:
            plans = plan_layers(ck, opts)
            assert _can_fork(ck, plans, opts) is False
            rows = analyze_layers(ck, plans, opts, workers=2, threads=2)
    finally:
        stop.set()
        helper.join()
    assert sum(r["status"] == "success" for r in rows) == len(SHAPES)
    with open_checkpoint({k: np.ones(s, np.float32) for k, s in SHAPES.items()}) as mem:
        assert _can_fork(mem, plan_layers(mem, opts), opts) is False
