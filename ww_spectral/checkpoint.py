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
from pathlib import Path

from . import hub, hub_source
from .errors import CheckpointError, SourceNotFoundError
from .layout import CONFIG, GGUF_SUFFIXES, check_inside, check_revision, read_config
from .readers import MappingReader
from .readers.checkpoint import Checkpoint, readers_for
from .records import CheckpointRef
from .sources import ResolvedSource, content_revision, repo_id_of_cache_dir, resolve_source
from .untrusted import check_regular_file

__all__ = ["Checkpoint", "open_checkpoint", "readers_for"]


def _gguf_file_ref(source, allow_external_links: bool) -> CheckpointRef | None:
    """The ref of a local .gguf file (its folder's config.json, if any, informative), else None.
    (ww_spectral/sources.py resolves the other local files.)"""
    if not isinstance(source, str | os.PathLike):
        return None
    path = Path(os.fspath(source)).expanduser()
    if not (path.name.lower().endswith(GGUF_SUFFIXES) and path.is_file()):
        return None
    path = path.parent.resolve() / path.name  # a link's own name is what the user named
    # A file of an HF cache snapshot links into ../../blobs: its root is the models--org--name folder.
    cached = repo_id_of_cache_dir(path.parent.parent.parent.name) if path.parent.parent.name == "snapshots" \
        else None
    root = path.parent.parent.parent if cached else path.parent
    check_inside(path, root, allow_external_links=allow_external_links, what="weight file")
    check_regular_file(path, what="weight file")
    config = read_config(path.parent / CONFIG, root=root, allow_external_links=allow_external_links)
    if cached:
        return CheckpointRef(repo_id=cached, revision=path.parent.name, files=(str(path),), kind="gguf",
                             config=config)
    return CheckpointRef(repo_id=path.name[: -len(".gguf")], revision=content_revision([path]),
                         files=(str(path),), kind="gguf", config=config)


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
    weight_file: str | None = None,
) -> Checkpoint:
    """Open any SOURCE (path, folder, cache snapshot, "org/name[@rev]", .gguf file, nn.Module, mapping).

    revision: branch/tag/commit for hub ids and cached repos (overrides "@rev" in the id); a 40-hex sha or
    a safe ref name, else OptionError. token: hub token (default: HF_TOKEN). endpoint: hub URL (default:
    HF_ENDPOINT or huggingface.co). cache_dir: hub download cache (default: the huggingface_hub cache).
    allow_external_links: read weight files, indexes and configs that a local folder links to outside itself
    (default: refused with CheckpointError). weight_file: for hub ids and folders, read only this weight file
    (e.g. "model.Q8_0.gguf"; default: ww_spectral/layout.py's choice).
    Raises SourceNotFoundError, NoWeightsError, CheckpointError (incl. UnsafeCheckpointError), HubError,
    OptionError.
    """
    check_revision(revision)
    ref = _gguf_file_ref(source, allow_external_links) or _hub_ref(
        source, revision, token=token, endpoint=endpoint, cache_dir=cache_dir, weight_file=weight_file)
    resolved = ResolvedSource(ref) if ref is not None else \
        resolve_source(source, revision=revision, allow_external_links=allow_external_links, weight_file=weight_file)
    if resolved.mapping is not None:
        return Checkpoint(resolved.ref, [MappingReader(resolved.mapping)])
    if not resolved.ref.files:
        raise CheckpointError(f"{resolved.ref.repo_id}: resolved to no weight files")
    return Checkpoint(resolved.ref, readers_for(resolved.ref))
