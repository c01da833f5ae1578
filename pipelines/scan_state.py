"""What one scan has seen so far: counts, stage totals, failure rows, and its progress lines.

One `ScanState` per scan, created by pipelines/scan.py and handed to every model task as a parameter.
It is a plain class on purpose (not a dataclass): Prefect walks dataclass, list and dict parameters of a
task looking for futures, which would cost O(models) per task submission here; a plain object is passed
through as it is (checked with Prefect 3.9.1: with cache_policy=NO_CACHE the task receives this very
object, never hashed or serialised, retries included - tests/pipelines/test_pipelines_hostile.py).
"""

from __future__ import annotations

import threading
import time
from collections import Counter

from catalogs.schema import Provenance
from catalogs.store import ResultStore
from ww_spectral.progress import ProgressReporter, safe_text

from .dispatch import ChunkRunner
from .faults import error_type, root_cause, stage_of
from .listing import WorkItem
from .settings import ScanSettings
from .unit import CLOCK_STAGES

# Characters of an error message kept in the failures table / on a progress line.
MESSAGE_CHARS = 2000
LINE_MESSAGE_CHARS = 160


def describe_error(exc: BaseException, limit: int = LINE_MESSAGE_CHARS) -> str:
    """"ErrorType: message" of the root cause, on one line (for progress lines)."""
    return safe_text(f"{error_type(exc)}: {root_cause(exc)}", limit=limit)


class ScanState:
    """Per-scan runtime state shared by the model tasks (threads of the flow process).

    settings: the scan's configuration; scan_id; store: where results and failures go;
    chunks: the ChunkRunner once Ray is up (None while listing); total: model revisions in the scan.
    skipped: revisions already stored; skipped_failed: revisions whose last attempt failed for good (not
    attempted: pipelines/faults.py skips_rescan), both counted when the scan selects what to analyse.
    results: per-model detail of the models analysed by their own model task (large models, retried ones);
    models analysed in batches are only counted (stage totals, bytes), so memory does not grow with them.
    Counters, results and failures change only under `lock`.
    """

    def __init__(self, settings: ScanSettings, *, scan_id: str, reporter: ProgressReporter | None = None) -> None:
        self.settings = settings
        self.scan_id = scan_id
        self.store = ResultStore(settings.data_root)
        self.reporter = reporter or ProgressReporter(enabled=settings.progress)
        self._warnings = ProgressReporter(enabled=True)  # warnings print whether progress is on or not
        self.chunks: ChunkRunner | None = None
        self.lock = threading.Lock()
        self.total = 0
        self.done = 0
        self.failed = 0
        self.skipped = 0
        self.skipped_failed = 0
        self.started = time.monotonic()
        self.results: list[dict] = []
        self.failures: list[dict] = []
        self._failed_keys: set[tuple[str, str | None]] = set()
        # Revisions attempted again although their last attempt failed for good (settings.retry_failed): the
        # attempt recorded before, so this scan's attempts are new failures rows (last + 1, ...) rather than
        # rewrites of the old ones (same record_key), which compaction would drop as already compacted.
        self.attempts_before: dict[tuple[str, str | None], int] = {}
        # Work done per stage, summed over every analysed model (seconds of the process that did it).
        self.stage_seconds = dict.fromkeys(CLOCK_STAGES, 0.0)
        self.analysis_seconds = 0.0  # of which inside the layer analysis proper (analyze_chunk)
        self.bytes_downloaded = 0
        self.retried = 0  # failed attempts that were retried (each one a failures row)
        self.batches = 0
        self.batched = 0  # models that went through a batch
        # Failed attempts by (stage, error type): "failed" = final (one per model), "retried" = retried.
        self.fault_counts: dict[str, Counter] = {"failed": Counter(), "retried": Counter()}

    # ------------------------------------------------------------------ progress

    def say(self, text: str) -> None:
        """One progress line (callers pass untrusted names through safe_text)."""
        self.reporter.line(text)

    def _count(self, status: str, item: WorkItem, detail: str) -> None:
        with self.lock:
            setattr(self, status, getattr(self, status) + 1)
            elapsed = max(time.monotonic() - self.started, 1e-9)
            failed_before = f" (+{self.skipped_failed} failed before)" if self.skipped_failed else ""
            line = (f"scan {self.done + self.failed + self.skipped + self.skipped_failed}/{self.total}: done "
                    f"{self.done} | failed {self.failed} | skipped {self.skipped}{failed_before} | "
                    f"{60.0 * self.done / elapsed:.1f} models/min  {status:7s} {safe_text(item.label)} {detail}")
        self.say(line)

    def warn(self, text: str) -> None:
        """A line printed whether progress is on or not (a step the user must finish by hand)."""
        self._warnings.line(text)

    # ------------------------------------------------------------------ outcomes

    def finished(self, item: WorkItem, result: dict, *, keep: bool = True) -> None:
        """A model's result: analysed and written ("done"), or found already stored ("skipped").

        keep: keep the per-model detail in `results` (model tasks); batched models are only counted.
        """
        with self.lock:
            if keep:
                self.results.append({k: v for k, v in result.items() if k not in ("record", "layers")})
            for name, seconds in (result.get("stages") or {}).items():
                self.stage_seconds[name] = self.stage_seconds.get(name, 0.0) + seconds
            self.analysis_seconds += result.get("ray_seconds", 0.0)
            self.bytes_downloaded += result.get("bytes", 0)
        self._count("done" if result["status"] == "done" else "skipped", item, f"{result['seconds']:.1f} s")

    def retrying(self, item: WorkItem, exc: BaseException, attempt: int) -> None:
        """A failed attempt that will be retried: one `failures` row for it (the catalog's failures view
        marks it resolved once the revision is stored), and a progress line."""
        row = self._write_failure(item, exc, self._numbered(item, attempt))
        with self.lock:
            self.retried += 1
            self.fault_counts["retried"][(row["stage"], row["error_type"])] += 1
        self.say(f"scan: retrying {safe_text(item.label)} (attempt {attempt} of {self.settings.retries + 1}): "
                 f"{describe_error(exc)}")

    def has_failed(self, item: WorkItem) -> bool:
        with self.lock:
            return item.key in self._failed_keys

    def fail(self, item: WorkItem, exc: BaseException, attempt: int) -> dict:
        """Record a model that failed for good: one `failures` row (once per model per scan), counted."""
        attempt = self._numbered(item, attempt)
        row = failure_row(item, exc, attempt)
        with self.lock:
            if item.key in self._failed_keys:
                return row
            self._failed_keys.add(item.key)
            self.failures.append(row)
            self.fault_counts["failed"][(row["stage"], row["error_type"])] += 1
        self._write_failure(item, exc, attempt)
        self._count("failed", item, f"[{row['stage']}] {describe_error(exc)}")
        return row

    def _numbered(self, item: WorkItem, attempt: int) -> int:
        """This scan's attempt `attempt` (1-based) as the failures table numbers it: after the attempts an
        earlier scan recorded for a revision attempted again with --retry-failed, else as it is."""
        return self.attempts_before.get(item.key, 0) + attempt

    def _write_failure(self, item: WorkItem, exc: BaseException, attempt: int) -> dict:
        row = failure_row(item, exc, attempt)
        self.store.write_failure(
            repo_id=item.repo_id, revision=item.revision, stage=row["stage"], error_type=row["error_type"],
            message=row["message"], attempt=attempt,
            provenance=Provenance(repo_id=item.repo_id, revision=row["revision"],
                                  options_hash=self.settings.fingerprint))
        return row

    def stages(self) -> dict:
        """Totals for the scan summary: seconds per stage, analysis seconds, bytes, retried attempts."""
        with self.lock:
            return {"stage_seconds": {k: round(v, 3) for k, v in self.stage_seconds.items()},
                    "analysis_seconds": round(self.analysis_seconds, 3), "bytes_downloaded": self.bytes_downloaded,
                    "retried_attempts": self.retried, "batches": self.batches, "batched_models": self.batched}

    def faults_by_type(self) -> list[dict]:
        """Failed attempts by stage and error type: [{stage, error_type, failed, retried}], most first.
        failed: models that failed for good; retried: attempts that failed and were tried again."""
        with self.lock:
            failed, retried = self.fault_counts["failed"], self.fault_counts["retried"]
            keys = set(failed) | set(retried)
            rows = [{"stage": st, "error_type": et, "failed": failed[(st, et)], "retried": retried[(st, et)]}
                    for st, et in keys]
        return sorted(rows, key=lambda r: (-r["failed"] - r["retried"], r["stage"], r["error_type"]))


def failure_row(item: WorkItem, exc: BaseException, attempt: int) -> dict:
    """The failures-table fields of a fault: stage, error type (the original's, for a fault a batch worker
    reported), message, attempt."""
    cause = root_cause(exc)
    return {"repo_id": item.repo_id, "revision": item.revision or "unknown", "stage": stage_of(exc),
            "error_type": error_type(exc),
            "message": str(cause)[:MESSAGE_CHARS], "attempt": int(attempt)}
