"""A WeightWatcher 0.7.7-compatible Python surface: switch a notebook by changing its import.

    import ww_spectral as ww                      # was: import weightwatcher as ww
    watcher = ww.WeightWatcher(model=model)       # nn.Module, state dict, path, HF folder, org/name[@rev]
    details = watcher.analyze(randomize=True, mp_fit=True, layers=[3, 5])
    summary = watcher.get_summary()
    esd = watcher.get_ESD(layer=3, random=True)
    avg_dW, avg_db, deltas = watcher.distances(model_1, model_2)

Arguments and return shapes are WeightWatcher 0.7.7's (its weightwatcher.py): analyze() returns its details
DataFrame (layer_id, name, then its columns in its order, then ours: tensor_name, shape, dtype, fit_status,
skip_reason, hill_alpha and, with randomize, trap_positions); get_summary() its dict of means; describe()
its layer list; get_ESD() an ascending numpy array; distances() the tuple (avg_dW, avg_db, DataFrame).

Layer ids and names are WeightWatcher's: an nn.Module's layers are numbered by `named_modules()` position
(0 = the model itself) and named by their last path component; a state dict's (and a file's) weights are
numbered from 1 over the keys ending in '.weight' and named by the key without '.weight'. `layers=`,
get_ESD(layer=...) and the layer_id column use those numbers, and analyze()'s rows come in that order
(ww_spectral.analyze's own layer_id is the depth order of ww_spectral/model.py, the same for a module and
its saved file). Tensors WeightWatcher would not see (2-D tensors whose key does not end in '.weight',
parameters outside Linear/Conv/Embedding modules, experts of a 3-D stack) are analysed too, with layer_id
NA, after the others.

Options: WeightWatcher's analyze() keywords (records.AnalysisOptions for what they mean here) plus ours
(precision, backend, device, seed, include, exclude, conv1d, workers, threads). A keyword WeightWatcher
has but ww-spectral does not implement (plot, vectors, intra, ...) is accepted at WeightWatcher's default
value and raises OptionError naming the nearest supported option otherwise; an unknown keyword raises
OptionError with a "did you mean" hint. Where the numbers deliberately differ (failed fits are NaN, not -1;
glorot_fix is applied; the README's list), the ww-spectral behaviour is kept.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from . import analysis
from .checkpoint import open_checkpoint
from .columns import MP_COLUMNS, RANDOMIZE_COLUMNS
from .errors import NoAnalysableLayerError, OptionError
from .layer_read import read_layer
from .layers import layer_matrices
from .model import plan_key, plan_layers, plan_model
from .progress import safe_text
from .readers.mapping import is_torch_module
from .records import OPTION_FIELDS, AnalysisOptions, LayerPlan, make_options, nearest
from .selection import LAYER_TYPES

__all__ = ["WeightWatcher"]

# WeightWatcher 0.7.7's analyze() keywords and defaults (weightwatcher.py, WeightWatcher.analyze).
WW_ANALYZE_DEFAULTS: dict[str, Any] = {
    "model": None, "layers": [], "min_evals": 8, "max_evals": 15000, "min_size": None, "max_size": None,
    "max_N": 50000, "glorot_fix": False, "plot": False, "randomize": False, "savefig": "ww-img", "mp_fit": False,
    "conv2d_norm": True, "ww2x": False, "pool": True, "conv2d_fft": False, "fft": False, "deltas": False,
    "intra": False, "vectors": False, "channels": None, "stacked": False, "fix_fingers": False, "xmin_max": None,
    "max_fingers": 10, "finger_thresh": 1.0, "fit": "PL", "sparsify": True, "detX": False, "ERG": False,
    "svd_method": "fast", "tolerance": 1e-6, "start_ids": 0, "pl_package": "ww", "xmax": None, "base_model": None,
    "peft": False, "inverse": False,
}
# Translated to AnalysisOptions (below); the others are accepted at their defaults only.
_SUPPORTED = ("layers", "min_evals", "max_evals", "max_N", "glorot_fix", "randomize", "mp_fit", "pool", "ww2x",
              "fix_fingers", "xmin_max", "max_fingers", "finger_thresh", "fit", "base_model", "min_size",
              "max_size", "svd_method", "pl_package", "plot", "savefig")
# Ours, passed through: AnalysisOptions fields WW does not have, and where-it-runs settings.
_OURS = ("precision", "backend", "device", "seed", "include", "exclude", "conv1d", "ww_compat_conv_nm",
         "workers", "threads")
# Where an unsupported WeightWatcher option has a ww-spectral counterpart, say which.
_ALTERNATIVES = {
    "plot": "ww_spectral.plots / `ww-spectral plot` (plot=False here)",
    "savefig": "ww_spectral.plots / `ww-spectral plot`",
    "peft": "pass the PEFT adapter folder as the model (LoRA updates B.A are analysed)",
    "xmax": "fix_fingers='clip_xmax'",
    "conv2d_norm": "glorot_fix",
    "detX": "mp_fit", "ERG": "mp_fit",
}
_WW_SUMMARY = ("log_norm", "alpha", "alpha_weighted", "log_alpha_norm", "log_spectral_norm", "stable_rank",
               "mp_softrank")
_WW_BASE_COLUMNS = ("D", "M", "N", "Q", "alpha", "alpha_weighted", "entropy", "has_esd", "lambda_max", "layer_type",
                    "log_alpha_norm", "log_norm", "log_spectral_norm", "longname", "matrix_rank", "norm",
                    "num_evals", "num_pl_spikes", "rank_loss", "rf", "sigma", "spectral_norm", "stable_rank",
                    "status", "sv_max", "sv_min", "warning", "weak_rank_loss", "xmax", "xmin")
_OUR_EXTRA_COLUMNS = ("tensor_name", "shape", "dtype", "fit_status", "skip_reason", "hill_alpha")
_DESCRIBE_COLUMNS = ("layer_id", "name", "M", "N", "Q", "layer_type", "longname", "num_evals", "rf")
_DISTANCE_METHODS = ("raw", "euclidean", "cka")
_TORCH_TYPES = (("linear", "dense"), ("conv1d", "conv1d"), ("conv2d", "conv2d"), ("embedding", "embedding"),
                ("norm", "norm"))


# ---------------------------------------------------------------- WeightWatcher's layer ids and names


@dataclass(frozen=True)
class WWName:
    """How WeightWatcher 0.7.7 numbers, names and types one weight tensor (see the module docstring)."""

    layer_id: int | None
    name: str
    longname: str
    layer_type: str | None  # nn.Module sources: from the module class; else None (ours stands)


def _torch_layer_type(module: Any) -> str | None:
    """WW's PyTorchLayer.layer_type: by class name (Linear, Conv1d, Conv2d, Embedding, *Norm*)."""
    text = str(type(module)).lower()
    return next((t for key, t in _TORCH_TYPES if key in text), None)


def _is_module(model: Any) -> bool:
    return is_torch_module(model) and callable(getattr(model, "named_modules", None))


def ww_names(model: Any, tensor_names: list[str]) -> dict[str, WWName]:
    """WeightWatcher's id, name, longname (and module type) of each tensor of `model` it would see.

    tensor_names: the checkpoint's tensor names, in order (used for state dicts, mappings and files).
    """
    out: dict[str, WWName] = {}
    if _is_module(model):
        for idx, (path, module) in enumerate(model.named_modules()):
            weight = getattr(module, "weight", None)
            if weight is None or not path:
                continue
            out[f"{path}.weight"] = WWName(idx, path.split(".")[-1], path, _torch_layer_type(module))
        return out
    names = list(model.keys()) if isinstance(model, Mapping) else list(tensor_names)
    weights = [n for n in names if str(n).endswith(".weight")]
    if weights:
        return {n: WWName(i, n[: -len(".weight")], n[: -len(".weight")], None) for i, n in enumerate(weights, 1)}
    return {n: WWName(i, n, n, None) for i, n in enumerate(names, 1)}


# ---------------------------------------------------------------- option translation


def _check_known(name: str, value: Any) -> None:
    """Accept a WW keyword ww-spectral does not implement only at WW's default value."""
    default = WW_ANALYZE_DEFAULTS[name]
    if value is default or value == default or (default in (None, False) and not value):
        return
    alt = _ALTERNATIVES.get(name) or repr(nearest(name, _SUPPORTED + _OURS, cutoff=0.0))
    raise OptionError(f"WeightWatcher option {name}={value!r} is not supported by ww-spectral; nearest supported: "
                      f"{alt} (supported: {', '.join(sorted(set(_SUPPORTED) - {'plot', 'savefig'}))})")


def _size(value: Any, name: str, *, unlimited: int) -> int:
    """WW's min_evals / max_evals: 0 or None means no limit."""
    if value is None or (isinstance(value, numbers.Integral) and not isinstance(value, bool) and value == 0):
        return unlimited
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise OptionError(f"{name}={value!r}: use an integer")
    return int(value)


class WeightWatcher:
    """WeightWatcher 0.7.7's class over ww-spectral's analysis (see the module docstring).

    model: what ww_spectral.analyze accepts (nn.Module, mapping of name -> array, .safetensors/.bin file,
    model folder, HF cache snapshot, org/name[@rev]). framework and log_level are accepted and ignored
    (ww-spectral reads every framework's weights the same way). base_model: analyse model - base_model.
    """

    def __init__(self, model: Any = None, framework: str | None = None, base_model: Any = None,
                 log_level: Any = None) -> None:
        self.model = model
        self.base_model = base_model
        self.framework = framework
        self.details: pd.DataFrame | None = None
        self.results: Any = None  # the last ModelAnalysis (ours: summary, facts, skipped tensors)

    def __repr__(self) -> str:
        return f"WeightWatcher(model={type(self.model).__name__})"

    # ------------------------------------------------------------ sources and names

    def _set_model(self, model: Any, base_model: Any = None) -> None:
        if model is not None:
            self.model = model
        if base_model is not None:
            self.base_model = base_model
        if self.model is None:
            raise OptionError("no model: pass WeightWatcher(model=...) or analyze(model=...)")

    def _source(self, options: AnalysisOptions) -> Any:
        """The source analysed: the model, or {name: W - W_base} with a base_model."""
        if self.base_model is None:
            return self.model
        return _delta_mapping(self.model, self.base_model, options)

    def _names(self, source: Any, tensor_names: list[str]) -> dict[str, WWName]:
        return ww_names(self.model if self.base_model is None else source, tensor_names)

    def _translate_layers(self, layers: Any, names: dict[str, WWName]) -> tuple:
        """WW's layers= (WW ids, WW names, types) as AnalysisOptions.layers (tensor names and types)."""
        items = [] if layers is None else ([layers] if isinstance(layers, (numbers.Integral, str)) else
                                           list(np.asarray(layers).tolist() if hasattr(layers, "tolist") else layers))
        by_id = {n.layer_id: t for t, n in names.items() if n.layer_id is not None}
        by_name: dict[str, list[str]] = {}
        for t, n in names.items():
            by_name.setdefault(n.name, []).append(t)
        out: list = []
        for item in items:
            if isinstance(item, bool):
                raise OptionError(f"layers: {item!r} is not a layer id, name or type")
            if isinstance(item, numbers.Integral):
                tensor = by_id.get(abs(int(item)))
                # an id WW does not have keeps (or leaves out) nothing, as in WW
                target = tensor if tensor is not None else f"<no layer {abs(int(item))}>"
                out.append(f"-{target}" if item < 0 else target)
            elif isinstance(item, str) and item in LAYER_TYPES and any(n.layer_type for n in names.values()):
                # an nn.Module: WW's types come from the module classes (an Embedding is not "dense")
                out.extend(t for t, n in names.items() if n.layer_type == item)
                if not any(n.layer_type == item for n in names.values()):
                    out.append(f"<no {item} layer>")
            elif isinstance(item, str):
                minus, bare = item.startswith("-"), item.lstrip("-")
                tensors = by_name.get(bare)
                if tensors and not bare.endswith(".weight"):
                    out.extend(f"-{t}" if minus else t for t in tensors)
                else:
                    out.append(item)
            else:
                raise OptionError(f"layers: {item!r} is not a layer id, name or type")
        return tuple(out)

    def _options(self, kwargs: dict[str, Any], names_for) -> tuple[AnalysisOptions, dict[str, Any]]:
        """(AnalysisOptions, where-it-runs settings) from WeightWatcher keywords (+ ours)."""
        opts: dict[str, Any] = {}
        run: dict[str, Any] = {}
        for name, value in kwargs.items():
            if name in _OURS:
                (run if name in ("workers", "threads") else opts)[name] = value
            elif name not in WW_ANALYZE_DEFAULTS:
                hint = nearest(name, tuple(WW_ANALYZE_DEFAULTS) + _OURS)
                raise OptionError(f"unknown option {name!r}" + (f"; did you mean {hint!r}?" if hint else
                                  f"; WeightWatcher options are {sorted(WW_ANALYZE_DEFAULTS)}"))
            elif name not in _SUPPORTED:
                _check_known(name, value)
        get = kwargs.get
        if get("plot"):
            _check_known("plot", get("plot"))
        if get("svd_method", "fast") not in ("fast", "accurate"):
            raise OptionError(f"svd_method={get('svd_method')!r}: use 'fast' or 'accurate' (same eigenvalues here)")
        if get("pl_package", "ww") not in ("ww", "powerlaw"):
            raise OptionError(f"pl_package={get('pl_package')!r}: use 'ww' or 'powerlaw' (both fits are built in)")
        fix = get("fix_fingers", False)
        opts.update(
            min_evals=max(1, _size(get("min_evals", 8), "min_evals", unlimited=1)),
            max_evals=_size(get("max_evals", 15000), "max_evals", unlimited=2**62),
            max_N=_size(get("max_N", 50000), "max_N", unlimited=2**62),
            glorot_fix=bool(get("glorot_fix", False)), randomize=bool(get("randomize", False)),
            mp_fit=bool(get("mp_fit", False)), pool=bool(get("pool", True)) and not get("ww2x", False),
            fix_fingers=fix or None, xmin_max=get("xmin_max"), max_fingers=get("max_fingers", 10),
            finger_thresh=get("finger_thresh", 1.0), fit=get("fit", "PL"),
        )
        if _is_module(self.model) and "conv1d" not in opts:
            opts["conv1d"] = any(n.layer_type == "conv1d" for n in names_for().values())
        if get("layers"):
            opts["layers"] = self._translate_layers(get("layers"), names_for())
        return make_options(opts), run

    # ------------------------------------------------------------ analyze and friends

    def analyze(self, model: Any = None, **kwargs: Any) -> pd.DataFrame:
        """WeightWatcher's analyze(**keywords): the details DataFrame, one row per analysed layer (and per
        kernel position with pool=False). Also kept as get_details()."""
        self._set_model(model, kwargs.pop("base_model", None))
        progress = bool(kwargs.pop("progress", False))
        names_cache: dict[str, dict[str, WWName]] = {}

        def names_for() -> dict[str, WWName]:
            if "n" not in names_cache:
                with open_checkpoint(self.model) as ckpt:
                    names_cache["n"] = self._names(self.model, [t.name for t in ckpt.tensors()])
            return names_cache["n"]

        options, run = self._options(kwargs, names_for)
        source = self._source(options)
        try:
            result = analysis.analyze_model(source, include_skipped=True, progress=progress,
                                            **dataclasses.asdict(options), **run)
        except NoAnalysableLayerError:  # WW returns an empty details frame (e.g. layers= matching nothing)
            self.results = None
            self.details = pd.DataFrame(columns=["layer_id", "name"])
            return self.details
        self.results = result
        # WW numbers tensors in the checkpoint's own order (ours are in depth order)
        names = names_for() if self.base_model is None else self._names(source, list(source))
        analysed = result.layers[result.layers["status"] != "skipped"]
        self.details = self._details(analysed, options, names)
        return self.details

    def _details(self, layers: pd.DataFrame, options: AnalysisOptions, names: dict[str, WWName]) -> pd.DataFrame:
        """Our layers table in WeightWatcher's shape (columns and order of its details for these options)."""
        df = layers.copy()
        ww = [names.get(t) for t in df["tensor_name"]]
        df["layer_id"] = _ids([n.layer_id if n else None for n in ww])
        df["name"] = [n.name if n else ln for n, ln in zip(ww, df["longname"])]
        df["longname"] = [n.longname if n else ln for n, ln in zip(ww, df["longname"])]
        df["layer_type"] = [n.layer_type if n and n.layer_type else lt for n, lt in zip(ww, df["layer_type"])]
        df["has_esd"] = np.isfinite(df["lambda_max"].to_numpy(dtype=float, na_value=np.nan))
        cols = list(_WW_BASE_COLUMNS)
        if options.fix_fingers == "clip_xmax":
            cols += ["num_fingers", "raw_alpha"]
        if options.fit != "PL":
            cols.append("Lambda")
        if options.mp_fit:
            cols += list(MP_COLUMNS)
        if options.randomize:
            cols += [c for c in RANDOMIZE_COLUMNS if c != "trap_positions"]
        if not options.pool:
            cols.append("slice_id")
        extra = list(_OUR_EXTRA_COLUMNS)
        if options.xmin_peak:
            extra.append("xmin_max")
        if options.randomize:
            extra.append("trap_positions")
        return _in_ww_order(df[["layer_id", "name", *sorted(cols), *extra]])

    def get_details(self) -> pd.DataFrame | None:
        """The details of the last analyze()."""
        return self.details

    def get_summary(self, details: pd.DataFrame | None = None) -> dict:
        """WeightWatcher's get_summary(): the mean of log_norm, alpha, alpha_weighted, log_alpha_norm,
        log_spectral_norm, stable_rank (and mp_softrank) over the details' rows (failed fits are NaN here,
        so they drop out of the means instead of counting as -1)."""
        details = self.details if details is None else details
        if details is None:
            return {}
        return {m: details[m].mean() for m in _WW_SUMMARY if m in details.columns}

    def describe(self, model: Any = None, **kwargs: Any) -> pd.DataFrame:
        """WeightWatcher's describe(): the layers analyze() would look at (layer_id, name, M, N, Q,
        layer_type, longname, num_evals, rf), without computing any eigenvalue."""
        self._set_model(model, kwargs.pop("base_model", None))
        with open_checkpoint(self.model) as ckpt:
            names = self._names(self.model, [t.name for t in ckpt.tensors()])
            options, _ = self._options(kwargs, lambda: names)
            plans = [p for p in plan_layers(ckpt, options) if p.analysed]
        rows = []
        for p in plans:
            n = names.get(p.tensor_name)
            rows.append({"layer_id": n.layer_id if n else None, "name": n.name if n else p.longname, "M": p.M,
                         "N": p.N, "Q": p.Q, "layer_type": (n.layer_type if n and n.layer_type else p.layer_type),
                         "longname": n.longname if n else p.longname,
                         # WW's describe() reports M*rf pooled (with its M), M per row with pool=False
                         "num_evals": p.M * p.rf if options.pool else p.M, "rf": p.rf})
        df = pd.DataFrame(rows, columns=list(_DESCRIBE_COLUMNS))
        df["layer_id"] = _ids(df["layer_id"].tolist())
        return _in_ww_order(df)

    def _find(self, names: dict[str, WWName], plans: list[LayerPlan], layer: Any) -> LayerPlan:
        """The plan of WW's `layer` (id or name; our tensor names and longnames work too)."""
        for p in plans:
            n = names.get(p.tensor_name)
            if isinstance(layer, numbers.Integral) and not isinstance(layer, bool):
                if n is not None and n.layer_id == int(layer):
                    return p
            elif isinstance(layer, str) and layer in (p.tensor_name, p.longname, *((n.name, n.longname) if n else ())):
                return p
        known = ", ".join(f"{names[p.tensor_name].layer_id if p.tensor_name in names else '-'}:"
                          f"{safe_text(p.longname, limit=60)}" for p in plans[:40])
        raise OptionError(f"layer {layer!r} is not an analysed layer of this model; layers (id:name): {known}")

    def get_ESD(self, model: Any = None, layer: Any = None, random: bool = False, params: Any = None,
                **options: Any) -> np.ndarray:
        """WeightWatcher's get_ESD(layer=id or name, random=False): the layer's eigenvalues, ascending
        (random=True: of the layer with its elements shuffled, seed= ours, default 0; all replicas pooled,
        as WW's rand_evals). Extra keywords: our options (precision, seed, ...)."""
        self._set_model(model)
        opts = make_options({k: v for k, v in options.items() if k in OPTION_FIELDS})
        unknown = sorted(set(options) - set(OPTION_FIELDS))
        if unknown:
            raise OptionError(f"get_ESD: unknown option(s) {unknown}; options are {list(OPTION_FIELDS)}")
        if params is not None:
            raise OptionError("get_ESD(params=...) is not supported; pass options as keywords (e.g. precision=...)")
        source = self._source(opts)
        with open_checkpoint(source) as ckpt:
            plan = plan_model(ckpt, opts)
            names = self._names(source, [p.tensor_name for p in plan.layers])
            p = self._find(names, list(plan.analysed), layer)
            array = read_layer(ckpt, p, dtype=np.float64 if opts.precision == "float64" else np.float32)
        esd = analysis.layer_esd(p, array, opts, slice_id=0 if p.row_count > 1 else None)
        if not random:
            return esd.evals
        return analysis.layer_randomized(p, array, esd, opts, locate_traps=False).rand_evals

    def distances(self, model_1: Any, model_2: Any, method: str = "raw", layers: Any = None,
                  start_ids: int = 0, pool: bool = True, channels: Any = None) -> tuple[float, float, pd.DataFrame]:
        """WeightWatcher's distances(model_1, model_2, method='raw'|'euclidean'|'cka'): per analysable
        layer, delta_W (raw: ||W1 - W2||_F of the tensors; euclidean: mean over the layer's matrices of
        ||W1 - W2||_F; cka: mean of ||W1^T W2||_F / sqrt(||W1^T W1||_F ||W2 W2^T||_F)) and delta_b (raw:
        ||b1 - b2|| of the '.bias' tensors, else 0). Returns (mean delta_W, mean delta_b, DataFrame indexed
        by layer_id with method, name, delta_W, delta_b, M, N, b_shape, longname). Layers are paired by name.
        """
        method = (method or "raw").lower()
        if method not in _DISTANCE_METHODS:
            raise OptionError(f"distances: method={method!r}; use one of {_DISTANCE_METHODS}")
        if not pool:
            raise OptionError("distances(pool=False) is not supported; nearest supported: pool=True")
        _check_known("start_ids", start_ids)
        _check_known("channels", channels)
        rows = []
        with open_checkpoint(model_1) as c1, open_checkpoint(model_2) as c2:
            tensors1 = [t.name for t in c1.tensors()]
            names = ww_names(model_1, tensors1)
            kw = {"layers": layers} if layers else {}
            opts, _ = self._options(kw, lambda: names)
            other = {t.name: t for t in c2.tensors()}
            plans2 = {plan_key(q): q for q in plan_layers(c2, opts)}
            for p in (q for q in plan_layers(c1, opts) if q.analysed):
                q = plans2.get(plan_key(p))
                if q is None or tuple(q.shape) != tuple(p.shape):
                    raise OptionError(f"distances: model_2 has no tensor {safe_text(p.tensor_name)!r} of shape "
                                      f"{p.shape}; the models must have the same architecture")
                W1 = read_layer(c1, p, dtype=np.float64)
                W2 = read_layer(c2, q, dtype=np.float64)
                n = names.get(p.tensor_name)
                row = {"method": method, "layer_id": n.layer_id if n else None, "name": n.name if n else p.longname,
                       "delta_W": 0.0, "delta_b": 0.0, "b_shape": "unknown",
                       "longname": n.longname if n else p.longname}
                if method == "raw":
                    row.update(M=int(min(W1.shape)), N=int(max(W1.shape)), delta_W=float(np.linalg.norm(W1 - W2)))
                    bias = f"{p.longname}.bias"
                    if bias in other and bias in set(tensors1):
                        b1, b2 = c1.read(bias, dtype=np.float64), c2.read(bias, dtype=np.float64)
                        if b1.shape == b2.shape:  # WW's frame shows a 1-D bias shape as its length
                            row.update(b_shape=b1.shape[0] if b1.ndim == 1 else b1.shape,
                                       delta_b=float(np.linalg.norm(b1 - b2)))
                else:
                    m1, m2 = _ww_matrices(p, W1), _ww_matrices(p, W2)
                    row.update(M=int(min(m1[0].shape)), N=int(max(m1[0].shape)),
                               delta_W=float(np.mean([_matrix_distance(a, b, method) for a, b in zip(m1, m2)])))
                rows.append(row)
        df = pd.DataFrame(rows, columns=["method", "layer_id", "name", "delta_W", "delta_b", "M", "N", "b_shape",
                                         "longname"])
        df["layer_id"] = _ids(df["layer_id"].tolist())
        df = _in_ww_order(df).set_index("layer_id")
        avg_dw = float(np.mean(df["delta_W"].to_numpy())) if len(df) else math.nan
        avg_db = float(np.mean(df["delta_b"].to_numpy())) if len(df) else math.nan
        return avg_dw, avg_db, df


def _ids(values: list) -> Any:
    """WW's int64 layer_id column; nullable Int64 when some tensor has no WW id."""
    if any(v is None for v in values):
        return pd.array(values, dtype="Int64")
    return np.asarray(values, dtype=np.int64)


def _in_ww_order(df: pd.DataFrame) -> pd.DataFrame:
    """Rows in WeightWatcher's order (its layer ids; rows WW has no id for last, in our depth order)."""
    return df.sort_values("layer_id", kind="stable", na_position="last").reset_index(drop=True)


def _ww_matrices(plan: LayerPlan, W: np.ndarray) -> list[np.ndarray]:
    """The matrices WW compares in distances(): conv2d slices transposed to rows >= cols (its conv2D_Wmats),
    a dense W as stored."""
    mats = layer_matrices(plan, W)
    if plan.layer_type == "conv2d":
        return [m.T if m.shape[0] < m.shape[1] else m for m in mats]
    return mats


def _matrix_distance(W1: np.ndarray, W2: np.ndarray, method: str) -> float:
    """WW's matrix_distance: euclidean ||W1 - W2||_F; cka ||W1^T W2|| / sqrt(||W1^T W1|| ||W2 W2^T||)."""
    if method == "euclidean":
        return float(np.linalg.norm(W1 - W2))
    dist = float(np.linalg.norm(W1.T @ W2))
    norm = math.sqrt(float(np.linalg.norm(W1.T @ W1)) * float(np.linalg.norm(W2 @ W2.T)))
    return dist / (norm + 1e-6 if norm < 1e-6 else norm)


def _delta_mapping(model: Any, base_model: Any, options: AnalysisOptions) -> dict[str, np.ndarray]:
    """{name: W - W_base} for every float tensor of `model` (WW's base_model=): shapes must match."""
    out: dict[str, np.ndarray] = {}
    dtype = np.float64 if options.precision == "float64" else np.float32
    with open_checkpoint(model) as a, open_checkpoint(base_model) as b:
        base = {t.name: t for t in b.tensors()}
        for t in a.tensors():
            if t.dtype not in ("F64", "F32", "F16", "BF16"):
                continue
            if t.name not in base or tuple(base[t.name].shape) != tuple(t.shape):
                raise OptionError(f"base_model has no tensor {safe_text(t.name)!r} of shape {t.shape}; "
                                  "base_model must have the model's architecture")
            out[t.name] = (a.read(t.name, dtype=np.float64) - b.read(t.name, dtype=np.float64)).astype(dtype)
    return out
