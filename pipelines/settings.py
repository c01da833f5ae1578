"""Everything a scan is configured with, read once (flags, then environment, then defaults).

`ScanSettings.from_env(**flags)` is the one place the scan reads its WW_SCAN_* variables (and, through
`ww_spectral.hub.HubSettings.from_env`, the WW_HUB_* ones: WW_HUB_TIMEOUT_S, WW_HUB_MAX_ATTEMPTS,
WW_HUB_BACKOFF_S); the result is frozen and passed down to every piece of the scan, the hub calls of the
Ray workers included. A flag given explicitly (not None) wins over the environment.

    WW_SCAN_RETRIES          task retries for transient faults (default 3)
    WW_SCAN_RETRY_DELAY_S    base of the exponential back-off between retries, seconds (default 2)
    WW_SCAN_MODEL_TIMEOUT_S  one model's deadline: planning, chunks, assembly (default 6 h)
    WW_SCAN_CHUNK_BYTES      working memory one Ray chunk task aims at (default 512 MiB)
    WW_SCAN_PREWARM          "1": warm fresh Ray workers' imports when the scan starts Ray, and wait for
                             them (up to 2 minutes) before the fan-out (default off)
    WW_SCAN_BATCH_MAX_PARAMS models with at most this many parameters (known from the listing) are analysed
                             whole, many per Ray task (default 20M; 0 = one Prefect task per model)
    WW_SCAN_BATCH_MODELS     most models per batch (default 64)
    WW_SCAN_BATCH_PARAMS     most parameters per batch, summed (default 200M)
    WW_SCAN_PROGRESS         "1": one progress line per model on stderr (the CLI turns it on)
    WW_SCAN_RETRY_FAILED     "1": also attempt revisions whose last attempt failed for good (pipelines/faults.py
                             skips_rescan; `scan --retry-failed` turns it on); default: they are skipped
    WW_SCAN_GPU_TASKS        "1"/"0": Ray tasks request GPUs (default: when the options ask for device cuda)
    WW_SCAN_GPU_LARGE_BYTES  a chunk whose largest layer needs at least this much gets a whole GPU, smaller
                             ones a quarter of one (default 256 MiB)

Ray's own variables (RAY_ADDRESS when no ray_address is given, the Ray Client auth ones) and HF_TOKEN are
read by pipelines/ray_runtime.py and the hub client where they are used, on purpose: secrets never sit in
a settings object that Prefect may log as flow parameters.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ww_spectral.cli_core import options_from_flags
from ww_spectral.errors import OptionError
from ww_spectral.hub import HubSettings
from ww_spectral.records import AnalysisOptions, make_options

GiB = 2**30
MiB = 2**20

# Named option sets a scan (`scan --options NAME`, a flow's `options="NAME"`) can ask for: name -> the
# analysis flags of `ww-spectral analyze` (ww_spectral/cli_core.py). Any other text is read as flags.
OPTION_SETS: dict[str, str] = {
    "default": "",
    "mp-fit": "--mp-fit",
    "randomize": "--randomize",
    "ww-full": "--randomize --mp-fit",
}


def resolve_options(options: AnalysisOptions | Mapping[str, Any] | str | None) -> AnalysisOptions:
    """A scan's analysis options from what a flow parameter or the CLI holds (JSON-able on purpose: Prefect
    deployments pass parameters as JSON): None = the default analysis; a name of OPTION_SETS; a flag
    string ("--randomize --seed 3"); a mapping of AnalysisOptions fields (e.g. AnalysisOptions.identity()
    or json.loads of a stored options_json); or an AnalysisOptions. Bad input raises OptionError."""
    if options is None or isinstance(options, AnalysisOptions):
        return options or AnalysisOptions()
    if isinstance(options, str):
        return options_from_flags(OPTION_SETS.get(options.strip(), options))
    if isinstance(options, Mapping):
        return make_options(dict(options))
    raise OptionError(f"options={options!r} is not allowed; give an option set name {sorted(OPTION_SETS)}, "
                      "analysis flags as one string, or a dict of analysis options")


@dataclass(frozen=True)
class ScanSettings:
    """One scan's configuration (immutable; built by `from_env`)."""

    # Store root the scan writes to: a local folder or an s3:// / gs:// URI.
    data_root: str = "ww-data"
    # Ray to use: None = RAY_ADDRESS, else a private local Ray started on demand; "auto", "host:6379" or
    # "ray://host:10001" (pipelines/ray_runtime.py).
    ray_address: str | None = None
    # Ray tasks in flight at once (and CPUs of a local Ray we start); None = every CPU of the cluster.
    workers: int | None = None
    # Hub URL; None = HF_ENDPOINT, else https://huggingface.co (resolved by the hub client).
    endpoint: str | None = None
    # Task retries for transient faults (HTTP 408/429/5xx, timeouts, a lost Ray worker); permanent: none.
    retries: int = 3
    # Base of the exponential back-off between retries (s); Prefect adds 50 % jitter.
    retry_delay_s: float = 2.0
    # Deadline of one model attempt (s): planning, its Ray chunks and assembly; then TimeoutError (transient).
    model_timeout_s: float = 6 * 3600.0
    # Working memory one Ray chunk aims at (bytes); a model bigger than this is split over several tasks.
    chunk_bytes: int = 512 * MiB
    # Warm fresh Ray workers (imports + a tiny analysis) when this scan starts Ray, and wait for them before
    # the fan-out (pipelines/scan.py _wait_warm). Off by default: it moves the workers' first imports from the
    # fan-out into Ray's start-up, which the end-to-end time of a scan does not gain from. (Submitted
    # without waiting, as before 2026-11-27, the warm-ups held the slots during the fan-out: bench_scan's
    # 2-worker speed-up 1.50-1.51x with it, 1.73-1.95x without.)
    prewarm: bool = False
    # Ray tasks request GPUs (num_gpus): a whole GPU for a chunk whose largest layer's working set is at
    # least gpu_large_bytes, GPU_SMALL_SHARE of one for other chunks and for batches (they share it).
    # None = when the analysis runs on CUDA (options.backend "torch", device "cuda"); True also works with
    # the CPU device (how tests/pipelines/test_pipelines_gpu.py covers this path without a GPU).
    gpu_tasks: bool | None = None
    gpu_large_bytes: int = 256 * MiB
    # Small models are analysed whole inside one Ray task, many per task (pipelines/batch.py): those whose
    # parameter count, as the listing knows it, is at most this (and whose working set fits one chunk).
    # 0 turns batching off: one Prefect task per model. Measured (benchmarks/bench_rehearsal.py): one
    # Prefect + Ray task per tiny model cost the flow process tens of ms each, more than the analysis.
    batch_max_params: int = 20_000_000
    # Most models in one batch, and most parameters summed over a batch (a lost worker node loses at most
    # one batch in progress per slot; the last batches of a scan should be short).
    batch_models: int = 64
    batch_params: int = 200_000_000
    # One progress line per model on stderr ("[ww-spectral] scan 3/10 ...").
    progress: bool = False
    # Attempt again the revisions whose last recorded attempt (same options) failed for good; by default a
    # scan skips them (pipelines/faults.py skips_rescan: the same bytes, options and code fail the same way).
    retry_failed: bool = False
    # The analysis options; their fingerprint is the identity under which results are stored and skipped.
    options: AnalysisOptions = field(default_factory=AnalysisOptions)
    # Hub client settings (timeout, attempts, back-off: WW_HUB_*), passed to every hub call of the scan.
    hub: HubSettings = field(default_factory=HubSettings)

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise OptionError(f"workers={self.workers} is not allowed; use a positive integer or leave it unset")
        if self.retries < 0:
            raise OptionError(f"retries={self.retries} is not allowed; use 0 or more (WW_SCAN_RETRIES)")
        if self.retry_delay_s < 0:
            raise OptionError(f"retry_delay_s={self.retry_delay_s} is not allowed; use 0 or more "
                              "(WW_SCAN_RETRY_DELAY_S)")
        if not self.model_timeout_s > 0:
            raise OptionError(f"model_timeout_s={self.model_timeout_s} is not allowed; use a positive number "
                              "of seconds (WW_SCAN_MODEL_TIMEOUT_S)")
        for name in ("batch_max_params", "batch_params"):
            if getattr(self, name) < 0:
                raise OptionError(f"{name}={getattr(self, name)} is not allowed; use 0 or more "
                                  f"(WW_SCAN_{name.upper()})")
        if self.batch_models < 1:
            raise OptionError(f"batch_models={self.batch_models} is not allowed; use a positive integer "
                              "(WW_SCAN_BATCH_MODELS)")
        if self.chunk_bytes < 1:
            raise OptionError(f"chunk_bytes={self.chunk_bytes} is not allowed; use a positive number of bytes "
                              "(WW_SCAN_CHUNK_BYTES)")

    @property
    def uses_gpus(self) -> bool:
        """Whether Ray tasks request GPUs (gpu_tasks, else: the analysis runs on CUDA)."""
        if self.gpu_tasks is not None:
            return self.gpu_tasks
        return self.options.backend == "torch" and self.options.device == "cuda"

    @property
    def fingerprint(self) -> str:
        """The options hash results are stored under (16 hex chars)."""
        return self.options.fingerprint()

    @classmethod
    def from_env(cls, *, environ: Mapping[str, str] | None = None, **flags: Any) -> ScanSettings:
        """Settings from `flags` (keyword = field name; None means "not given"), then the environment.

        environ: the variables to read (default os.environ), read once here and nowhere else in pipelines.
        """
        env = os.environ if environ is None else environ
        unknown = sorted(set(flags) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise OptionError(f"unknown scan setting(s) {unknown}")
        values: dict[str, Any] = {
            "retries": _number(env, "WW_SCAN_RETRIES", int),
            "retry_delay_s": _number(env, "WW_SCAN_RETRY_DELAY_S", float),
            "model_timeout_s": _number(env, "WW_SCAN_MODEL_TIMEOUT_S", float),
            "chunk_bytes": _number(env, "WW_SCAN_CHUNK_BYTES", int),
            "batch_max_params": _number(env, "WW_SCAN_BATCH_MAX_PARAMS", int),
            "batch_models": _number(env, "WW_SCAN_BATCH_MODELS", int),
            "batch_params": _number(env, "WW_SCAN_BATCH_PARAMS", int),
            "prewarm": _flag(env, "WW_SCAN_PREWARM"),
            "gpu_tasks": _flag(env, "WW_SCAN_GPU_TASKS"),
            "gpu_large_bytes": _number(env, "WW_SCAN_GPU_LARGE_BYTES", int),
            "progress": _flag(env, "WW_SCAN_PROGRESS"),
            "retry_failed": _flag(env, "WW_SCAN_RETRY_FAILED"),
            "hub": HubSettings.from_env(env),
        }
        values.update(flags)
        return cls(**{k: v for k, v in values.items() if v is not None})


def _number(env: Mapping[str, str], name: str, kind: type) -> Any:
    text = env.get(name, "").strip()
    if not text:
        return None
    try:
        return kind(float(text)) if kind is int else kind(text)
    except ValueError:
        raise OptionError(f"{name}={text!r} is not a number; unset it or give a {kind.__name__}") from None


def _flag(env: Mapping[str, str], name: str) -> bool | None:
    text = env.get(name, "").strip().lower()
    if not text:
        return None
    return text not in ("0", "false", "no", "off")

