"""The per-layer table's columns: names (WeightWatcher 0.7.7's, plus ours), types and meaning.

This is the one list the DataFrame, the CLI outputs and the Parquet `layers` schema are built from.
kind: "str" | "int" | "float" | "bool". Floats are NaN when undefined (see `status`/`fit_status`).

The columns after `hill_alpha` belong to options (records.AnalysisOptions): NaN (ints: null, strings: '')
when their option is off - pool=False (slice_id), fit='TPL'/'E_TPL' (Lambda), xmin_peak (xmin_max),
mp_fit (MP_COLUMNS), randomize (RANDOMIZE_COLUMNS). Their definitions: ww_spectral/mp_fit.py and
ww_spectral/randomize.py (WeightWatcher 0.7.7's, under its names).
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
    Column("shape", "str", "shape of the matrix data analysed, e.g. '4096x11008': the stored tensor's, one "
                           "expert's for an expert row, the dequantised (out x in) for a quantised layer, the r x r "
                           "core for a lora_update row (N, M are the update's own sides)"),
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
    # --- option columns (null when the option is off)
    Column("slice_id", "int", "pool=False: kernel position i*kw + j of a conv2d row (0 for other layers)"),
    Column("Lambda", "float", "fit='TPL'/'E_TPL': exponential cut-off rate of the truncated power law"),
    Column("xmin_max", "float", "xmin_peak / E_TPL: top of the xmin search range (default 1.5 x ESD peak)"),
    Column("num_spikes", "int", "mp_fit: eigenvalues beyond the MP bulk edge + Tracy-Widom pad"),
    Column("sigma_mp", "float", "mp_fit: fitted MP scale (units where the mean eigenvalue is 1)"),
    Column("mp_softrank", "float", "mp_fit: bulk_max / lambda_max (rescaled units)"),
    Column("bulk_max", "float", "mp_fit: upper MP bulk edge, in eigenvalue units"),
    Column("bulk_min", "float", "mp_fit: lower MP bulk edge, in eigenvalue units"),
    Column("W_scale", "float", "mp_fit: sqrt(num_evals / sum lambda), the rescaling to mean eigenvalue 1"),
    Column("max_rand_eval", "float", "randomize: largest eigenvalue of the randomized (shuffled) ESD"),
    Column("rand_distance", "float", "randomize: Jensen-Shannon distance between the ESD and a randomized one"),
    Column("ww_softrank", "float", "randomize: max randomized eigenvalue / lambda_max"),
    Column("ww_maxdist", "float", "randomize: lambda_max - max randomized eigenvalue"),
    Column("rand_num_spikes", "int", "randomize: randomized eigenvalues beyond their MP bulk edge + TW pad"),
    Column("num_traps", "int", "randomize: correlation traps (= rand_num_spikes)"),
    Column("rand_sigma_mp", "float", "randomize: MP scale of the randomized ESD"),
    Column("rand_mp_softrank", "float", "randomize: MP soft rank of the randomized ESD"),
    Column("rand_W_scale", "float", "randomize: W_scale of the randomized ESD"),
    Column("rand_bulk_max", "float", "randomize: upper MP bulk edge of the randomized ESD"),
    Column("rand_bulk_min", "float", "randomize: lower MP bulk edge of the randomized ESD"),
    Column("trap_positions", "str", "randomize: JSON list, one object per trap: replica, slice, row, col of "
                                    "the weight behind it, rand_eval, weight, weight_z, localization ('' when off)"),
    # --- where the matrix sits and what it is (ww_spectral/roles.py, experts.py, quant/, adapters.py; null/'' when
    # unknown or not applicable)
    Column("block", "int", "index of the repeated block the tensor belongs to (layers.N, h.N, blk.N); null outside"),
    Column("role", "str", "attn_q | attn_k | attn_v | attn_o | attn_qkv | mlp_up | mlp_gate | mlp_down | "
                          "mlp_gate_up | router | embedding | position_embedding | lm_head | conv | norm | other"),
    Column("role_group", "str", "attention | mlp | embedding | head | conv | norm | other"),
    Column("stack", "str", "encoder | decoder for encoder-decoder models, else ''"),
    Column("expert", "int", "expert index within a mixture-of-experts stack (tensor_name names the stack); null"),
    Column("part", "str", "gate | up for one half of a fused gate/up stack, else ''"),
    Column("quant_format", "str", "how the stored weights were dequantised (fp8_e4m3, fp8_e5m2, gptq_int2/4/8, "
                                  "awq_int4, bnb_int8, bnb_nf4, bnb_fp4, ct_<compressed-tensors format>, "
                                  "mxfp4, gguf_<type>: ww_spectral/quant/plan.py); '' for full-precision weights"),
    Column("delta_kind", "str", "'' (the model's own weights) | base_delta (W - W_base) | lora_update "
                                "((lora_alpha/r) B A) | lora_merged (W_base + (lora_alpha/r) B A)"),
    Column("base_ref", "str", "the base model of a delta row as repo_id@revision, else ''"),
)

# The columns a LayerPlan carries as they are (records.LayerPlan has a field of each name).
PLACEMENT_COLUMNS = ("block", "role", "role_group", "stack", "expert", "part", "quant_format", "delta_kind",
                     "base_ref")

MP_COLUMNS = ("num_spikes", "sigma_mp", "mp_softrank", "bulk_max", "bulk_min", "W_scale")
RANDOMIZE_COLUMNS = ("max_rand_eval", "rand_distance", "ww_softrank", "ww_maxdist", "rand_num_spikes",
                     "num_traps", "rand_sigma_mp", "rand_mp_softrank", "rand_W_scale", "rand_bulk_max",
                     "rand_bulk_min", "trap_positions")

LAYER_COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in LAYER_COLUMNS)
INT_COLUMNS: tuple[str, ...] = tuple(c.name for c in LAYER_COLUMNS if c.kind == "int")
FLOAT_COLUMNS: tuple[str, ...] = tuple(c.name for c in LAYER_COLUMNS if c.kind == "float")
STR_COLUMNS: tuple[str, ...] = tuple(c.name for c in LAYER_COLUMNS if c.kind == "str")

# Columns that describe the fit; NaN (or 0 for counts) whenever status != "success".
FIT_COLUMNS = ("alpha", "alpha_weighted", "D", "sigma", "xmin", "xmax", "num_pl_spikes", "log_alpha_norm")
