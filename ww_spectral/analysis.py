"""The analysis: checkpoint -> layer plans -> ESDs -> power-law fits + metrics -> one row per tensor.

Public API:
    analyze(source, **options) -> DataFrame            analysed + failed layers, columns LAYER_COLUMN_NAMES
    describe(source, **options) -> DataFrame           the plans (DESCRIBE_COLUMNS), no eigenvalues
    analyze_model(source, *, include_skipped=True, progress=False, **options) -> ModelAnalysis
        = open -> model.plan_model -> analyze_layers -> model.assemble_model
    analyze_layers(checkpoint, plans, options, *, workers=None, threads=None, progress=None) -> list[dict]
    layer_esd(plan, array, options) -> LayerESD        THE eigenvalues and fit of one layer (rows and plots)
    layer_esds(source, *, layer=None, options=None) -> {longname: LayerESD}
    summarize(layers) -> dict                          WW get_summary() means + robust aggregates
    plan_layers, plan_model, assemble_model, rows_to_frame, ModelAnalysis: see ww_spectral/model.py

Options (keyword arguments): the fields of records.AnalysisOptions (fix_fingers, fit, xmin_max,
max_fingers, finger_thresh, mp_fit, randomize, seed, layers, include, exclude, min_evals, max_evals,
max_N, glorot_fix, pool, conv1d, backend, precision, device, ww_compat_conv_nm), plus where-it-runs
settings that never change
numbers: workers (layers analysed at once), threads (cores to use; default: all this process may use);
and for hub/cache sources: revision, token, endpoint, cache_dir, allow_external_links (passed to
checkpoint.open_checkpoint). analyze / analyze_model also take base_model=BASE (ww_spectral/deltas.py):
delta rows W - W_base beside the model's own; a PEFT adapter folder or repo is analysed as its updates
(ww_spectral/adapters.py).

One bad layer never stops a model: NaN/Inf weights, all-zero matrices, unreadable tensors and
unsupported dtypes become rows with status 'failed' / 'skipped', a fit_status code and a reason.
A model with no analysable layer at all raises errors.NoAnalysableLayerError (model.plan_model).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from . import deltas, fit_variants
from .checkpoint import open_checkpoint
from .columns import FLOAT_COLUMNS, INT_COLUMNS, LAYER_COLUMN_NAMES, PLACEMENT_COLUMNS, STR_COLUMNS
from .errors import OptionError, UnsupportedDtypeError, WWSpectralError
from .fit import PowerLawFit, failed_fit, fit_power_law, hill_alpha, ww_max_fingers
from .layer_read import read_layer
from .layers import eigenvalue_scale, layer_matrices
from .metrics import layer_metrics
from .model import ModelAnalysis, assemble_model, plan_layers, plan_model, rows_to_frame, slice_ids
from .mp_fit import mp_fit
from .progress import ProgressReporter, safe_text
from .randomize import RandomizedESD, randomize_layer
from .records import OPTION_FIELDS, AnalysisOptions, LayerPlan, make_options
from .spectrum import NonFiniteSpectrumError, layer_spectrum, noise_floor
from .summary import summarize

log = logging.getLogger("ww_spectral")

_RUN_FIELDS = ("workers", "threads")
# Passed to open_checkpoint when set (allow_external_links only when True, its default being False).
_OPEN_FIELDS = ("revision", "token", "endpoint", "cache_dir", "allow_external_links", "weight_file")
DESCRIBE_COLUMNS = ("layer_id", "tensor_name", "longname", "layer_type", "shape", "dtype", "N", "M", "Q",
                    "rf", "num_evals", "analysed", "skip_code", "skip_reason", "est_bytes")

__all__ = ["DESCRIBE_COLUMNS", "LayerESD", "ModelAnalysis", "analyze", "analyze_layers", "analyze_model",
           "assemble_model", "describe", "layer_esd", "layer_esds", "layer_randomized", "make_options",
           "plan_layers", "plan_model", "rows_to_frame", "summarize"]


# ---------------------------------------------------------------- options and resources


def _split_options(kwargs: dict[str, Any]) -> tuple[AnalysisOptions, dict[str, Any], dict[str, Any]]:
    """(analysis options, where-it-runs settings, open_checkpoint keywords) from one keyword dict."""
    run = {k: kwargs.pop(k) for k in _RUN_FIELDS if k in kwargs}
    opening = {k: v for k in _OPEN_FIELDS if (v := kwargs.pop(k, None)) is not None and v is not False}
    unknown = sorted(set(kwargs) - set(OPTION_FIELDS))
    if unknown:
        raise OptionError(f"unknown option(s) {unknown}; allowed: {list(OPTION_FIELDS + _RUN_FIELDS + _OPEN_FIELDS)}")
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


@contextlib.contextmanager
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


@contextlib.contextmanager
def _opened(source: Any, **open_kwargs: Any):
    """Yield a Checkpoint for any SOURCE; closes what it opened (not a checkpoint passed in).
    open_kwargs (_OPEN_FIELDS) go to open_checkpoint."""
    if _is_checkpoint(source):
        yield source
        return
    ckpt = open_checkpoint(source, **open_kwargs)
    try:
        yield ckpt
    finally:
        close = getattr(ckpt, "close", None)
        if callable(close):
            close()


# ---------------------------------------------------------------- one layer: ESD, fit, row


@dataclass(frozen=True, eq=False)
class LayerESD:
    """One layer's spectrum as the analysis sees it.

    plan: the layer's LayerPlan; evals: its pooled eigenvalues, ascending float64, shape (num_evals,),
    scaled (layers.eigenvalue_scale: 0.5 for conv2d, ...) and with the float32 noise floor applied
    (values under it set to 0) - the exact input of `fit`; fit: the fit of `evals` that the options ask
    for (fit.PowerLawFit; fit_variants.TruncatedPowerLawFit with Lambda for TPL/E_TPL; a failed fit with
    fit_status 'all_zero' for an all-zero matrix); slices: each slice's eigenvalues as computed (before
    the floor), the input of metrics.layer_metrics; slice_id: the kernel position of a pool=False
    conv2d row, else None.
    """

    plan: LayerPlan
    evals: np.ndarray
    fit: PowerLawFit
    slices: tuple[np.ndarray, ...]
    slice_id: int | None = None


def fit_esd(evals: np.ndarray, options: AnalysisOptions) -> PowerLawFit:
    """The fit the options ask for: WW's default fitter (fit.py) for fit='PL' with fix_fingers None or
    'clip_xmax' (max_fingers as WW applies it, finger_thresh), else fit_variants.fit_layer (TPL, E_TPL,
    xmin_peak with xmin_max)."""
    if options.fit == "PL" and options.fix_fingers in (None, "clip_xmax"):
        return fit_power_law(evals, fix_fingers=options.fix_fingers,
                             max_fingers=ww_max_fingers(options.max_fingers, int(np.size(evals))),
                             finger_thresh=options.finger_thresh)
    return fit_variants.fit_layer(evals, fit=options.fit, fix_fingers=options.fix_fingers,
                                  xmin_max=options.xmin_max)


def layer_esd(plan: LayerPlan, array: np.ndarray,
              options: AnalysisOptions | Mapping[str, Any] | None = None, *,
              slice_id: int | None = None) -> LayerESD:
    """The eigenvalues and fit of one planned layer, from its tensor data (shape plan.shape).

    slice_id: the kernel position of one row of a pool=False conv2d plan (plan.row_count > 1); None
    otherwise. The one function the rows (analyze) and the plots (plots.py) both use, so a plotted fit
    is the stored one. Raises spectrum.NonFiniteSpectrumError when W^T W has NaN/Inf entries.
    """
    opts = options if isinstance(options, AnalysisOptions) else make_options(options)
    if (slice_id is None) != (plan.row_count == 1):
        raise ValueError(f"{plan.tensor_name}: slice_id={slice_id!r} for a plan of {plan.row_count} row(s)")
    mats = layer_matrices(plan, array, slice_id=slice_id)
    slices = tuple(layer_spectrum(mats, scale=eigenvalue_scale(plan, opts), backend=opts.backend,
                                  precision=opts.precision, device=opts.device))
    evals = np.sort(np.concatenate(slices))
    if plan.layer_type == "conv1d":  # WW: the M largest of all channels' eigenvalues, as one "slice"
        evals = evals[-plan.M:]
        slices = (evals,)
    if not evals.size or not evals[-1] > 0:
        return LayerESD(plan, evals, failed_fit("all_zero", "all weights are zero; no spectrum"), slices, slice_id)
    if opts.precision == "float32":
        # Round-off of float32 Gram + eigensolve (~1e-6 lambda_max) is not spectrum: an exactly
        # rank-deficient layer must not fit noise where WW (float64 SVD) sees zeros it drops.
        floor = noise_floor(float(evals[-1]), max(e.size for e in slices), "float32")
        evals = np.where(evals > floor, evals, 0.0)
    return LayerESD(plan, evals, fit_esd(evals, opts), slices, slice_id)


def _shuffle_name(plan: LayerPlan, slice_id: int | None) -> str:
    """The name the shuffles of one row are seeded with: the tensor name (+ '#slice' for pool=False rows)."""
    return plan.tensor_name if slice_id is None else f"{plan.tensor_name}#slice{slice_id}"


def layer_randomized(plan: LayerPlan, array: np.ndarray, esd: LayerESD, options: AnalysisOptions, *,
                     locate_traps: bool = True) -> RandomizedESD:
    """The randomized ESD of one layer row (randomize.randomize_layer) with the options' seed, seeded by
    (seed, tensor name[, slice]) only: the same numbers on any host, worker count or layer order.
    Raises OptionError for conv1d layers (WW shuffles the whole 3-D kernel; not reproduced)."""
    if plan.layer_type == "conv1d":
        raise OptionError(f"{plan.tensor_name}: randomize is not available for conv1d layers")
    mats = layer_matrices(plan, array, slice_id=esd.slice_id)
    return randomize_layer(mats, esd.evals, N=plan.N, M=plan.M, seed=options.seed,
                           tensor_name=_shuffle_name(plan, esd.slice_id), scale=eigenvalue_scale(plan, options),
                           backend=options.backend, precision=options.precision, device=options.device,
                           locate_traps=locate_traps)


def _shape_text(shape: tuple[int, ...]) -> str:
    """The stored shape as the tables show it: (4096, 11008) -> '4096x11008'."""
    return "x".join(str(s) for s in shape)


def _empty_row(plan: LayerPlan, slice_id: int | None = None) -> dict:
    row: dict[str, Any] = {c: math.nan for c in FLOAT_COLUMNS}
    row.update({c: None for c in INT_COLUMNS})
    row.update({c: "" for c in STR_COLUMNS})
    row.update(
        layer_id=plan.layer_id, tensor_name=plan.tensor_name, longname=plan.longname,
        layer_type=plan.layer_type, shape=_shape_text(plan.shape), dtype=plan.dtype,
        N=plan.N, M=plan.M, Q=plan.Q, rf=plan.rf, num_evals=plan.num_evals,
        num_pl_spikes=0, num_fingers=0, slice_id=slice_id,
        **{c: getattr(plan, c) for c in PLACEMENT_COLUMNS},
    )
    return row


def _skipped_row(plan: LayerPlan, code: str | None = None, reason: str | None = None) -> dict:
    """A skipped row: fit_status holds the code, skip_reason the prose (the plan's unless given)."""
    row = _empty_row(plan)
    row.update(status="skipped", fit_status=code or plan.skip_code or "skipped",
               skip_reason=reason if reason is not None else plan.skip_reason)
    return row


def _failed_rows(plan: LayerPlan, options: AnalysisOptions, code: str, reason: str) -> list[dict]:
    """The rows of a plan that failed as a whole (one per slice_id it would have given)."""
    rows = []
    for sid in slice_ids(plan, options):
        row = _empty_row(plan, sid)
        row.update(status="failed", fit_status=code, skip_reason=reason)
        rows.append(row)
    return rows


def _traps_json(rand: RandomizedESD) -> str:
    """The traps as a compact JSON list (the trap_positions column; query it with DuckDB's json functions)."""
    keep = ("replica", "slice", "row", "col", "rand_eval", "weight", "weight_z", "localization")
    return json.dumps([{k: t.as_dict()[k] for k in keep} for t in rand.traps], separators=(",", ":"))


def _esd_row(plan: LayerPlan, array: np.ndarray, esd: LayerESD, options: AnalysisOptions,
             slice_id: int | None) -> dict:
    """One row from a layer's (or a pool=False slice's) LayerESD, plus the optional columns; slice_id:
    the row's slice_id column (model.slice_ids)."""
    fit = esd.fit
    row = _empty_row(plan, slice_id)
    if esd.slice_id is not None:
        row["num_evals"] = int(esd.evals.size)
    row.update(layer_metrics(list(esd.slices), N=plan.N, alpha=fit.alpha, precision=options.precision))
    row.update(
        alpha=fit.alpha, D=fit.D, sigma=fit.sigma, xmin=fit.xmin, xmax=fit.xmax,
        num_pl_spikes=fit.num_pl_spikes, num_fingers=fit.num_fingers, raw_alpha=fit.raw_alpha,
        status=fit.status, warning=fit.warning, fit_status=fit.fit_status,
        skip_reason=fit.detail if fit.status != "success" else "",
        hill_alpha=hill_alpha(esd.evals),
    )
    if options.fit != "PL":
        row["Lambda"] = getattr(fit, "Lambda", math.nan)
    if options.xmin_peak:
        with contextlib.suppress(ValueError):  # no positive eigenvalue: the fit failed and says why
            row["xmin_max"] = fit_variants.xmin_peak_range(esd.evals, xmin_max=options.xmin_max).upper
    if options.mp_fit:
        row.update(mp_fit(esd.evals, N=plan.N, M=plan.M).columns())
    if options.randomize and esd.evals.size and esd.evals[-1] > 0 and plan.layer_type != "conv1d":
        rand = layer_randomized(plan, array, esd, options)
        row.update(rand.columns())
        row["trap_positions"] = _traps_json(rand)
    return row


def _analyse_array(plan: LayerPlan, array: np.ndarray, options: AnalysisOptions) -> list[dict]:
    """The rows of one planned layer from its tensor data (already read in the compute dtype): one row,
    or one per kernel position for a pool=False conv2d plan. Every option (fits, mp_fit, randomize) is
    computed here, so every way of running layers (in process, forked workers, Ray chunks) has them."""
    rows = []
    for sid in slice_ids(plan, options):
        try:
            esd = layer_esd(plan, array, options, slice_id=sid if plan.row_count > 1 else None)
        except NonFiniteSpectrumError:
            bad = int(array.size - np.count_nonzero(np.isfinite(array)))
            if bad:
                return _failed_rows(plan, options, "nonfinite", f"{bad} NaN/Inf weight(s); the ESD is undefined")
            return _failed_rows(plan, options, "nonfinite", f"W^T W overflows in {options.precision}; "
                                                            "use precision='float64'")
        rows.append(_esd_row(plan, array, esd, options, sid))
    return rows


def _read(checkpoint: Any, plan: LayerPlan, options: AnalysisOptions) -> np.ndarray:
    """The layer's matrix (or stored tensor) in the compute dtype of `options.precision`."""
    return read_layer(checkpoint, plan, dtype=np.float64 if options.precision == "float64" else np.float32)


def _analyse_one(checkpoint: Any, plan: LayerPlan, options: AnalysisOptions,
                 read_lock: threading.Lock) -> list[dict]:
    if not plan.analysed:
        return [_skipped_row(plan)]
    try:
        with read_lock:  # one tensor read at a time: bounded memory, no contention on the file
            array = _read(checkpoint, plan, options)
    except UnsupportedDtypeError as exc:
        return [_skipped_row(plan, "unsupported_dtype", str(exc))]
    except WWSpectralError as exc:
        return _failed_rows(plan, options, "read_error", f"{type(exc).__name__}: {exc}")
    try:
        return _analyse_array(plan, array, options)
    except MemoryError:
        raise
    except Exception as exc:  # one bad layer never stops a model
        log.warning("layer %s failed: %s: %s", safe_text(plan.tensor_name), type(exc).__name__, exc)
        return _failed_rows(plan, options, "error", f"{type(exc).__name__}: {exc}")


# ---------------------------------------------------------------- progress


def _reporter(progress: bool | ProgressReporter | None) -> ProgressReporter:
    return progress if isinstance(progress, ProgressReporter) else ProgressReporter(enabled=bool(progress))


def _bar(total: int, reporter: ProgressReporter):
    """A tqdm bar when the reporter writes to a terminal; None elsewhere (then one line per layer)."""
    if total == 0 or not reporter.isatty():
        return None
    try:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc="ww-spectral", unit="layer", file=reporter.stream, leave=True)
    except ImportError:  # pragma: no cover
        return None


def _report(reporter: ProgressReporter, bar, plan: LayerPlan, rows: list[dict], seconds: float) -> None:
    if bar is not None:
        bar.update(1)
    else:
        row = rows[0]
        more = f" (+{len(rows) - 1} slices)" if len(rows) > 1 else ""
        reporter.line(f"{safe_text(plan.tensor_name)} {plan.shape}: {row['status']} alpha={row['alpha']:.3f}{more} "
                      f"({seconds:.2f} s)")


# ---------------------------------------------------------------- public API


def analyze_layers(
    checkpoint: Any,
    plans: Iterable[LayerPlan],
    options: AnalysisOptions | Mapping[str, Any] | None = None,
    *,
    workers: int | None = None,
    threads: int | None = None,
    progress: bool | ProgressReporter | None = None,
) -> list[dict]:
    """Rows (dicts with exactly LAYER_COLUMN_NAMES) for the given plans, in the order given: plan.row_count
    rows per analysed plan (one per kernel position for a pool=False conv2d kernel), one per other plan.

    Skipped plans give skipped rows. `threads` cores are shared by `workers` layers at once, each with
    threads // workers BLAS threads (one pool per process, never oversubscribed). progress: True (lines
    on stderr, or a bar on a terminal), a ProgressReporter, or None/False (silent).
    """
    opts = make_options(options)
    plans = list(plans)
    threads = threads or available_cores()
    nworkers = _resolve_workers(plans, workers, threads)
    blas = max(1, threads // nworkers)
    reporter = _reporter(progress)
    if nworkers > 1 and _can_fork(checkpoint, plans, opts):
        per_plan = _analyse_in_processes(checkpoint, plans, opts, nworkers=nworkers, blas=blas, reporter=reporter)
        return [{c: r[c] for c in LAYER_COLUMN_NAMES} for rows in per_plan for r in rows]
    lock = threading.Lock()
    bar = _bar(sum(p.analysed for p in plans), reporter)
    rows: list[list[dict] | None] = [None] * len(plans)

    def job(i: int) -> None:
        t0 = time.perf_counter()
        rows[i] = _analyse_one(checkpoint, plans[i], opts, lock)
        if plans[i].analysed:
            _report(reporter, bar, plans[i], rows[i], time.perf_counter() - t0)

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
    return [{c: r[c] for c in LAYER_COLUMN_NAMES} for plan_rows in rows if plan_rows is not None for r in plan_rows]


# ---------------------------------------------------------------- layer parallelism in processes

# scipy's ?syrk and ?syevd wrappers hold the GIL, so worker *threads* run them one at a time: measured
# here (2 cores, 4 x 2048x5632 f32, 1 BLAS thread each) 2 threads gave 1.02x on ssyrk and 0.96x on
# eigh. Forked worker processes run layers truly in parallel, each with its own single BLAS thread.
# Below this much work (flops of the Gram products) a model is done before processes would pay off.
_MIN_FORK_FLOPS = 2e9


def _can_fork(checkpoint: Any, plans: list[LayerPlan], opts: AnalysisOptions) -> bool:
    """Fork only where it is safe and pays: Linux, a single-threaded parent (fork copies one thread, so a
    lock held by another - Prefect's, Ray's, a progress monitor's - would deadlock the child), a checkpoint
    of local safetensors files (read with numpy/ml_dtypes: no torch/OpenMP state or HTTP client is used
    in the child), the numpy backend, and enough work."""
    ref = getattr(checkpoint, "ref", None)
    if (not sys.platform.startswith("linux") or threading.active_count() != 1 or opts.backend != "numpy"
            or ref is None or ref.kind != "safetensors" or not ref.files
            or not all(os.path.isfile(f) for f in ref.files)
            or "fork" not in multiprocessing.get_all_start_methods()):
        return False
    flops = sum(float(p.M) ** 2 * p.N * p.rf for p in plans if p.analysed)
    return flops >= _MIN_FORK_FLOPS


@dataclass(frozen=True)
class _ChildState:
    checkpoint: Any
    plans: list[LayerPlan]
    options: AnalysisOptions
    blas_limits: Any  # threadpoolctl's limiter, kept referenced: in force for the child's life


# Set only inside a forked worker, by _child_init; the parent never writes it. With the fork start
# method the pool's initializer arguments reach the child through the copied memory, not pickling (the
# checkpoint holds open files and memory maps, which cannot be pickled), and a job function run by the
# pool can reach what its initializer received only through module state of the child process.
_CHILD: _ChildState | None = None


def _child_init(checkpoint: Any, plans: list[LayerPlan], options: AnalysisOptions, blas: int) -> None:
    global _CHILD
    from threadpoolctl import threadpool_limits

    _CHILD = _ChildState(checkpoint, plans, options, threadpool_limits(limits=blas))


def _child_job(i: int) -> tuple[int, list[dict], float]:
    state = _CHILD
    if state is None:  # pragma: no cover - only reachable if a pool ran without its initializer
        raise RuntimeError("_child_job runs only in a worker started by _analyse_in_processes")
    t0 = time.perf_counter()
    row = _analyse_one(state.checkpoint, state.plans[i], state.options, threading.Lock())
    return i, row, time.perf_counter() - t0


def _analyse_in_processes(checkpoint: Any, plans: list[LayerPlan], opts: AnalysisOptions, *, nworkers: int,
                          blas: int, reporter: ProgressReporter) -> list[list[dict]]:
    """The rows of every plan (a list per plan), analysed by `nworkers` forked processes (largest layers
    first, for balance)."""
    rows: list[list[dict] | None] = [None] * len(plans)
    for i, plan in enumerate(plans):
        if not plan.analysed:
            rows[i] = [_skipped_row(plan)]
    todo = sorted((i for i, p in enumerate(plans) if p.analysed),
                  key=lambda i: -(float(plans[i].M) ** 2 * plans[i].N * plans[i].rf))
    bar = None
    try:
        with ProcessPoolExecutor(max_workers=nworkers, mp_context=multiprocessing.get_context("fork"),
                                 initializer=_child_init, initargs=(checkpoint, plans, opts, blas)) as pool:
            futures = [pool.submit(_child_job, i) for i in todo]  # the first submit forks every worker
            bar = _bar(len(todo), reporter)  # after the fork: tqdm starts a thread
            for fut in as_completed(futures):
                i, plan_rows, seconds = fut.result()
                rows[i] = plan_rows
                _report(reporter, bar, plans[i], plan_rows, seconds)
    finally:
        if bar is not None:
            bar.close()
    return rows  # type: ignore[return-value]


def analyze_model(source: Any, *, include_skipped: bool = True, progress: bool | ProgressReporter = False,
                  base_model: Any = None, **options: Any) -> ModelAnalysis:
    """Analyse every tensor of SOURCE: open -> plan_model -> analyze_layers -> assemble_model.

    base_model: the model's base (any SOURCE form; its revision as "org/name@rev"): delta rows W - W_base
    (and, for a PEFT adapter, the merged W_base + ΔW) follow the model's own rows (ww_spectral/deltas.py).
    The summary is of the model's own weights only (deltas.own_rows); deltas.delta_summary(result.layers)
    summarises the updates. The rows include skipped tensors unless include_skipped=False (the summary
    counts them either way). Raises NoAnalysableLayerError when no tensor is an analysable layer,
    deltas.BaseModelError when the base shares no layer with the model. Keyword options: see the module
    docstring.
    """
    opts, run, opening = _split_options(dict(options))
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        ckpt = stack.enter_context(_opened(source, **opening))
        if base_model is None:
            plan = plan_model(ckpt, opts)
        else:
            base_opening = {k: v for k, v in opening.items() if k != "revision"}
            ckpt = stack.enter_context(deltas.open_with_base(ckpt, base_model, base_options=base_opening))
            plan = deltas.plan_with_base(ckpt, opts)
        rows = analyze_layers(ckpt, plan.layers, plan.options, progress=progress, **run)
    result = assemble_model(plan, rows, seconds=time.perf_counter() - t0)
    if not include_skipped:
        kept = result.layers[result.layers["status"] != "skipped"].reset_index(drop=True)
        result = dataclasses.replace(result, layers=kept)
    return result


def analyze(source: Any, **options: Any) -> pd.DataFrame:
    """The per-layer table of SOURCE (WeightWatcher's analyze()): analysed and failed layers, one row
    each, columns LAYER_COLUMN_NAMES. Keyword options: see the module docstring."""
    progress = bool(options.pop("progress", False))
    return analyze_model(source, include_skipped=False, progress=progress, **options).layers


def describe(source: Any, **options: Any) -> pd.DataFrame:
    """Every tensor of SOURCE with its plan (DESCRIBE_COLUMNS: shape, N, M, rf, num_evals, analysed,
    skip_code, skip_reason, est_bytes); no eigenvalues are computed and no tensor data is read. A model
    with no analysable layer is described (every row analysed=False), not an error."""
    opts, _, opening = _split_options(dict(options))
    with _opened(source, **opening) as ckpt:
        plans = plan_layers(ckpt, opts)
    recs = [{
        "layer_id": p.layer_id, "tensor_name": p.tensor_name, "longname": p.longname,
        "layer_type": p.layer_type, "shape": _shape_text(p.shape), "dtype": p.dtype,
        "N": p.N, "M": p.M, "Q": p.Q, "rf": p.rf, "num_evals": p.num_evals, "analysed": p.analysed,
        "skip_code": p.skip_code or "", "skip_reason": p.skip_reason, "est_bytes": p.est_bytes,
    } for p in plans]
    return pd.DataFrame(recs, columns=list(DESCRIBE_COLUMNS))


def layer_esds(source: Any, *, layer: str | None = None,
               options: AnalysisOptions | Mapping[str, Any] | None = None) -> dict[str, LayerESD]:
    """The LayerESD of every analysed layer of SOURCE (or only `layer`, by longname or tensor name),
    {longname: LayerESD} in checkpoint order - what plots and reports draw. With pool=False a conv2d
    kernel gives one entry per kernel position, keyed "longname:slice_id".

    Layers whose ESD is undefined (NaN/Inf weights, unreadable or unsupported data: failed or skipped
    rows in the analysis) have no entry. Raises OptionError when `layer` names no tensor, and
    NoAnalysableLayerError when the model has no analysable layer.
    """
    opts = make_options(options)
    out: dict[str, LayerESD] = {}
    with _opened(source) as ckpt:
        plan = plan_model(ckpt, opts)
        if layer is not None and not any(layer in (p.longname, p.tensor_name) for p in plan.layers):
            names = ", ".join(safe_text(p.longname, limit=80) for p in plan.analysed[:50])
            raise OptionError(f"layer {safe_text(layer)!r} not found; analysed layers are: {names}")
        for p in plan.analysed:
            if layer is not None and layer not in (p.longname, p.tensor_name):
                continue
            try:
                array = _read(ckpt, p, opts)
                for sid in (range(p.row_count) if p.row_count > 1 else [None]):
                    esd = layer_esd(p, array, opts, slice_id=sid)
                    key = p.longname if p.longname not in out else p.tensor_name
                    out[key if sid is None else f"{key}:{sid}"] = esd
            except (NonFiniteSpectrumError, WWSpectralError):
                continue
    return out
