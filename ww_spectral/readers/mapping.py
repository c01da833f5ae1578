"""In-memory reader: a Mapping of name -> numpy array / torch tensor (or an nn.Module's state_dict()).

`is_torch_module` is THE test for "an nn.Module" (any subclass: the user's own class, a transformers
model, a torch.nn layer), and `module_state` its tensors, read from the live object (state_dict(): no
pickle, nothing saved or loaded).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .. import dtypes
from ..errors import CheckpointError
from ..records import TensorInfo
from .torch_state import tensor_info, torch_to_numpy


def is_torch_module(obj) -> bool:
    """True when `obj` is an instance of torch.nn.Module, whatever module its own class is defined in.

    Decided from the class hierarchy (a base class named Module defined in torch.nn.modules.module), so
    torch is never imported for a source that is not one.
    """
    return any(cls.__name__ == "Module" and cls.__module__ == "torch.nn.modules.module"
               for cls in type(obj).__mro__)


def module_state(module) -> dict:
    """{name: tensor} of an nn.Module's state_dict(), in its registration order (parameters and buffers);
    entries that are not tensors (a module's get_extra_state()) are left out."""
    return {str(name): value for name, value in module.state_dict().items() if _is_torch(value)}


def _is_torch(value) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "dtype") and hasattr(value, "numel")


class MappingReader:
    """Tensors held by the caller; `read()` returns a converted copy (never a view of the caller's data)."""

    def __init__(self, mapping: Mapping) -> None:
        self._values: dict[str, object] = {}
        self._infos: list[TensorInfo] = []
        for name, value in mapping.items():
            if _is_torch(value):
                info = tensor_info(str(name), value, None)
            else:
                try:
                    arr = value if isinstance(value, np.ndarray) else np.asarray(value)
                except Exception as exc:  # noqa: BLE001 - anything not array-like
                    raise CheckpointError(
                        f"mapping value for {name!r} is a {type(value).__name__}, not an array ({exc}); "
                        "pass numpy arrays or torch tensors"
                    ) from None
                if arr.dtype == object:
                    raise CheckpointError(f"mapping value for {name!r} is not numeric (dtype object); "
                                          "pass numpy arrays or torch tensors")
                value = arr
                info = TensorInfo(name=str(name), shape=tuple(arr.shape), dtype=dtypes.code_of_numpy(arr.dtype),
                                  file=None, nbytes=int(arr.nbytes))
            self._values[info.name] = value
            self._infos.append(info)

    def tensors(self) -> list[TensorInfo]:
        return list(self._infos)

    def read(self, name: str, *, dtype=np.float32) -> np.ndarray:
        target = dtypes.check_target(dtype)
        if name not in self._values:
            raise KeyError(name)
        value = self._values[name]
        if _is_torch(value):
            code = dtypes.code_of_torch(value.dtype)
            if not dtypes.is_analysable(code):
                raise dtypes.unsupported(name, code)
            return torch_to_numpy(value, target)
        code = dtypes.code_of_numpy(value.dtype)
        if not dtypes.is_analysable(code):
            raise dtypes.unsupported(name, code)
        return np.array(value, dtype=target, copy=True)

    def close(self) -> None:
        self._values = {}
