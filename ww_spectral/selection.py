"""Which layers an analysis looks at: WeightWatcher's `layers=` filter plus include/exclude globs.

`layers` (AnalysisOptions.layers), as in WeightWatcher 0.7.7 (WWLayerIterator.apply_filters):
- integers: layer ids to keep (all >= 0) or, all negative, ids to leave out (-3 leaves out layer 3;
  id 0 cannot be left out this way, as in WW). Mixing signs is an error (WW refuses it too). Our ids
  are the `layer_id` column: the row's position in depth order (ww_spectral/roles.py depth_key), after
  the plan steps of ww_spectral/model.py (an expert stack split into experts, quantised parts merged),
  0-based, every row counted (ww_spectral.compat translates WeightWatcher's own numbering).
- strings in LAYER_TYPES: layer types to keep. "embedding" is a tensor whose name says it is an
  embedding (roles.tensor_role); embeddings are "dense" layers too, as in WW's state-dict path.
- other strings: layer names to keep (the tensor name or its longname), or, all prefixed with "-",
  names to leave out. Mixing kept and left-out names is an error (WW logs it and ignores the names).
- Several kinds at once must all keep a layer (WW applies them one after the other, each overriding
  the previous decision, so only its last kind counts; documented difference).
`include` / `exclude`: shell globs (fnmatch, case-sensitive) matched against the tensor name and the
longname; with include, only matching tensors are analysed; exclude removes matching tensors.

A tensor left out gets skip_code "not_selected" and a reason saying which rule left it out.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from fnmatch import fnmatchcase

from .errors import OptionError
from .roles import tensor_role

LAYER_TYPES = ("dense", "conv1d", "conv2d", "embedding", "norm")  # WW's LAYER_TYPES_SUPPORTED
_EMBEDDING_ROLES = frozenset({"embedding", "position_embedding"})
MAX_SELECTORS = 10_000  # bounded: options travel in JSON and CLI flags


def _as_items(value, what: str) -> list:
    if value is None:
        return []
    if isinstance(value, (str, bytes, numbers.Integral)):
        return [value]
    if hasattr(value, "tolist") and not isinstance(value, (list, tuple)):  # numpy arrays, as WW accepts
        value = value.tolist()
        return value if isinstance(value, list) else [value]
    if isinstance(value, Iterable):
        items = list(value)
        if len(items) > MAX_SELECTORS:
            raise OptionError(f"{what}: {len(items)} entries; at most {MAX_SELECTORS}")
        return items
    raise OptionError(f"{what}={value!r}: use a list of layer ids, names or types")


def _sorted(items: Iterable) -> tuple:
    return tuple(sorted(set(items), key=lambda v: (isinstance(v, str), v)))


def normalise_layers(value) -> tuple:
    """WW's `layers=` value (an id, a name, a type, or a list/tuple/array of them) as a sorted tuple of
    ints and strs; raises OptionError for other types, mixed id signs, or mixed kept/left-out names."""
    out: list = []
    for item in _as_items(value, "layers"):
        if isinstance(item, bool):
            raise OptionError(f"layers: {item!r} is not a layer id, name or type")
        if isinstance(item, numbers.Integral):
            out.append(int(item))
        elif isinstance(item, str) and item.strip():
            out.append(item.strip())
        else:
            raise OptionError(f"layers: {item!r} is not a layer id (int), name or type ({', '.join(LAYER_TYPES)})")
    ids = [v for v in out if isinstance(v, int)]
    if ids and min(ids) < 0 < max(ids):
        raise OptionError(f"layers: ids must be all >= 0 (keep) or all < 0 (leave out), got {sorted(ids)}")
    names = [v for v in out if isinstance(v, str) and v not in LAYER_TYPES]
    minus = [n.startswith("-") for n in names]
    if names and any(minus) and not all(minus):
        raise OptionError("layers: names must be all to keep or all to leave out ('-name'), not both")
    return _sorted(out)


def normalise_globs(value, what: str) -> tuple[str, ...]:
    """A glob or list of globs as a sorted tuple of non-empty strings."""
    items = _as_items(value, what)
    for g in items:
        if not isinstance(g, str) or not g:
            raise OptionError(f"{what}: {g!r} is not a glob pattern (e.g. 'model.layers.*.mlp.*')")
    return _sorted(items)


def _matches(patterns: tuple[str, ...], names: tuple[str, ...]) -> bool:
    return any(fnmatchcase(n, p) for p in patterns for n in names)


def _is_type(layer_type: str, wanted: str, tensor_name: str) -> bool:
    if wanted == "embedding":
        return tensor_role(tensor_name).role in _EMBEDDING_ROLES
    return layer_type == wanted


def not_selected_reason(*, tensor_name: str, longname: str, layer_id: int, layer_type: str, layers: tuple = (),
                        include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> str | None:
    """Why the selection leaves this tensor out (one line), or None when it is selected.

    layers/include/exclude: normalised AnalysisOptions values (see the module docstring).
    """
    names = (tensor_name, longname)
    ids = [v for v in layers if isinstance(v, int)]
    types = [v for v in layers if isinstance(v, str) and v in LAYER_TYPES]
    wanted = [v for v in layers if isinstance(v, str) and v not in LAYER_TYPES]
    if types and not any(_is_type(layer_type, t, tensor_name) for t in types):
        return f"layer type {layer_type} not in layers= types {types}"
    if ids:
        if min(ids) < 0:  # WW: any negative id means "leave these out"
            if -layer_id in ids:
                return f"layer id {layer_id} left out by layers={-layer_id}"
        elif layer_id not in ids:
            return f"layer id {layer_id} not in layers= ids"
    if wanted:
        if wanted[0].startswith("-"):
            if any(f"-{n}" in wanted for n in names):
                return "left out by name in layers="
        elif not any(n in wanted for n in names):
            return "name not in layers= names"
    if include and not _matches(include, names):
        return f"matches no include glob {list(include)}"
    if exclude and _matches(exclude, names):
        return f"matches an exclude glob {list(exclude)}"
    return None
