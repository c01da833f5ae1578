"""The analysis: checkpoint -> layer plans -> ESDs -> power-law fits + metrics -> one row per tensor.

Public API (CONTRACTS.md):
    analyze(source, **options) -> DataFrame            analysed + failed layers, columns LAYER_COLUMN_NAMES
    describe(source, **options) -> DataFrame           the plans, no eigenvalues
    analyze_model(source, *, include_skipped=True, progress=False, **options) -> ModelAnalysis
    summarize(layers) -> dict                          WW get_summary() means + robust aggregates
    plan_layers(checkpoint, options) -> list[LayerPlan]
    analyze_layers(checkpoint, plans, options, *, workers=None, threads=None, progress=False) -> list[dict]

Options (keyword arguments): the fields of records.AnalysisOptions (fix_fingers, backend, precision,
device, min_evals, max_evals, max_N, ww_compat_conv_nm), plus where-it-runs settings that never change
numbers: workers (layers analysed at once), threads (cores to use; default: all this process may use);
and for hub/cache sources: revision, token, endpoint, cache_dir (passed to open_checkpoint).

One bad layer never stops a model: NaN/Inf weights, all-zero matrices, unreadable tensors and
unsupported dtypes become rows with status 'failed' / 'skipped', a fit_status code and a reason.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .columns import LAYER_COLUMN_NAMES, LAYER_COLUMNS
from .errors import OptionError, UnsupportedDtypeError, WWSpectralError
from .fit import fit_power_law, hill_alpha
from .layers import eigenvalue_scale, layer_matrices, plan_layer
from .metrics import layer_metrics
from .records import AnalysisOptions, CheckpointRef, LayerPlan
from .spectrum import NonFiniteSpectrumError, layer_spectrum, noise_floor
from .summary import summarize

log = logging.getLogger("ww_spectral")

_OPTION_FIELDS = tuple(f.name for f in dataclasses.fields(AnalysisOptions))
_RUN_FIELDS = ("workers", "threads")
_OPEN_FIELDS = ("revision", "token", "endpoint", "cache_dir")  # passed to open_checkpoint
_INT_COLUMNS = tuple(c.name for c in LAYER_COLUMNS if c.kind == "int")
_FLOAT_COLUMNS = tuple(c.name for c in LAYER_COLUMNS if c.kind == "float")
_STR_COLUMNS = tuple(c.name for c in LAYER_COLUMNS if c.kind == "str")
DESCRIBE_COLUMNS = ("layer_id", "tensor_name", "longname", "layer_type", "shape", "dtype", "N", "M", "Q",
                    "rf", "num_evals", "analysed", "skip_reason", "skip_detail", "est_bytes")

__all__ = ["ModelAnalysis", "analyze", "analyze_layers", "analyze_model", "describe", "make_options",
           "plan_layers", "summarize", "DESCRIBE_COLUMNS"]


@dataclass(frozen=True, eq=False)
class ModelAnalysis:
    """One model's analysis: where it came from, with which options, every tensor's row, the summary.

    layers: DataFrame with columns LAYER_COLUMN_NAMES (skipped tensors included unless asked not to);
    summary: summarize(layers); seconds: wall time of the analysis.
    """

    ref: CheckpointRef
    options: AnalysisOptions
    layers: pd.DataFrame
    summary: dict
    seconds: float


# ---------------------------------------------------------------- options and resources


def make_options(options: AnalysisOptions | Mapping[str, Any] | None = None, **kwargs: Any) -> AnalysisOptions:
    """AnalysisOptions from an instance, a mapping and/or keyword arguments (unknown names -> OptionError)."""
    base = dataclasses.asdict(options) if isinstance(options, AnalysisOptions) else dict(options or {})
    base.update(kwargs)
    unknown = sorted(set(base) - set(_OPTION_FIELDS))
    if unknown:
        raise OptionError(f"unknown analysis option(s) {unknown}; allowed: "
                          f"{list(_OPTION_FIELDS + _RUN_FIELDS + _OPEN_FIELDS)}")
    return AnalysisOptions(**base)


def _split_options(kwargs: dict[str, Any]) -> tuple[AnalysisOptions, dict[str, Any], dict[str, Any]]:
    run = {k: kwargs.pop(k) for k in _RUN_FIELDS if k in kwargs}
    opening = {k: kwargs.pop(k) for k in _OPEN_FIELDS if k in kwargs and kwargs[k] is not None}
    for k in _OPEN_FIELDS:
        kwargs.pop(k, None)
    return make_options(**kwargs), run, opening


def available_cores() -> int:
    """Cores this process is given: its CPU affinity, capped by OMP_NUM_THREADS when set (Ray sets it
    to a task's num_cpus, so k tasks on one node never oversubscribe it)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if omp.isdigit() and int(omp) > 0:
        n = min(n, int(omp))
    return max(1, n)


@contextmanager
def _blas_threads(n: int, use_torch: bool):
    """Every BLAS/OpenMP pool in the process (numpy's, scipy's, torch's) limited to n threads."""
    from threadpoolctl import threadpool_limits

    torch_prev = None
    if use_torch:
        import torch

        torch_prev = torch.get_num_threads()
        torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        if torch_prev is not None:
            import torch

            torch.set_num_threads(torch_prev)


def _resolve_workers(plans: list[LayerPlan], workers: int | None, threads: int) -> int:
    todo = [p for p in plans if p.analysed]
    if workers is not None:
        if workers < 1:
            raise OptionError(f"workers={workers}: need at least 1")
        return max(1, min(workers, threads, len(todo) or 1))
    # One single-threaded BLAS per worker, one worker per core. Measured here (2 cores, 4 x 2048^2 f32):
    # 2 workers x 1 BLAS thread 7 s; 1 worker x 2 BLAS threads 61-84 s on a shared, busy machine
    # (multithreaded BLAS/LAPACK spin-waits when a core is taken). Spare cores go to BLAS.
    return max(1, min(threads, len(todo) or 1))


# ---------------------------------------------------------------- sources


def _is_checkpoint(obj: Any) -> bool:
    return callable(getattr(obj, "tensors", None)) and callable(getattr(obj, "read", None))


@contextmanager
def _opened(source: Any, **open_kwargs: Any):
    """Yield a Checkpoint for any SOURCE; closes what it opened (not a checkpoint passed in).
    open_kwargs (revision, token, endpoint, cache_dir) go to open_checkpoint."""
    if _is_checkpoint(source):
        yield source
        return
    from .checkpoint import open_checkpoint

    ckpt = open_checkpoint(source, **open_kwargs)
    try:
        yield ckpt
    finally:
        close = getattr(ckpt, "close", None)
        if callable(close):
            close()


# ---------------------------------------------------------------- rows


def _empty_row(plan: LayerPlan) -> dict:
    row: dict[str, Any] = {c: math.nan for c in _FLOAT_COLUMNS}
    row.update({c: None for c in _INT_COLUMNS})
    row.update({c: "" for c in _STR_COLUMNS})
    row.update(
        layer_id=plan.layer_id, tensor_name=plan.tensor_name, longname=plan.longname,
        layer_type=plan.layer_type, shape="x".join(str(s) for s in plan.shape), dtype=plan.dtype,
        N=plan.N, M=plan.M, Q=plan.Q, rf=plan.rf, num_evals=plan.num_evals,
        num_pl_spikes=0, num_fingers=0,
    )
    return row


def _skipped_row(plan: LayerPlan, code: str | None = None, detail: str | None = None) -> dict:
    row = _empty_row(plan)
    row.update(status="skipped", fit_status=code or plan.skip_reason or "skipped",
               skip_reason=detail if detail is not None else plan.skip_detail)
    return row


def _failed_row(plan: LayerPlan, code: str, detail: str) -> dict:
    row = _empty_row(plan)
    row.update(status="failed", fit_status=code, skip_reason=detail)
    return row


def _analyse_array(plan: LayerPlan, array: np.ndarray, options: AnalysisOptions) -> dict:
    """One layer's row from its tensor data (already read in the compute dtype)."""
    mats = layer_matrices(plan, array)
    try:
        slices = layer_spectrum(mats, scale=eigenvalue_scale(plan), backend=options.backend,
                                precision=options.precision, device=options.device)
    except NonFiniteSpectrumError:
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            return _failed_row(plan, "nonfinite", f"{bad} NaN/Inf weight(s); the ESD is undefined")
        return _failed_row(plan, "nonfinite", f"W^T W overflows in {options.precision}; "
                                              "use precision='float64'")
    evals = np.sort(np.concatenate(slices))
    row = _empty_row(plan)
    if not evals.size or not evals[-1] > 0:
        row.update(layer_metrics(slices, N=plan.N, alpha=math.nan, precision=options.precision))
        row.update(status="failed", fit_status="all_zero", skip_reason="all weights are zero; no spectrum")
        return row
    if options.precision == "float32":
        # Round-off of float32 Gram + eigensolve (~1e-6 lambda_max) is not spectrum: an exactly
        # rank-deficient layer must not fit noise where WW (float64 SVD) sees zeros it drops.
        floor = noise_floor(float(evals[-1]), max(e.size for e in slices), "float32")
        evals = np.where(evals > floor, evals, 0.0)
    fit = fit_power_law(evals, fix_fingers=options.fix_fingers)
    row.update(layer_metrics(slices, N=plan.N, alpha=fit.alpha, precision=options.precision))
    row.update(
        alpha=fit.alpha, D=fit.D, sigma=fit.sigma, xmin=fit.xmin, xmax=fit.xmax,
        num_pl_spikes=fit.num_pl_spikes, num_fingers=fit.num_fingers, raw_alpha=fit.raw_alpha,
        status=fit.status, warning=fit.warning, fit_status=fit.fit_status,
        skip_reason=fit.detail if fit.status != "success" else "",
        hill_alpha=hill_alpha(evals),
    )
    return row


def _analyse_one(checkpoint: Any, plan: LayerPlan, options: AnalysisOptions, read_lock: threading.Lock) -> dict:
    if not plan.analysed:
        return _skipped_row(plan)
    dtype = np.float64 if options.precision == "float64" else np.float32
    try:
        with read_lock:  # one tensor read at a time: bounded memory, no contention on the file
            array = checkpoint.read(plan.tensor_name, dtype=dtype)
    except UnsupportedDtypeError as exc:
        return _skipped_row(plan, "unsupported_dtype", str(exc))
    except WWSpectralError as exc:
        return _failed_row(plan, "read_error", f"{type(exc).__name__}: {exc}")
    try:
        return _analyse_array(plan, array, options)
    except MemoryError:
        raise
    except Exception as exc:  # one bad layer never stops a model
        log.warning("layer %s failed: %s: %s", plan.tensor_name, type(exc).__name__, exc)
        return _failed_row(plan, "error", f"{type(exc).__name__}: {exc}")


def _progress(total: int, enabled: bool, desc: str):
    """A tqdm bar on a terminal; None elsewhere (then each layer gets one log line on stderr)."""
    if not enabled or total == 0 or not sys.stderr.isatty():
        return None
    try:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit="layer", file=sys.stderr, leave=True)
    except ImportError:  # pragma: no cover
        return None


# ---------------------------------------------------------------- public API


def plan_layers(checkpoint: Any, options: AnalysisOptions | Mapping[str, Any] | None = None) -> list[LayerPlan]:
    """A LayerPlan for every tensor of the checkpoint, in checkpoint order, from headers only."""
    opts = make_options(options)
    return [plan_layer(info, i, opts) for i, info in enumerate(checkpoint.tensors())]


def analyze_layers(
    checkpoint: Any,
    plans: Iterable[LayerPlan],
    options: AnalysisOptions | Mapping[str, Any] | None = None,
    *,
    workers: int | None = None,
    threads: int | None = None,
    progress: bool = False,
) -> list[dict]:
    """Rows (dicts with exactly LAYER_COLUMN_NAMES) for the given plans, in the order given.

    Skipped plans give skipped rows. `threads` cores are shared by `workers` layers at once, each with
    threads // workers BLAS threads (one pool per process, never oversubscribed).
    """
    opts = make_options(options)
    plans = list(plans)
    threads = threads or available_cores()
    nworkers = _resolve_workers(plans, workers, threads)
    blas = max(1, threads // nworkers)
    if nworkers > 1 and _can_fork(checkpoint, plans, opts):
        rows = _analyse_in_processes(checkpoint, plans, opts, nworkers=nworkers, blas=blas, progress=progress)
        return [{c: r[c] for c in LAYER_COLUMN_NAMES} for r in rows]
    lock = threading.Lock()
    bar = _progress(sum(p.analysed for p in plans), progress, "ww-spectral")
    rows: list[dict | None] = [None] * len(plans)

    def job(i: int) -> None:
        t0 = time.perf_counter()
        rows[i] = _analyse_one(checkpoint, plans[i], opts, lock)
        if plans[i].analysed:
            if bar is not None:
                bar.update(1)
            elif progress:
                r = rows[i]
                print(f"[ww-spectral] {plans[i].tensor_name} {plans[i].shape}: {r['status']} "
                      f"alpha={r['alpha']:.3f} ({time.perf_counter() - t0:.2f} s)", file=sys.stderr)

    try:
        with _blas_threads(blas, use_torch=opts.backend == "torch"):
            if nworkers == 1:
                for i in range(len(plans)):
                    job(i)
            else:
                with ThreadPoolExecutor(max_workers=nworkers) as pool:
                    list(pool.map(job, range(len(plans))))
    finally:
        if bar is not None:
            bar.close()
    return [{c: r[c] for c in LAYER_COLUMN_NAMES} for r in rows if r is not None]


# ---------------------------------------------------------------- layer parallelism in processes

# scipy's ?syrk and ?syevd wrappers hold the GIL, so worker *threads* run them one at a time: measured
# here (2 cores, 4 x 2048x5632 f32, 1 BLAS thread each) 2 threads gave 1.02x on ssyrk and 0.96x on
# eigh. Forked worker processes run layers truly in parallel, each with its own single BLAS thread.
# Below this much work (flops of the Gram products) a model is done before processes would pay off.
_MIN_FORK_FLOPS = 2e9
_FORKED: tuple[Any, list[LayerPlan], AnalysisOptions] | None = None  # set in the parent, inherited by fork
_CHILD_LIMITS: Any = None


def _can_fork(checkpoint: Any, plans: list[LayerPlan], opts: AnalysisOptions) -> bool:
    """Fork only where it is safe and pays: Linux, a single-threaded parent (fork copies one thread, so a
    lock held by another - Prefect's, Ray's, a progress monitor's - would deadlock the child), a checkpoint
    of local safetensors files (read with numpy/ml_dtypes: no torch/OpenMP state or HTTP client is used
    in the child), the numpy backend, and enough work."""
    import multiprocessing

    ref = getattr(checkpoint, "ref", None)
    if (not sys.platform.startswith("linux") or threading.active_count() != 1 or opts.backend != "numpy"
            or ref is None or ref.kind != "safetensors" or not ref.files
            or not all(os.path.isfile(f) for f in ref.files)
            or "fork" not in multiprocessing.get_all_start_methods()):
        return False
    flops = sum(float(p.M) ** 2 * p.N * p.rf for p in plans if p.analysed)
    return flops >= _MIN_FORK_FLOPS


def _child_init(blas: int) -> None:
    global _CHILD_LIMITS
    from threadpoolctl import threadpool_limits

    _CHILD_LIMITS = threadpool_limits(limits=blas)  # kept referenced: in force for the child's life


def _child_job(i: int) -> tuple[int, dict, float]:
    checkpoint, plans, opts = _FORKED
    t0 = time.perf_counter()
    row = _analyse_one(checkpoint, plans[i], opts, threading.Lock())
    return i, row, time.perf_counter() - t0


def _analyse_in_processes(checkpoint: Any, plans: list[LayerPlan], opts: AnalysisOptions, *, nworkers: int,
                          blas: int, progress: bool) -> list[dict]:
    """Rows of every plan, analysed by `nworkers` forked processes (largest layers first, for balance)."""
    import multiprocessing

    global _FORKED
    rows: list[dict | None] = [None] * len(plans)
    for i, plan in enumerate(plans):
        if not plan.analysed:
            rows[i] = _skipped_row(plan)
    todo = sorted((i for i, p in enumerate(plans) if p.analysed),
                  key=lambda i: -(float(plans[i].M) ** 2 * plans[i].N * plans[i].rf))
    _FORKED = (checkpoint, plans, opts)
    bar = None
    try:
        with ProcessPoolExecutor(max_workers=nworkers, mp_context=multiprocessing.get_context("fork"),
                                 initializer=_child_init, initargs=(blas,)) as pool:
            futures = [pool.submit(_child_job, i) for i in todo]  # the first submit forks every worker
            bar = _progress(len(todo), progress, "ww-spectral")  # after the fork: tqdm starts a thread
            for fut in as_completed(futures):
                i, row, seconds = fut.result()
                rows[i] = row
                if bar is not None:
                    bar.update(1)
                elif progress:
                    print(f"[ww-spectral] {plans[i].tensor_name} {plans[i].shape}: {row['status']} "
                          f"alpha={row['alpha']:.3f} ({seconds:.2f} s)", file=sys.stderr)
    finally:
        _FORKED = None
        if bar is not None:
            bar.close()
    return rows  # type: ignore[return-value]


def rows_to_frame(rows: list[dict]) -> pd.DataFrame:
    """DataFrame with exactly LAYER_COLUMN_NAMES, ints as nullable Int64, floats as float64."""
    df = pd.DataFrame(rows, columns=list(LAYER_COLUMN_NAMES))
    for c in _INT_COLUMNS:
        df[c] = pd.array(df[c].tolist(), dtype="Int64")
    for c in _FLOAT_COLUMNS:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    for c in _STR_COLUMNS:
        df[c] = df[c].fillna("").astype(str)
    return df.reset_index(drop=True)


def analyze_model(source: Any, *, include_skipped: bool = True, progress: bool = False,
                  **options: Any) -> ModelAnalysis:
    """Analyse every tensor of SOURCE; the rows (skipped included unless include_skipped=False),
    the model summary and the checkpoint reference."""
    opts, run, opening = _split_options(dict(options))
    t0 = time.perf_counter()
    with _opened(source, **opening) as ckpt:
        plans = plan_layers(ckpt, opts)
        rows = analyze_layers(ckpt, plans, opts, progress=progress, **run)
        ref = ckpt.ref
    layers = rows_to_frame(rows)
    summary = summarize(layers)
    if not include_skipped:
        layers = layers[layers["status"] != "skipped"].reset_index(drop=True)
    return ModelAnalysis(ref=ref, options=opts, layers=layers, summary=summary,
                         seconds=time.perf_counter() - t0)


def analyze(source: Any, **options: Any) -> pd.DataFrame:
    """The per-layer table of SOURCE (WeightWatcher's analyze()): analysed and failed layers, one row
    each, columns LAYER_COLUMN_NAMES. Keyword options: see the module docstring."""
    progress = bool(options.pop("progress", False))
    return analyze_model(source, include_skipped=False, progress=progress, **options).layers


def describe(source: Any, **options: Any) -> pd.DataFrame:
    """Every tensor of SOURCE with its plan (shape, N, M, rf, num_evals, analysed, skip reason); no
    eigenvalues are computed and no tensor data is read."""
    opts, _, opening = _split_options(dict(options))
    with _opened(source, **opening) as ckpt:
        plans = plan_layers(ckpt, opts)
    recs = [{
        "layer_id": p.layer_id, "tensor_name": p.tensor_name, "longname": p.longname,
        "layer_type": p.layer_type, "shape": "x".join(str(s) for s in p.shape), "dtype": p.dtype,
        "N": p.N, "M": p.M, "Q": p.Q, "rf": p.rf, "num_evals": p.num_evals, "analysed": p.analysed,
        "skip_reason": p.skip_reason or "", "skip_detail": p.skip_detail, "est_bytes": p.est_bytes,
    } for p in plans]
    return pd.DataFrame(recs, columns=list(DESCRIBE_COLUMNS))
