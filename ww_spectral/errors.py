"""The exception hierarchy: every fault a user can cause has a type and a message naming the fix.

File-level faults raise (the CLI turns them into a one-line message and a non-zero exit);
layer-level faults never raise out of `analyze` - they become a row with a status and reason.
"""

from __future__ import annotations


class WWSpectralError(Exception):
    """Base class of every error ww-spectral raises on purpose."""


class SourceNotFoundError(WWSpectralError, FileNotFoundError):
    """The SOURCE names no file, folder, cache snapshot or hub repo that exists."""


class NoWeightsError(WWSpectralError):
    """The source exists but holds no supported weight file (.safetensors, .bin, .pt, .pth)."""


class CheckpointError(WWSpectralError):
    """A weight file is damaged or lies about itself (truncated, bad header, offsets past the end)."""


class NoAnalysableLayerError(CheckpointError):
    """The checkpoint holds no tensor that is an analysable layer (float 2-D dense or 4-D conv2d weights);
    permanent: the message names the tensors' skip reasons."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle checkpoint needs arbitrary code to load; it is refused, never executed."""


class UnsupportedDtypeError(WWSpectralError):
    """A tensor's dtype cannot be analysed (float8, packed/quantised integers, unknown codes)."""


class HubError(WWSpectralError):
    """A Hugging Face hub request failed for good (after retries)."""


class GatedRepoError(HubError):
    """The repo is gated or private and no (valid) token was given: set HF_TOKEN."""


class TransientHubError(HubError):
    """A hub fault worth retrying later: HTTP 429, 5xx, a timeout."""


class OptionError(WWSpectralError, ValueError):
    """An analysis option has a value outside what is allowed."""
