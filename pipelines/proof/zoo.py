"""A reproducible demo zoo: small MLPs trained on CPU with known clean test accuracy.

Each model is a Hugging Face model folder (model.safetensors, config.json, README.md with YAML front
matter, zoo_meta.json); the zoo folder also holds truth.csv (one row per model) and manifest.json (the
grid and its hash). Data: scikit-learn's bundled 8x8 digits (no download), one fixed stratified split
(70 % train / 30 % test); the test labels are never corrupted, so `test_accuracy` is the clean accuracy.

The grid follows the one-factor-at-a-time sweeps of Martin & Mahoney (Nat. Commun. 2021) and the
"implicit self-regularisation" papers: factors known to move alpha are label noise in the training set,
batch size, and training length. Every sweep varies one factor around the same base point; each sweep
gets its own seeds, so no two models in the zoo share weights.

GRID FIXED 2026-11-25 14:05 UTC, BEFORE ANY MODEL WAS TRAINED OR ANY METRIC WAS LOOKED AT.
Do not change DEFAULT_GRID to make the validation look better; a changed grid is a new experiment.

Cost: about 85 k SGD steps in total (a 64-512-512-256-10 MLP), about 400 CPU-seconds: roughly 3.5 min
with 2 workers on an idle 2-core machine (measured: 819 s wall on a shared 2-core box at load average 7-8,
where the build got under half a core). Reruns with the same grid train nothing (complete model folders are skipped; each folder is written to a temp
name and renamed, so a folder that exists is complete).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ww_spectral.errors import WWSpectralError

ZOO_VERSION = 2  # bump when the files or numbers change: folders of another version are retrained
MODEL_TYPE = "ww-zoo-mlp"
TRUTH_COLUMNS = ("repo_id", "sweep", "label_noise", "batch_size", "epochs", "seed", "test_accuracy")
MODEL_FILES = ("model.safetensors", "config.json", "README.md", "zoo_meta.json")


class ZooError(WWSpectralError):
    """The zoo folder or grid is unusable (e.g. a file where a folder should be, an invalid grid)."""


@dataclass(frozen=True)
class Sweep:
    """One factor varied around the base point.

    name: sweep label in truth.csv ("label_noise" | "batch_size" | "epochs" or any label).
    factor: which ModelSpec field varies: "label_noise" | "batch_size" | "epochs".
    values: the values of that factor, in order.
    """

    name: str
    factor: str
    values: tuple


@dataclass(frozen=True)
class ZooGrid:
    """The whole experiment: architecture, optimiser, base point, sweeps, seeds.

    hidden_sizes: widths of the hidden layers (the input is 64 pixels, the output 10 classes).
    lr, momentum: plain SGD with momentum; fixed for every model (the sweeps vary other factors).
    base_*: the value of each factor when another factor is swept.
    seeds: per-sweep seed offsets; sweep i uses seed 1000 * (i + 1) + s for s in seeds.
    """

    hidden_sizes: tuple[int, ...] = (512, 512, 256)
    lr: float = 0.02
    momentum: float = 0.9
    base_label_noise: float = 0.0
    base_batch_size: int = 32
    base_epochs: int = 40
    sweeps: tuple[Sweep, ...] = (
        Sweep("label_noise", "label_noise", (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)),
        Sweep("batch_size", "batch_size", (8, 16, 32, 64, 128, 256)),
        Sweep("epochs", "epochs", (1, 3, 10, 20, 40, 80)),
    )
    seeds: tuple[int, ...] = (0, 1, 2)
    test_fraction: float = 0.3
    split_seed: int = 0

    def grid_hash(self) -> str:
        """16 hex chars over the grid and ZOO_VERSION: the manifest's identity."""
        blob = json.dumps({"grid": asdict(self), "version": ZOO_VERSION}, sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def specs(self) -> list[ModelSpec]:
        """Every model of the grid, in a fixed order (sweep, value, seed)."""
        out: list[ModelSpec] = []
        for i, sweep in enumerate(self.sweeps):
            if sweep.factor not in ("label_noise", "batch_size", "epochs"):
                raise ZooError(f"sweep {sweep.name!r}: factor {sweep.factor!r} is not one of "
                               "label_noise, batch_size, epochs")
            for value in sweep.values:
                for s in self.seeds:
                    params = {
                        "label_noise": float(self.base_label_noise),
                        "batch_size": int(self.base_batch_size),
                        "epochs": int(self.base_epochs),
                    }
                    params[sweep.factor] = type(params[sweep.factor])(value)
                    out.append(ModelSpec(sweep=sweep.name, seed=1000 * (i + 1) + int(s),
                                         hidden_sizes=tuple(self.hidden_sizes), lr=self.lr,
                                         momentum=self.momentum, **params))
        return out


# The demo zoo: 3 sweeps x 6 values x 3 seeds = 54 models. See the module docstring: fixed in advance.
DEFAULT_GRID = ZooGrid()

# A seconds-long grid for tests (narrow layers are fine there: it checks files, not science).
TINY_GRID = ZooGrid(
    hidden_sizes=(32, 16),
    base_epochs=1,
    base_batch_size=64,
    sweeps=(Sweep("label_noise", "label_noise", (0.0, 0.5)), Sweep("epochs", "epochs", (1, 2))),
    seeds=(0,),
)


@dataclass(frozen=True)
class ModelSpec:
    """One model to train; `name` is its folder name and repo_id."""

    sweep: str
    label_noise: float
    batch_size: int
    epochs: int
    seed: int
    hidden_sizes: tuple[int, ...] = field(default=(512, 512, 256))
    lr: float = 0.02
    momentum: float = 0.9

    @property
    def name(self) -> str:
        return (f"mlp-{self.sweep.replace('_', '')}-noise{self.label_noise:.2f}-bs{self.batch_size}"
                f"-ep{self.epochs}-s{self.seed}")


def _load_digits(test_fraction: float, split_seed: int):
    """Standardised digits: (x_train, y_train, x_test, y_test) as float32 / int64 numpy arrays."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=split_seed,
                                              stratify=y)
    mean = x_tr.mean(axis=0)
    std = x_tr.std(axis=0)
    std[std == 0] = 1.0  # constant border pixels
    return (((x_tr - mean) / std).astype(np.float32), y_tr.astype(np.int64),
            ((x_te - mean) / std).astype(np.float32), y_te.astype(np.int64))


def _noisy_labels(y, fraction: float, seed: int, n_classes: int = 10):
    """Replace a `fraction` of labels by a different class chosen uniformly (seeded)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y = y.copy()
    n_flip = int(round(fraction * len(y)))
    idx = rng.choice(len(y), size=n_flip, replace=False)
    y[idx] = (y[idx] + rng.integers(1, n_classes, size=n_flip)) % n_classes  # never the true class
    return y, n_flip


def train_one(spec: ModelSpec, *, test_fraction: float = 0.3, split_seed: int = 0) -> tuple[dict, dict]:
    """Train one MLP; returns (state_dict of float32 numpy arrays, metadata dict).

    Tensor names: "mlp.fc{i}.weight" (out x in) / "mlp.fc{i}.bias", i = 1..depth (the last is the 10-way
    output layer), so checkpoint (alphabetical) order is depth order.
    Deterministic for a given spec on one machine (seeded init, shuffling and noise; one thread).
    """
    import numpy as np
    import torch

    torch.set_num_threads(1)  # tiny matmuls: one thread is fastest and keeps 2-core hosts usable
    x_tr, y_tr, x_te, y_te = _load_digits(test_fraction, split_seed)
    y_noisy, n_flip = _noisy_labels(y_tr, spec.label_noise, seed=spec.seed)

    torch.manual_seed(spec.seed)
    sizes = (x_tr.shape[1], *spec.hidden_sizes)
    layers: list[torch.nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    layers.append(torch.nn.Linear(sizes[-1], 10))
    net = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(net.parameters(), lr=spec.lr, momentum=spec.momentum)
    loss_fn = torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_noisy)
    gen = torch.Generator().manual_seed(spec.seed)
    t0 = time.perf_counter()
    steps = 0
    last_loss = float("nan")
    for _ in range(spec.epochs):
        perm = torch.randperm(len(xt), generator=gen)
        for start in range(0, len(xt), spec.batch_size):
            idx = perm[start:start + spec.batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            steps += 1
        last_loss = float(loss.detach())
    net.eval()
    with torch.no_grad():
        test_acc = float((net(torch.from_numpy(x_te)).argmax(1).numpy() == y_te).mean())
        train_pred = net(xt).argmax(1).numpy()
    meta = {
        "repo_id": spec.name,
        **{k: v for k, v in asdict(spec).items() if k != "hidden_sizes"},
        "hidden_sizes": list(spec.hidden_sizes),
        "test_accuracy": round(test_acc, 6),
        "train_accuracy_noisy_labels": round(float((train_pred == y_noisy).mean()), 6),
        "train_accuracy_clean_labels": round(float((train_pred == y_tr).mean()), 6),
        "n_train": int(len(y_tr)),
        "n_test": int(len(y_te)),
        "n_labels_flipped": int(n_flip),
        "final_batch_loss": last_loss,
        "sgd_steps": steps,
        "train_seconds": round(time.perf_counter() - t0, 3),
        "dataset": "sklearn.datasets.load_digits (8x8 digits, 1797 images)",
        "zoo_version": ZOO_VERSION,
    }
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    state: dict[str, np.ndarray] = {}
    for i, lin in enumerate(linears):
        prefix = f"mlp.fc{i + 1}"
        state[f"{prefix}.weight"] = lin.weight.detach().numpy().astype(np.float32).copy()
        state[f"{prefix}.bias"] = lin.bias.detach().numpy().astype(np.float32).copy()
    return state, meta


def _card(meta: dict) -> str:
    """README.md: YAML front matter (hub-style model card metadata) plus a short description."""
    lines = [
        "---",
        "library_name: pytorch",
        "tags:",
        "- ww-spectral-zoo",
        "- image-classification",
        "datasets:",
        "- sklearn-digits",
        "model-index:",
        f"- name: {meta['repo_id']}",
        "  results:",
        "  - task:",
        "      type: image-classification",
        "    dataset:",
        "      name: sklearn digits (clean 30% test split)",
        "      type: sklearn-digits",
        "    metrics:",
        "    - type: accuracy",
        f"      value: {meta['test_accuracy']}",
        "ww_zoo:",
    ]
    for key in ("sweep", "label_noise", "batch_size", "epochs", "seed", "lr", "momentum", "test_accuracy"):
        lines.append(f"  {key}: {meta[key]}")
    lines.append(f"  hidden_sizes: [{', '.join(str(h) for h in meta['hidden_sizes'])}]")
    lines += [
        "---",
        "",
        f"# {meta['repo_id']}",
        "",
        "A small MLP from the ww-spectral demo zoo (`ww-spectral zoo build`), trained with SGD on",
        f"scikit-learn's digits with {meta['label_noise']:.0%} of the training labels flipped, batch size",
        f"{meta['batch_size']}, {meta['epochs']} epochs, seed {meta['seed']}.",
        f"Clean test accuracy: **{meta['test_accuracy']:.4f}** on {meta['n_test']} held-out images.",
        "",
    ]
    return "\n".join(lines)


def _config(meta: dict) -> dict:
    return {
        "model_type": MODEL_TYPE,
        "architectures": ["WWZooMLP"],
        "input_size": 64,
        "hidden_sizes": meta["hidden_sizes"],
        "num_labels": 10,
        "hidden_act": "relu",
        "torch_dtype": "float32",
        "ww_zoo_version": ZOO_VERSION,
    }


def write_model_folder(root: Path, state: dict, meta: dict) -> Path:
    """Write one HF model folder atomically: files go to a hidden temp dir, renamed when complete."""
    from safetensors.numpy import save_file

    final = root / meta["repo_id"]
    tmp = root / f".tmp-{meta['repo_id']}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file(state, str(tmp / "model.safetensors"),
              metadata={"format": "pt", "ww_zoo_version": str(ZOO_VERSION)})
    (tmp / "config.json").write_text(json.dumps(_config(meta), indent=2) + "\n")
    (tmp / "zoo_meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    (tmp / "README.md").write_text(_card(meta))
    if final.exists():  # an incomplete or stale folder (another version): replace it
        shutil.rmtree(final)
    os.rename(tmp, final)
    return final


def read_meta(folder: Path) -> dict | None:
    """The folder's zoo_meta.json when the folder is complete and of this ZOO_VERSION, else None."""
    if not all((folder / f).is_file() for f in MODEL_FILES):
        return None
    try:
        meta = json.loads((folder / "zoo_meta.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if meta.get("zoo_version") == ZOO_VERSION else None


def _train_and_write(args: tuple) -> dict:
    spec, root, test_fraction, split_seed = args
    state, meta = train_one(spec, test_fraction=test_fraction, split_seed=split_seed)
    write_model_folder(Path(root), state, meta)
    return meta


@dataclass(frozen=True)
class ZooResult:
    """What build_zoo did: folder, models trained now, models reused, truth file, seconds."""

    root: str
    trained: int
    reused: int
    truth_path: str
    seconds: float


def build_zoo(root: str | os.PathLike, *, grid: ZooGrid = DEFAULT_GRID, workers: int = 2,
              log: Callable[[str], None] | None = None) -> ZooResult:
    """Train every model of `grid` missing under `root`; write truth.csv and manifest.json.

    workers: processes training in parallel (spawned; each uses one torch thread). 1 trains in-process.
    A model folder that exists with all its files and this ZOO_VERSION is reused, never retrained;
    truth.csv and manifest.json are rewritten only when their content changes.
    """
    t0 = time.perf_counter()
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
    metas: dict[str, dict] = {}
    todo: list[ModelSpec] = []
    for spec in specs:
        meta = read_meta(root_p / spec.name)
        if meta is None or not _matches(meta, spec):
            todo.append(spec)
        else:
            metas[spec.name] = meta
    reused = len(metas)
    if todo and log:
        log(f"zoo: training {len(todo)} models ({reused} already built) with {workers} worker(s) ...")
    jobs = [(spec, str(root_p), grid.test_fraction, grid.split_seed) for spec in todo]
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            meta = _train_and_write(job)
            metas[meta["repo_id"]] = meta
    elif jobs:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        # spawn: torch must not be forked with live thread pools; children import only this module.
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            for meta in pool.map(_train_and_write, jobs):
                metas[meta["repo_id"]] = meta
                if log:
                    log(f"  {meta['repo_id']}: test accuracy {meta['test_accuracy']:.4f}")
    truth_path = root_p / "truth.csv"
    _write_if_changed(truth_path, _truth_csv([metas[n] for n in names]))
    manifest = {"grid_hash": grid.grid_hash(), "zoo_version": ZOO_VERSION, "grid": asdict(grid),
                "models": names}
    _write_if_changed(root_p / "manifest.json", json.dumps(manifest, indent=2, default=list) + "\n")
    return ZooResult(root=str(root_p), trained=len(todo), reused=reused, truth_path=str(truth_path),
                     seconds=time.perf_counter() - t0)


def zoo_is_complete(root: str | os.PathLike, *, grid: ZooGrid = DEFAULT_GRID) -> bool:
    """True when the manifest matches `grid` and every model folder is complete (nothing to train)."""
    root_p = Path(root)
    try:
        manifest = json.loads((root_p / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("grid_hash") != grid.grid_hash() or not (root_p / "truth.csv").is_file():
        return False
    return all(_matches(read_meta(root_p / s.name), s) for s in grid.specs())


def _matches(meta: dict | None, spec: ModelSpec) -> bool:
    """A stored model is this spec: the folder name fixes the swept factors and the seed; check the rest."""
    return meta is not None and meta.get("hidden_sizes") == list(spec.hidden_sizes) \
        and meta.get("lr") == spec.lr and meta.get("momentum") == spec.momentum


def _truth_csv(metas: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(TRUTH_COLUMNS)
    for m in metas:
        writer.writerow([m[c] for c in TRUTH_COLUMNS])
    return buf.getvalue()


def _write_if_changed(path: Path, text: str) -> None:
    if path.is_file() and path.read_text() == text:
        return
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)

