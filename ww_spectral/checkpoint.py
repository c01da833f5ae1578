"""open_checkpoint(SOURCE) -> Checkpoint: list every tensor from metadata, read one tensor at a time.

    with open_checkpoint("org/name@main", endpoint=..., cache_dir=...) as ckpt:
        for info in ckpt.tensors():            # TensorInfo(name, shape, dtype code, file, nbytes)
            W = ckpt.read(info.name)           # np.float32 array of info.shape (float64 on request)

See `ww_spectral.sources` for the SOURCE kinds and `ww_spectral.readers` for the formats.
"""

from __future__ import annotations

import numpy as np

from .errors import CheckpointError
from .readers import MappingReader, SafetensorsReader, TensorReader, TorchReader
from .records import CheckpointRef, TensorInfo
from .sources import SAFETENSORS_SUFFIXES, resolve_source


class Checkpoint:
    """An opened checkpoint: `.ref`, `.tensors()`, `.read(name, dtype=)`; a context manager.

    Files are opened (headers parsed and validated) when the Checkpoint is created; `close()` releases
    the memory maps. A tensor name present in several files is served from the first (load order).
    """

    def __init__(self, ref: CheckpointRef, readers: list[TensorReader]) -> None:
        self.ref = ref
        self._readers = readers
        self._infos: list[TensorInfo] = []
        self._owner: dict[str, TensorReader] = {}
        self._closed = False
        for reader in readers:
            for info in reader.tensors():
                if info.name not in self._owner:
                    self._owner[info.name] = reader
                    self._infos.append(info)

    def tensors(self) -> list[TensorInfo]:
        """Every tensor, in checkpoint order (files in load order, storage order within a file); no data read."""
        return list(self._infos)

    def read(self, name: str, *, dtype=np.float32) -> np.ndarray:
        """Tensor `name` in its stored shape, converted exactly to float32 (default) or float64.

        Reads only this tensor. Raises KeyError for an unknown name, UnsupportedDtypeError for float8 /
        integer / unknown codes, CheckpointError when the bytes are damaged.
        """
        if self._closed:
            raise CheckpointError(f"{self.ref.repo_id}: the checkpoint is closed; open it again to read {name!r}")
        reader = self._owner.get(name)
        if reader is None:
            raise KeyError(f"no tensor named {name!r} in {self.ref.repo_id}")
        return reader.read(name, dtype=dtype)

    def close(self) -> None:
        """Release memory maps and in-memory references; the Checkpoint cannot be read afterwards."""
        for reader in self._readers:
            reader.close()
        self._readers = []
        self._owner = {}
        self._closed = True

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Checkpoint({self.ref.repo_id!r}, revision={self.ref.revision!r}, kind={self.ref.kind!r}, "
                f"files={len(self.ref.files)}, tensors={len(self._infos)})")


def readers_for(ref: CheckpointRef) -> list[TensorReader]:
    """Open a reader per weight file of `ref` (safetensors or torch, by suffix)."""
    readers: list[TensorReader] = []
    try:
        for f in ref.files:
            readers.append(SafetensorsReader(f) if f.endswith(SAFETENSORS_SUFFIXES) else TorchReader(f))
    except BaseException:
        for r in readers:
            r.close()
        raise
    return readers


def open_checkpoint(
    source,
    *,
    revision: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    cache_dir: str | None = None,
) -> Checkpoint:
    """Open any SOURCE (path, folder, cache snapshot, "org/name[@rev]", nn.Module, mapping) for reading.

    revision: branch/tag/commit for hub ids and cached repos (overrides "@rev" in the id).
    token: hub token (default: HF_TOKEN). endpoint: hub URL (default: HF_ENDPOINT or huggingface.co).
    cache_dir: hub download cache (default: the huggingface_hub cache).
    Raises SourceNotFoundError, NoWeightsError, CheckpointError (incl. UnsafeCheckpointError), HubError.
    """
    resolved = resolve_source(source, revision=revision, token=token, endpoint=endpoint, cache_dir=cache_dir)
    if resolved.mapping is not None:
        return Checkpoint(resolved.ref, [MappingReader(resolved.mapping)])
    if not resolved.ref.files:
        raise CheckpointError(f"{resolved.ref.repo_id}: resolved to no weight files")
    return Checkpoint(resolved.ref, readers_for(resolved.ref))
