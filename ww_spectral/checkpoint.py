"""open_checkpoint(SOURCE) -> Checkpoint: list every tensor from metadata, read one tensor at a time.

    with open_checkpoint("org/name@main", endpoint=..., cache_dir=...) as ckpt:
        for info in ckpt.tensors():            # TensorInfo(name, shape, dtype code, file, nbytes)
            W = ckpt.read(info.name)           # np.float32 array of info.shape (float64 on request)

The entry point: a SOURCE that exists locally (or a module / mapping) is resolved by
ww_spectral/sources.py; one that does not and looks like "org/name[@rev]" is downloaded by
ww_spectral/hub_source.py. The Checkpoint class is ww_spectral/readers/checkpoint.py's.
"""

from __future__ import annotations

import os

from . import hub, hub_source
from .errors import CheckpointError, SourceNotFoundError
from .layout import check_revision
from .readers import MappingReader
from .readers.checkpoint import Checkpoint, readers_for
from .records import CheckpointRef
from .sources import ResolvedSource, resolve_source

__all__ = ["Checkpoint", "open_checkpoint", "readers_for"]


def _hub_ref(source, revision: str | None, **hub_options) -> CheckpointRef | None:
    """The downloaded ref when SOURCE is a hub id "org/name[@rev]" that is no local path; else None."""
    if not (isinstance(source, str) and not os.path.lexists(os.path.expanduser(source)) and hub.is_hub_id(source)):
        return None
    repo_id, rev = hub.parse_model_id(source)
    try:
        return hub_source.download_weights(repo_id, revision=revision or rev, **hub_options)
    except SourceNotFoundError as exc:  # say both: a typo'd local path looks like a hub id
        raise SourceNotFoundError(f"{source}: no such local file or folder, and on the hub: {exc}") from exc


def open_checkpoint(
    source,
    *,
    revision: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    cache_dir: str | None = None,
    allow_external_links: bool = False,
) -> Checkpoint:
    """Open any SOURCE (path, folder, cache snapshot, "org/name[@rev]", nn.Module, mapping) for reading.

    revision: branch/tag/commit for hub ids and cached repos (overrides "@rev" in the id); a 40-hex sha or
    a safe ref name, else OptionError. token: hub token (default: HF_TOKEN). endpoint: hub URL (default:
    HF_ENDPOINT or huggingface.co). cache_dir: hub download cache (default: the huggingface_hub cache).
    allow_external_links: read weight files, indexes and configs that a local folder links to outside itself
    (default: refused with CheckpointError).
    Raises SourceNotFoundError, NoWeightsError, CheckpointError (incl. UnsafeCheckpointError), HubError,
    OptionError.
    """
    check_revision(revision)
    ref = _hub_ref(source, revision, token=token, endpoint=endpoint, cache_dir=cache_dir)
    resolved = ResolvedSource(ref) if ref is not None else \
        resolve_source(source, revision=revision, allow_external_links=allow_external_links)
    if resolved.mapping is not None:
        return Checkpoint(resolved.ref, [MappingReader(resolved.mapping)])
    if not resolved.ref.files:
        raise CheckpointError(f"{resolved.ref.repo_id}: resolved to no weight files")
    return Checkpoint(resolved.ref, readers_for(resolved.ref))
