"""PyTorch state-dict reader (.bin / .pt / .pth): torch.load(weights_only=True) only, never plain pickle.

`weights_only=True` restricts unpickling to tensors, containers and primitive types; a file whose pickle
needs any other global (a class, a function - e.g. a payload that would run code) is refused with
UnsafeCheckpointError before anything executes. `mmap=True` keeps tensor storages on disk (zip format,
torch >= 1.6) so peak memory stays near one tensor; the legacy (pre-zip) format cannot be mapped and is
loaded whole, which is the best torch allows for it.

Checkpoints that nest the weights under "state_dict", "model", "module" or "model_state_dict" are
unwrapped; nested dicts are flattened with "." (e.g. {"encoder": {"w": t}} -> "encoder.w");
non-tensor entries (epoch counters, optimizer step numbers) are ignored.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .. import dtypes
from ..errors import CheckpointError, UnsafeCheckpointError
from ..records import TensorInfo

NEST_KEYS = ("state_dict", "model_state_dict", "model", "module")


def _load(path: str):
    import torch

    kwargs = {"map_location": "cpu", "weights_only": True}
    try:
        with warnings.catch_warnings():  # "Detected pickle protocol 4 ...": noise; failures are reported below
            warnings.filterwarnings("ignore", message=".*pickle protocol", category=UserWarning)
            if zipfile.is_zipfile(path):
                return torch.load(path, mmap=True, **kwargs)
            return torch.load(path, **kwargs)  # legacy format: mmap is not possible
    except pickle.UnpicklingError as exc:
        text = str(exc)
        glob = re.search(r"GLOBAL ([\w.]+)", text)
        if glob:
            raise UnsafeCheckpointError(
                f"{path}: refused to load this pickle: it needs {glob.group(1)}, i.e. code, and it was not "
                "executed. Convert the checkpoint to .safetensors with code you trust, or save a plain state "
                "dict (torch.save(model.state_dict(), ...))"
            ) from None
        op = re.search(r"Unsupported operand \d+", text)
        first = op.group(0) if op else (text.strip().splitlines()[0][:200] if text.strip() else "unpickling failed")
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({first}); nothing in it was executed. The file is "
            "damaged, or pickled in a form weights_only loading refuses: re-download it, or convert it to "
            ".safetensors with code you trust"
        ) from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({msg[:200]}); the file is damaged or "
                              "truncated - re-download or re-save it") from None


def _flatten(obj: Mapping, prefix: str, out: dict) -> None:
    import torch

    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, torch.Tensor):
            out.setdefault(name, value)
        elif isinstance(value, Mapping):
            _flatten(value, name + ".", out)


def unwrap_state_dict(obj) -> dict:
    """The tensors of a loaded checkpoint object: unwrap common nesting keys, flatten nested dicts."""
    import torch

    if isinstance(obj, Mapping):
        for key in NEST_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor | Mapping) for v in inner.values()):
                return unwrap_state_dict(inner)
        out: dict = {}
        _flatten(obj, "", out)
        return out
    if isinstance(obj, torch.Tensor):
        return {"tensor": obj}
    return {}


def tensor_info(name: str, t, file: str | None) -> TensorInfo:
    """TensorInfo of a torch tensor (dtype mapped to its safetensors code)."""
    return TensorInfo(name=name, shape=tuple(int(d) for d in t.shape), dtype=dtypes.code_of_torch(t.dtype),
                      file=file, nbytes=int(t.numel() * t.element_size()))


def torch_to_numpy(t, target: np.dtype) -> np.ndarray:
    """Exact conversion of a float torch tensor to a fresh numpy array of float32/float64."""
    import torch

    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if target == np.float64:
        out = t.to(torch.float64)
    elif t.dtype == torch.float64:
        out = t.to(torch.float32)  # rounding, as numpy's astype would
    else:
        out = t.to(torch.float32)  # f16/bf16 -> f32 is exact
    arr = out.numpy()
    # .to() returns the same tensor when no conversion happened: copy so callers never alias the model.
    return np.array(arr, dtype=target, copy=True) if out.data_ptr() == t.data_ptr() else arr


class TorchReader:
    """One PyTorch checkpoint file (zip or legacy pickle), loaded with weights_only=True."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = str(Path(path).resolve())
        state = unwrap_state_dict(_load(self.path))
        self._tensors = state
        self._infos = [tensor_info(k, v, self.path) for k, v in state.items()]

    def tensors(self) -> list[TensorInfo]:
        return list(self._infos)

    def read(self, name: str, *, dtype=np.float32) -> np.ndarray:
        target = dtypes.check_target(dtype)
        t = self._tensors.get(name)
        if t is None:
            raise KeyError(name)
        code = dtypes.code_of_torch(t.dtype)
        if not dtypes.is_analysable(code):
            raise dtypes.unsupported(name, code)
        try:
            return torch_to_numpy(t, target)
        except RuntimeError as exc:  # e.g. a mapped storage whose bytes are missing (truncated zip member)
            raise CheckpointError(f"{self.path}: tensor {name!r} cannot be read ({exc}); re-download it") from None

    def close(self) -> None:
        self._tensors = {}
