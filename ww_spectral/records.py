"""Records that cross stages: frozen dataclasses, one module.

Flow: CheckpointRef -> TensorInfo -> LayerPlan -> eigenvalues (np.ndarray) -> PowerLawFit -> row dict.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import selection
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
    kind: "safetensors" | "torch" | "gguf" | "module" | "mapping".
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


FITS = ("PL", "TPL", "E_TPL")  # WW's fit=: power law, truncated power law, TPL with xmin at the ESD peak
FIX_FINGERS = (None, "clip_xmax", "xmin_peak")
_FIT_ALIASES = {"power_law": "PL", "truncated_power_law": "TPL"}  # WW accepts these names too


@dataclass(frozen=True)
class AnalysisOptions:
    """Options of one analysis; their fingerprint goes into every stored row's provenance.

    Defaults reproduce WeightWatcher 0.7.7's default `analyze()` (its fit rules: ww_spectral/fit.py and
    ww_spectral/fit_variants.py; its layer rules: ww_spectral/layers.py; layer selection:
    ww_spectral/selection.py). Sequence options (layers, include, exclude) accept lists and are stored as
    sorted tuples without duplicates, so equal selections are equal options.
    """

    fix_fingers: str | None = None  # None, "clip_xmax" or "xmin_peak"
    backend: str = "numpy"  # "numpy" (scipy/LAPACK) or "torch" (CPU, or CUDA when device="cuda")
    precision: str = "float32"  # arithmetic of the Gram + eigensolve: "float32" or "float64"
    device: str = "cpu"  # torch backend only: "cpu" or "cuda"
    min_evals: int = 8  # WW: analyse only if min_evals <= M*rf ...
    max_evals: int = 15000  # ... <= max_evals
    max_N: int = 50000  # and N <= max_N (a 50257x768 embedding is skipped, as in WW)
    ww_compat_conv_nm: bool = False  # True reproduces WW's swapped N/M for even-rf conv kernels (a WW bug)
    # --- WeightWatcher's other options (issue 10); at their defaults they leave the fingerprint unchanged
    fit: str = "PL"  # "PL" | "TPL" (truncated power law, adds Lambda) | "E_TPL" (TPL with xmin_peak)
    xmin_max: float | None = None  # fix_fingers="xmin_peak": top of the xmin range (default 1.5 x ESD peak)
    max_fingers: int = 10  # fix_fingers="clip_xmax": WW's max_fingers (see fit.py for WW's rule)
    finger_thresh: float = 1.0  # fix_fingers="clip_xmax": alpha must drop by more than this
    mp_fit: bool = False  # Marchenko-Pastur fit of the bulk: num_spikes, sigma_mp, mp_softrank, ...
    randomize: bool = False  # randomized ESD: rand_distance, ww_softrank, correlation traps, ...
    seed: int = 0  # randomize: the shuffles are a function of (seed, tensor name) only
    layers: tuple = ()  # WW's layers=: ids, -ids (exclude), names, -names, layer types (selection.py)
    include: tuple = ()  # globs on tensor names / longnames: analyse only matching tensors
    exclude: tuple = ()  # globs on tensor names / longnames: never analyse matching tensors
    glorot_fix: bool = False  # rescale W by sqrt((N+M) rf / 2) (WW's intended glorot_fix; layers.py)
    pool: bool = True  # False: one row per conv2d kernel position (WW's pool=False)
    conv1d: bool = False  # analyse 3-D (out, in, k) tensors as WW's nn.Conv1d layers (layers.py)

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise once, here
        set_(self, "fit", _FIT_ALIASES.get(self.fit, self.fit) if isinstance(self.fit, str) else self.fit)
        set_(self, "layers", selection.normalise_layers(self.layers))
        set_(self, "include", selection.normalise_globs(self.include, "include"))
        set_(self, "exclude", selection.normalise_globs(self.exclude, "exclude"))
        allowed = {
            "fix_fingers": FIX_FINGERS,
            "backend": ("numpy", "torch"),
            "precision": ("float32", "float64"),
            "device": ("cpu", "cuda"),
            "fit": FITS,
        }
        for name, values in allowed.items():
            value = getattr(self, name)
            if not (value is None or isinstance(value, str)) or value not in values:
                raise OptionError(f"{name}={value!r} is not allowed; use one of {values}")
        for name in ("ww_compat_conv_nm", "mp_fit", "randomize", "glorot_fix", "pool", "conv1d"):
            if not isinstance(getattr(self, name), bool):
                raise OptionError(f"{name}={getattr(self, name)!r}: use True or False")
        for name, low in (("min_evals", 1), ("max_evals", 1), ("max_N", 1), ("max_fingers", 1), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise OptionError(f"{name}={value!r}: use an integer >= {low}")
        for name in ("xmin_max", "finger_thresh"):
            value = getattr(self, name)
            if value is None and name == "xmin_max":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value <= 0:
                raise OptionError(f"{name}={value!r}: use a positive number")
            set_(self, name, float(value))
        if self.device == "cuda" and self.backend != "torch":
            raise OptionError("device='cuda' needs backend='torch'")
        if not 1 <= self.min_evals <= self.max_evals:
            raise OptionError(f"need 1 <= min_evals <= max_evals, got {self.min_evals}, {self.max_evals}")
        if self.fit in ("TPL", "E_TPL") and self.fix_fingers == "clip_xmax":
            raise OptionError(f"fit={self.fit!r} cannot be combined with fix_fingers='clip_xmax' (WW 0.7.7 "
                              "refuses it); use fix_fingers=None or 'xmin_peak'")

    @property
    def xmin_peak(self) -> bool:
        """True when the xmin search is limited to WW's ESD-peak range (fix_fingers='xmin_peak' or E_TPL)."""
        return self.fix_fingers == "xmin_peak" or self.fit == "E_TPL"

    def _inert(self, name: str) -> bool:
        """A field that cannot change any number under the other options (left out of the identity)."""
        if name == "seed":
            return not self.randomize
        if name == "xmin_max":
            return not self.xmin_peak
        if name in ("max_fingers", "finger_thresh"):
            return self.fix_fingers != "clip_xmax"
        return False

    def identity(self) -> dict:
        """The options that change numbers, as a JSON-ready dict (what fingerprint() hashes).

        The eight fields of the first release are always in it (so the default options' fingerprint is
        the one earlier versions wrote, and stores made by them still skip), except `device` (same numbers
        within tolerance on CPU or GPU); every later field only when it differs from its default and can
        change a number under the others (seed only with randomize, xmin_max only with xmin_peak,
        max_fingers and finger_thresh only with clip_xmax).
        """
        d: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "device":
                continue
            if f.name not in _FIRST_RELEASE_FIELDS and (value == f.default or self._inert(f.name)):
                continue
            d[f.name] = list(value) if isinstance(value, tuple) else value
        return d

    def fingerprint(self) -> str:
        """Hash of the options that change numbers (identity()): 16 hex chars. Equal options give equal
        fingerprints, options that differ in a number-changing way give different ones."""
        blob = json.dumps(self.identity(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def label(self) -> str:
        """A short readable text of what differs from the default analysis, e.g. "randomize seed=3,
        mp_fit, fit=TPL"; "default" when nothing does (a store's readable options column)."""
        defaults = AnalysisOptions()
        parts = []
        for name, value in self.identity().items():
            if value == _jsonable(getattr(defaults, name)):
                continue
            if value is True:
                parts.append(name)
            elif value is False:
                parts.append(f"{name}=False")
            else:
                parts.append(f"{name}={value}")
        return ", ".join(parts) or "default"


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


# The fields of the first release: always hashed, so the default fingerprint never changes.
_FIRST_RELEASE_FIELDS = frozenset({"fix_fingers", "backend", "precision", "device", "min_evals", "max_evals",
                                   "max_N", "ww_compat_conv_nm"})

OPTION_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(AnalysisOptions))


def make_options(options: AnalysisOptions | Mapping[str, Any] | None = None, **kwargs: Any) -> AnalysisOptions:
    """AnalysisOptions from an instance, a mapping (e.g. json.loads of a stored options_json) and/or
    keyword arguments (kwargs win).

    Unknown names raise OptionError naming the nearest option; values are checked by AnalysisOptions.
    """
    if isinstance(options, AnalysisOptions) and not kwargs:
        return options
    base = dataclasses.asdict(options) if isinstance(options, AnalysisOptions) else dict(options or {})
    base.update(kwargs)
    unknown = sorted(set(base) - set(OPTION_FIELDS))
    if unknown:
        hints = [f"{u!r}" + (f" (did you mean {near!r}?)" if (near := nearest(u, OPTION_FIELDS)) else "")
                 for u in unknown]
        raise OptionError(f"unknown analysis option(s) {', '.join(hints)}; analysis options are "
                          f"{list(OPTION_FIELDS)}")
    return AnalysisOptions(**base)


def nearest(name: str, candidates: Iterable[str], *, cutoff: float = 0.6) -> str | None:
    """The candidate closest to `name` (difflib), or None when none is within `cutoff`: for "did you mean"
    hints (cutoff=0: always the closest one)."""
    found = difflib.get_close_matches(str(name), list(candidates), n=1, cutoff=cutoff)
    return found[0] if found else None


@dataclass(frozen=True)
class LayerPlan:
    """What the analysis will do with one tensor, decided from its header alone.

    N, M: max and min of the matrix shape (for conv: of the out x in slice); Q = N / M.
    rf: number of slices pooled (kh*kw for conv2d, 1 for dense); num_evals = M * rf.
    N, M: as above; for conv1d (WW's nn.Conv1d rule) the max and min of all three sides.
    layer_type: "dense" | "conv2d" | "conv1d" | "other".
    skip_code: None when analysed; else a machine code: "not_matrix", "not_selected", "empty",
        "unsupported_dtype", "size_filter" (the layers table's `fit_status` column holds it for skipped rows).
    skip_reason: human-readable prose of why it is skipped; "" when analysed (the layers table's
        `skip_reason` column).
    est_bytes: working memory the analysis of this layer needs (float64 matrix + Gram), for schedulers.
    row_count: rows the analysis of this plan gives: rf for a conv2d kernel analysed with pool=False (one
        per kernel position, each with num_evals = M), else 1.
    block, role, role_group, stack, expert, part, quant_format, delta_kind, base_ref: where the matrix sits
        and what it is (columns.PLACEMENT_COLUMNS, copied to every row of the plan).
    read_kind: how ww_spectral/layer_read.py gets the matrix: "tensor" (the stored tensor `tensor_name`),
        "expert" (one expert [and part] of a 3-D stack), "dequant" (a quantised layer: tensor_name and
        `companions` hold its stored parts), "lora_update" / "lora_merged" (an adapter layer: companions are
        the lora_A and lora_B tensors), "base_delta" (tensor_name minus the base checkpoint's tensor).
    companions: the other stored tensors read_kind needs (names in the same checkpoint), in a fixed order.
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
    row_count: int = 1
    block: int | None = None
    role: str = ""
    role_group: str = ""
    stack: str = ""
    expert: int | None = None
    part: str = ""
    quant_format: str = ""
    delta_kind: str = ""
    base_ref: str = ""
    read_kind: str = "tensor"
    companions: tuple[str, ...] = ()

    @property
    def analysed(self) -> bool:
        return self.skip_code is None
