"""The demo zoos: small models trained on CPU with known clean test accuracy, cached, bit-for-bit reproducible.

Three kinds (KINDS): "mlp", MLPs on scikit-learn's digits (pipelines/proof/zoo_mlp.py, the default),
"transformer", small transformer encoders on a synthetic sequence task (pipelines/proof/zoo_tfm.py), and
"conv", small conv nets on a synthetic image task (pipelines/proof/zoo_cnn.py). Each
model is a Hugging Face model folder (model.safetensors, config.json, README.md with YAML front matter,
zoo_meta.json); the zoo folder also holds truth.csv (one row per model: its sweep, factors, optimiser
steps - 0 for a randomly initialised model - and clean test accuracy) and manifest.json (the kind, the
grid and its hash).

Caching: a complete model folder of the same kind, version and fixed hyperparameters is reused, never
retrained; each folder is written to a temp name and renamed, so a folder that exists is complete.

Reproducibility: every model is trained in a spawned process whose compute is pinned before torch is
imported (PINNED_ENV): ATen's portable kernels instead of the host's widest vector unit (AVX2 and
AVX-512 kernels sum in different orders: measured here, every MLP of the zoo trains to other weights
under ATEN_CPU_CAPABILITY=avx2 than under avx512, and the label-noise models' test accuracies move by up
to 0.10 - which is why an earlier README table, made on an AVX2 host, did not reproduce here), MKL's
conditional bit-wise reproducibility in its SSE2-compatible mode, one thread, and fixed seeds for the
data split (sklearn random_state), the label noise, the initialisation and the batch order; PyTorch's
deterministic-algorithms switch is on. `zoo_fingerprint` hashes the weights and the truth file: two
builds of one grid on this machine give the same fingerprint (tests/proof/test_proof_zoo.py).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType

from . import zoo_cnn, zoo_mlp, zoo_tfm
from .zoo_spec import ZooError

__all__ = ["KINDS", "ZooError", "ZooResult", "build_zoo", "get_kind", "weights_digest", "zoo_fingerprint",
           "zoo_is_complete"]

DEFAULT_KIND = "mlp"
KINDS: dict[str, ModuleType] = {zoo_mlp.KIND: zoo_mlp, zoo_tfm.KIND: zoo_tfm, zoo_cnn.KIND: zoo_cnn}
MODEL_FILES = ("model.safetensors", "config.json", "README.md", "zoo_meta.json")

# The environment of every training process, set before it imports torch (see the module docstring).
PINNED_ENV = {
    "ATEN_CPU_CAPABILITY": "default",
    "MKL_CBWR": "COMPATIBLE",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
}


def get_kind(name: str) -> ModuleType:
    """The zoo kind module called `name` (KINDS); ZooError listing the kinds otherwise."""
    try:
        return KINDS[name]
    except KeyError:
        raise ZooError(f"unknown zoo kind {name!r}; choose one of: {', '.join(KINDS)}") from None


def _pinned_torch() -> dict:
    """Pin this process's compute (PINNED_ENV, one thread, deterministic algorithms) and say what it runs.

    Must run before torch is imported in this process: pipelines/proof/zoo.py calls it first thing in each
    spawned training process. Raises ZooError when torch was imported with other kernels.
    """
    if "torch" not in sys.modules:
        os.environ.update(PINNED_ENV)
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    if capability != "DEFAULT" or os.environ.get("MKL_CBWR") != PINNED_ENV["MKL_CBWR"]:
        raise ZooError(f"a training process imported torch before its kernels were pinned ({capability}); "
                       "build zoos with `ww-spectral zoo build` or pipelines.proof.zoo.build_zoo")
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    return {"torch": torch.__version__, "aten_cpu_capability": capability, "mkl_cbwr": PINNED_ENV["MKL_CBWR"],
            "threads": torch.get_num_threads()}


def _train_and_write(job: tuple) -> dict:
    """One job of a spawned training process: pin, train, write the model folder; returns its meta."""
    kind_name, spec, root = job
    compute = _pinned_torch()
    kind = get_kind(kind_name)
    state, meta = kind.train(spec)
    meta = {**meta, "kind": kind_name, "zoo_version": kind.ZOO_VERSION, "compute": compute}
    write_model_folder(Path(root), kind, state, meta)
    return meta


def _card(kind: ModuleType, meta: dict) -> str:
    """README.md: YAML front matter (hub-style model card metadata) plus a short description."""
    fields, description = kind.card_lines(meta)
    task, dataset = kind.TASK, kind.DATASET_TAG
    return "\n".join([
        "---", "library_name: pytorch", "tags:", "- ww-spectral-zoo", f"- {task}", "datasets:", f"- {dataset}",
        "model-index:", f"- name: {meta['repo_id']}", "  results:", "  - task:", f"      type: {task}",
        "    dataset:", f"      name: {meta['dataset']} (clean test set)", f"      type: {dataset}",
        "    metrics:", "    - type: accuracy", f"      value: {meta['test_accuracy']}", "ww_zoo:", *fields,
        "---", "", f"# {meta['repo_id']}", "", description,
        f"Clean test accuracy: **{meta['test_accuracy']:.4f}** on {meta['n_test']} held-out examples.", "",
    ])


def write_model_folder(root: Path, kind: ModuleType, state: dict, meta: dict) -> Path:
    """Write one HF model folder atomically: files go to a hidden temp dir, renamed when complete."""
    from safetensors.numpy import save_file

    final = root / meta["repo_id"]
    tmp = root / f".tmp-{meta['repo_id']}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file(state, str(tmp / "model.safetensors"),
              metadata={"format": "pt", "ww_zoo_kind": meta["kind"], "ww_zoo_version": str(meta["zoo_version"])})
    (tmp / "config.json").write_text(json.dumps(kind.config(meta), indent=2) + "\n")
    (tmp / "zoo_meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    (tmp / "README.md").write_text(_card(kind, meta))
    if final.exists():  # an incomplete or stale folder (another version): replace it
        shutil.rmtree(final)
    os.rename(tmp, final)
    return final


def read_meta(folder: Path, kind: ModuleType) -> dict | None:
    """The folder's zoo_meta.json when the folder is complete and of this kind and version, else None."""
    if not all((folder / f).is_file() for f in MODEL_FILES):
        return None
    try:
        meta = json.loads((folder / "zoo_meta.json").read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(meta, dict) and meta.get("kind") == kind.KIND and meta.get("zoo_version") == kind.ZOO_VERSION
    return meta if ok else None


def _stored(root: Path, kind: ModuleType, spec) -> dict | None:
    """The stored meta of `spec` when its folder holds exactly this model, else None (to train)."""
    meta = read_meta(root / spec.name, kind)
    return meta if meta is not None and spec.matches(meta) else None


@dataclass(frozen=True)
class ZooResult:
    """What build_zoo did: folder, kind, models trained now, models reused, truth file, seconds."""

    root: str
    kind: str
    trained: int
    reused: int
    truth_path: str
    seconds: float


def build_zoo(root: str | os.PathLike, *, grid=None, kind: str = DEFAULT_KIND, workers: int = 2,
              log: Callable[[str], None] | None = None) -> ZooResult:
    """Train every model of `grid` missing under `root`; write truth.csv and manifest.json.

    grid: a grid of any kind (zoo_mlp.MlpGrid, zoo_tfm.TfmGrid); None = the DEFAULT_GRID of `kind`.
    workers: training processes (spawned, each pinned to one thread: see the module docstring); the
    models come out bit-for-bit the same whatever the number of workers.
    A complete model folder of this kind, version and hyperparameters is reused, never retrained;
    truth.csv and manifest.json are rewritten only when their content changes.
    """
    t0 = time.perf_counter()
    grid = get_kind(kind).DEFAULT_GRID if grid is None else grid
    kind_mod = get_kind(grid.kind)
    root_p = Path(root)
    if root_p.exists() and not root_p.is_dir():
        raise ZooError(f"zoo path {root_p} is a file; pass a folder (it is created if missing)")
    root_p.mkdir(parents=True, exist_ok=True)
    for stale in root_p.glob(".tmp-*"):  # left by an interrupted build; never a complete model
        shutil.rmtree(stale, ignore_errors=True)
    specs = grid.specs()
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ZooError("the grid yields duplicate model names; give each sweep distinct values")
    metas = {s.name: m for s in specs if (m := _stored(root_p, kind_mod, s)) is not None}
    todo = [s for s in specs if s.name not in metas]
    reused = len(metas)
    if todo:
        _train(todo, root_p, kind_mod, workers=workers, log=log, reused=reused, metas=metas)
    truth_path = root_p / "truth.csv"
    _write_if_changed(truth_path, _truth_csv(kind_mod, [metas[n] for n in names]))
    manifest = {"kind": kind_mod.KIND, "grid_hash": grid.grid_hash(), "zoo_version": kind_mod.ZOO_VERSION,
                "grid": asdict(grid), "pinned_env": PINNED_ENV, "models": names}
    _write_if_changed(root_p / "manifest.json", json.dumps(manifest, indent=2, default=list) + "\n")
    return ZooResult(root=str(root_p), kind=kind_mod.KIND, trained=len(todo), reused=reused,
                     truth_path=str(truth_path), seconds=time.perf_counter() - t0)


def _train(todo: list, root: Path, kind: ModuleType, *, workers: int, log, reused: int, metas: dict) -> None:
    """Train `todo` in `workers` spawned processes (never in this one: its torch may not be pinned)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    n = max(1, min(workers, len(todo)))
    if log:
        log(f"zoo: training {len(todo)} {kind.KIND} models ({reused} already built) with {n} process(es) ...")
    jobs = [(kind.KIND, spec, str(root)) for spec in todo]
    # spawn: a fresh interpreter per worker, so torch is imported after the kernels are pinned.
    with ProcessPoolExecutor(max_workers=n, mp_context=mp.get_context("spawn")) as pool:
        for i, meta in enumerate(pool.map(_train_and_write, jobs), 1):
            metas[meta["repo_id"]] = meta
            if log:
                log(f"zoo: {i}/{len(jobs)} {meta['repo_id']}: test accuracy {meta['test_accuracy']:.4f}")


def zoo_is_complete(root: str | os.PathLike, *, grid=None, kind: str = DEFAULT_KIND) -> bool:
    """True when the manifest matches `grid` and every model folder is complete (nothing to train)."""
    grid = get_kind(kind).DEFAULT_GRID if grid is None else grid
    kind_mod = get_kind(grid.kind)
    root_p = Path(root)
    try:
        manifest = json.loads((root_p / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(manifest, dict) or manifest.get("grid_hash") != grid.grid_hash() \
            or not (root_p / "truth.csv").is_file():
        return False
    return all(_stored(root_p, kind_mod, s) is not None for s in grid.specs())


def weights_digest(path: str | os.PathLike) -> bytes:
    """sha256 of a safetensors file's tensors: names, dtypes, shapes and bytes, in name order. Not of the
    file: safetensors writes its metadata map in a random order, so equal weights can differ as files."""
    from safetensors import safe_open

    h = hashlib.sha256()
    with safe_open(str(path), framework="numpy") as f:
        for name in sorted(f.keys()):
            t = f.get_tensor(name)
            h.update(f"{name}\0{t.dtype.str}\0{t.shape}\0".encode())
            h.update(t.tobytes())
    return h.digest()


def zoo_fingerprint(root: str | os.PathLike) -> str:
    """sha256 (16 hex) over the truth file and every listed model's weights (weights_digest), in manifest
    order: equal fingerprints mean bit-for-bit the same zoo (timings in zoo_meta.json are left out)."""
    root_p = Path(root)
    try:
        names = json.loads((root_p / "manifest.json").read_text())["models"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ZooError(f"{root_p} has no readable manifest.json ({type(exc).__name__}); build the zoo first "
                       "(`ww-spectral zoo build`)") from None
    h = hashlib.sha256((root_p / "truth.csv").read_bytes())
    for name in names:
        h.update(name.encode() + b"\0")
        h.update(weights_digest(root_p / name / "model.safetensors"))
    return h.hexdigest()[:16]


def _truth_csv(kind: ModuleType, metas: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(kind.TRUTH_COLUMNS)
    for m in metas:
        writer.writerow([m[c] for c in kind.TRUTH_COLUMNS])
    return buf.getvalue()


def _write_if_changed(path: Path, text: str) -> None:
    if path.is_file() and path.read_text() == text:
        return
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
