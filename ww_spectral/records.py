"""Records that cross stages: frozen dataclasses, one module.

Flow: CheckpointRef -> TensorInfo -> LayerPlan -> eigenvalues (np.ndarray) -> PowerLawFit -> row dict.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import OptionError

# Safetensors dtype codes we analyse exactly (upcast to the compute precision).
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")


@dataclass(frozen=True)
class CheckpointRef:
    """Where a model's weights come from, resolved to concrete local files.

    repo_id: hub id ("org/name"), or the folder/file name for local sources.
    revision: exact commit sha for hub/cache sources; a content hash of the weight files for local ones.
    files: absolute paths of the weight files, in load order.
    config: parsed config.json when present (model_type, architectures, ...), else {}.
    kind: "safetensors" | "torch" | "module" | "mapping".
    """

    repo_id: str
    revision: str
    files: tuple[str, ...]
    kind: str
    config: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as its header describes it; no data read.

    name: checkpoint key (e.g. "model.layers.0.mlp.up_proj.weight").
    shape: stored shape, e.g. (out, in) for Linear, (out, in, kh, kw) for Conv2d.
    dtype: safetensors dtype code ("F32", "BF16", "F8_E4M3", "I32", ...); torch dtypes are mapped to these.
    file: path of the file holding it (None for in-memory sources).
    nbytes: stored size in bytes.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    file: str | None
    nbytes: int


@dataclass(frozen=True)
class AnalysisOptions:
    """Options of one analysis; their fingerprint goes into every stored row's provenance.

    Defaults reproduce WeightWatcher 0.7.7's default `analyze()` (its fit rules: ww_spectral/fit.py;
    its layer rules: ww_spectral/layers.py).
    """

    fix_fingers: str | None = None  # None or "clip_xmax"
    backend: str = "numpy"  # "numpy" (scipy/LAPACK) or "torch" (CPU, or CUDA when device="cuda")
    precision: str = "float32"  # arithmetic of the Gram + eigensolve: "float32" or "float64"
    device: str = "cpu"  # torch backend only: "cpu" or "cuda"
    min_evals: int = 8  # WW: analyse only if min_evals <= M*rf ...
    max_evals: int = 15000  # ... <= max_evals
    max_N: int = 50000  # and N <= max_N (a 50257x768 embedding is skipped, as in WW)
    ww_compat_conv_nm: bool = False  # True reproduces WW's swapped N/M for even-rf conv kernels (a WW bug)

    def __post_init__(self) -> None:
        allowed = {
            "fix_fingers": (None, "clip_xmax"),
            "backend": ("numpy", "torch"),
            "precision": ("float32", "float64"),
            "device": ("cpu", "cuda"),
        }
        for name, values in allowed.items():
            value = getattr(self, name)
            if value not in values:
                raise OptionError(f"{name}={value!r} is not allowed; use one of {values}")
        if self.device == "cuda" and self.backend != "torch":
            raise OptionError("device='cuda' needs backend='torch'")
        if not 1 <= self.min_evals <= self.max_evals:
            raise OptionError(f"need 1 <= min_evals <= max_evals, got {self.min_evals}, {self.max_evals}")

    def fingerprint(self) -> str:
        """Hash of the options that change numbers (not where they run): 16 hex chars."""
        d = dataclasses.asdict(self)
        d.pop("device")  # same numbers on CPU or GPU within tolerance; not part of identity
        blob = json.dumps(d, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


OPTION_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(AnalysisOptions))


def make_options(options: AnalysisOptions | Mapping[str, Any] | None = None, **kwargs: Any) -> AnalysisOptions:
    """AnalysisOptions from an instance, a mapping and/or keyword arguments (kwargs win).

    Unknown names raise OptionError listing the allowed ones; values are checked by AnalysisOptions.
    """
    base = dataclasses.asdict(options) if isinstance(options, AnalysisOptions) else dict(options or {})
    base.update(kwargs)
    unknown = sorted(set(base) - set(OPTION_FIELDS))
    if unknown:
        raise OptionError(f"unknown analysis option(s) {unknown}; analysis options are {list(OPTION_FIELDS)}")
    return AnalysisOptions(**base)


@dataclass(frozen=True)
class LayerPlan:
    """What the analysis will do with one tensor, decided from its header alone.

    N, M: max and min of the matrix shape (for conv: of the out x in slice); Q = N / M.
    rf: number of slices pooled (kh*kw for conv2d, 1 for dense); num_evals = M * rf.
    layer_type: "dense" | "conv2d" | "conv1d" | "other".
    skip_code: None when analysed; else a machine code: "not_matrix", "empty", "unsupported_dtype",
        "size_filter" (the layers table's `fit_status` column holds it for skipped rows).
    skip_reason: human-readable prose of why it is skipped; "" when analysed (the layers table's
        `skip_reason` column).
    est_bytes: working memory the analysis of this layer needs (float64 matrix + Gram), for schedulers.
    """

    tensor_name: str
    longname: str
    layer_id: int
    layer_type: str
    shape: tuple[int, ...]
    dtype: str
    N: int
    M: int
    Q: float
    rf: int
    num_evals: int
    skip_code: str | None
    skip_reason: str = ""
    est_bytes: int = 0

    @property
    def analysed(self) -> bool:
        return self.skip_code is None
