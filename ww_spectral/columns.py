"""The per-layer table's columns: names (WeightWatcher 0.7.7's, plus ours), types and meaning.

This is the one list the DataFrame, the CLI outputs and the Parquet `layers` schema are built from.
kind: "str" | "int" | "float" | "bool". Floats are NaN when undefined (see `status`/`fit_status`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    name: str
    kind: str
    doc: str


LAYER_COLUMNS: tuple[Column, ...] = (
    Column("layer_id", "int", "position of the tensor in checkpoint order (0-based, all tensors counted)"),
    Column("tensor_name", "str", "checkpoint key, e.g. model.layers.0.mlp.up_proj.weight"),
    Column("longname", "str", "module path (tensor_name without the trailing .weight)"),
    Column("layer_type", "str", "dense | conv2d | conv1d | other"),
    Column("shape", "str", "stored shape, e.g. '4096x11008'"),
    Column("dtype", "str", "stored dtype code (F32, F16, BF16, F64, F8_E4M3, I32, ...)"),
    Column("N", "int", "max side of the matrix (conv: of one kernel slice)"),
    Column("M", "int", "min side of the matrix"),
    Column("Q", "float", "aspect ratio N/M (>= 1)"),
    Column("rf", "int", "receptive field: number of pooled slices (kh*kw for conv2d, else 1)"),
    Column("num_evals", "int", "eigenvalues in the ESD: M*rf"),
    Column("alpha", "float", "power-law exponent of the ESD tail (MLE); 2-6 is well trained, lower is better within it"),
    Column("alpha_weighted", "float", "alpha * log10(lambda_max); WW's headline quality metric, lower is better"),
    Column("D", "float", "Kolmogorov-Smirnov distance of the fit, lower is a better fit"),
    Column("sigma", "float", "standard error of alpha: (alpha-1)/sqrt(num_pl_spikes)"),
    Column("xmin", "float", "smallest eigenvalue of the fitted tail"),
    Column("xmax", "float", "largest eigenvalue of the fitted tail"),
    Column("num_pl_spikes", "int", "tail size k: eigenvalues >= xmin used in the fit"),
    Column("num_fingers", "int", "eigenvalues clipped by fix_fingers='clip_xmax' (0 without)"),
    Column("raw_alpha", "float", "alpha before fix_fingers (equals alpha without it)"),
    Column("status", "str", "success | failed | skipped (WW has success/failed; skipped tensors are ours)"),
    Column("warning", "str", "over-trained (alpha<2) | under-trained (alpha>6) | '' (WW's labels; '' when failed)"),
    Column("fit_status", "str", "machine-readable outcome: ok | too_few_evals | nonfinite | all_zero | skip codes"),
    Column("skip_reason", "str", "human-readable reason when status is failed or skipped, else ''"),
    Column("norm", "float", "sum of eigenvalues = squared Frobenius norm"),
    Column("log_norm", "float", "log10(norm)"),
    Column("spectral_norm", "float", "largest eigenvalue = squared spectral norm"),
    Column("log_spectral_norm", "float", "log10(spectral_norm)"),
    Column("lambda_max", "float", "largest eigenvalue (same as spectral_norm)"),
    Column("sv_max", "float", "largest singular value"),
    Column("sv_min", "float", "smallest singular value"),
    Column("log_alpha_norm", "float", "log10(sum lambda^alpha)"),
    Column("stable_rank", "float", "norm / lambda_max"),
    Column("matrix_rank", "int", "#singular values > sv_max * N * eps(float64)"),
    Column("rank_loss", "int", "num_evals - matrix_rank"),
    Column("weak_rank_loss", "int", "#eigenvalues < 1e-6"),
    Column("entropy", "float", "normalised spectral entropy in [0, 1]"),
    Column("hill_alpha", "float", "Hill estimator with fixed tail k = n/2 (TempBalance/AlphaPruning), not in WW"),
)

LAYER_COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in LAYER_COLUMNS)
INT_COLUMNS: tuple[str, ...] = tuple(c.name for c in LAYER_COLUMNS if c.kind == "int")
FLOAT_COLUMNS: tuple[str, ...] = tuple(c.name for c in LAYER_COLUMNS if c.kind == "float")
STR_COLUMNS: tuple[str, ...] = tuple(c.name for c in LAYER_COLUMNS if c.kind == "str")

# Columns that describe the fit; NaN (or 0 for counts) whenever status != "success".
FIT_COLUMNS = ("alpha", "alpha_weighted", "D", "sigma", "xmin", "xmax", "num_pl_spikes", "log_alpha_norm")
