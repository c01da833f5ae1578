"""The Prefect tasks of a scan: one per large model, one per batch of small models, one per failed model.

Where things run:
- Every task runs in the flow process (a ThreadPoolTaskRunner sized to the Ray slots), so no Prefect
  code ever runs inside a Ray worker and Prefect's ephemeral mode starts no server there.
- "analyze-model" (one model): pipelines/unit.py in the flow process, its layers in contiguous chunks on
  Ray (pipelines/dispatch.py), hub safetensors planned from remote headers before any download. For models
  too large to batch, and for a batched model whose attempt failed transiently (its retries then run here).
- "analyze-batch" (many small models): one Ray task runs them whole, one after another
  (pipelines/batch.py), and streams each model's outcome back; the flow only counts (Prefect shows the
  batch's counts as its result). A model that fails in a batch gets a task of its own: a transient fault
  an "analyze-model" task (the next attempts), a permanent one a "model-failed" task that records its
  failures row and ends Failed, so Prefect's view has a failed task run per failed model.
- A batch whose worker or node was lost is re-submitted for the models it had not reported; each lost
  attempt is a failures row (the failures view marks it resolved once the model is stored).

Faults: see pipelines/faults.py. A model that fails for good becomes one `failures` row (final attempt),
whatever the exception class; each retried attempt one more row; the scan goes on.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

from ww_spectral.progress import safe_text

from . import unit
from .batch import BatchSpec
from .faults import (
    RemoteFailure,
    StageFailure,
    is_transient,
    retry_if_transient,
    retry_options,
    stage,
    tagged,
)
from .listing import WorkItem
from .scan_state import ScanState, describe_error


class Batch:
    """Small models analysed by one Ray task (a plain class, not a dataclass: Prefect does not walk it
    looking for futures, which would cost O(models) per submission; see pipelines/scan_state.py).

    after: what the flow must still do once the task ends, per model that failed in it: ("model", item, None,
    first attempt) = analyse it in a model task of its own; ("failed", item, fault, attempt) = record its
    final failure in a "model-failed" task.
    """

    def __init__(self, index: int, items: list[WorkItem]) -> None:
        self.index = index
        self.items = items
        self.after: list[tuple[str, WorkItem, BaseException | None, int]] = []
        self.reported: set[tuple[str, str | None]] = set()  # models counted or queued in `after`

    @property
    def name(self) -> str:
        first = self.items[0].label
        return f"batch {self.index}: {first} +{len(self.items) - 1}"


# ------------------------------------------------------------------------------------------------ one model


def process_model(item: WorkItem, state: ScanState) -> dict:
    """Analyse one model revision in this process (its layers as chunks on Ray) and write it."""
    return unit.process_model(item, state.settings, state.store, state.chunks.layers, headers_first=True)


def run_model(item: WorkItem, state: ScanState, first_attempt: int = 1) -> dict:
    """The model task's body. Retries (set by `model_task`) apply to transient faults only; each retried
    attempt and the final failure are failures rows (written here, for any exception class), and the
    exception re-raised. first_attempt: attempts already made elsewhere (a batch) + 1."""
    from prefect.runtime import task_run

    attempt = first_attempt + int(task_run.run_count or 1) - 1
    try:
        result = process_model(item, state)
    except Exception as exc:
        if is_transient(exc) and attempt <= state.settings.retries:
            state.retrying(item, exc, attempt)
        else:
            state.fail(item, exc, attempt)
        raise
    state.finished(item, result)
    return result


def model_task(state: ScanState, *, retries: int | None = None):
    """The Prefect task "analyze-model" with this scan's retry policy (transient faults only, jittered
    exponential back-off). NO_CACHE: its parameters (the ScanState) are never hashed or serialised."""
    from prefect import task
    from prefect.cache_policies import NO_CACHE

    retries = state.settings.retries if retries is None else retries
    return task(name="analyze-model", cache_policy=NO_CACHE, persist_result=False, log_prints=False,
                task_run_name="{item.label}", retry_condition_fn=retry_if_transient,
                **retry_options(retries, state.settings.retry_delay_s))(run_model)


def record_failure(item: WorkItem, state: ScanState, error: BaseException, attempt: int) -> None:
    """The "model-failed" task's body: the model's final failures row, then the task fails with its error."""
    state.fail(item, error, attempt)
    raise error


def failure_task(state: ScanState):
    from prefect import task
    from prefect.cache_policies import NO_CACHE

    return task(name="model-failed", cache_policy=NO_CACHE, persist_result=False, log_prints=False,
                task_run_name="{item.label}", retries=0)(record_failure)


# ------------------------------------------------------------------------------------------------ batches


def _reported_failure(out: dict) -> StageFailure:
    return StageFailure(out["stage"], RemoteFailure(out["error_type"], out["message"], out["transient"]))


def _outcomes(batch: Batch, state: ScanState, spec: BatchSpec) -> Iterator[tuple[WorkItem, dict | None,
                                                                                  BaseException | None, int]]:
    """(item, outcome, None, attempt) per model as the worker reports it; when the batch's worker or node is
    lost, (item, None, fault, attempt) for each model it had not reported, then those models again in a new
    batch task (while attempts remain and the fault is transient)."""
    pending = list(batch.items)
    attempt = 1
    while pending:
        by_key = {it.key: it for it in pending}
        try:
            for out in state.chunks.stream_batch(pending, spec, name=batch.name):
                yield by_key.pop((out["repo_id"], out["revision"])), out, None, attempt
            return
        except Exception as exc:  # noqa: BLE001 - the Ray task itself failed: every unreported model
            lost = tagged("analyze", exc)
            pending = list(by_key.values())
            again = is_transient(exc) and attempt <= state.settings.retries
            for item in pending:
                yield item, None, lost, attempt
            if not again:
                return
            attempt += 1
            time.sleep(state.settings.retry_delay_s * (1 + 0.5 * random.random()))


def run_batch(batch: Batch, state: ScanState) -> dict:
    """The batch task's body: stream the batch's outcomes, count them, queue failed models in `batch.after`.

    Returns the batch's counts {"models", "done", "skipped", "linked", "failed", "retried"} (its Prefect result;
    "linked": duplicates of a stored revision, pipelines/duplicates.py).
    """
    spec = BatchSpec(settings=state.settings, driver_node=state.chunks.driver_node)
    counts = dict.fromkeys(("models", "done", "skipped", "linked", "failed", "retried"), 0)
    counts["models"] = len(batch.items)
    with state.lock:
        state.batches += 1
        state.batched += len(batch.items)
    for item, out, lost, attempt in _outcomes(batch, state, spec):
        batch.reported.add(item.key)
        fault = lost
        if out is not None and out["status"] == "failed":
            fault = _reported_failure(out)
        elif out is not None:
            try:
                _store_here(item, out, state)
            except Exception as exc:  # noqa: BLE001 - this model's write failed: its fault, like any other
                fault = tagged("write", exc)
            else:
                state.finished(item, out, keep=False)
                counts[out["status"]] += 1
                continue
        if lost is not None and not is_transient(lost):
            # The batch task broke for a reason of its own (not a lost worker): judge each model alone.
            if not counts.get("broken"):
                counts["broken"] = 1
                state.warn(f"scan: warning: {safe_text(batch.name)} failed as a whole ({describe_error(lost)}); "
                           "its models are analysed one by one")
            batch.after.append(("model", item, None, attempt))
        elif is_transient(fault) and attempt <= state.settings.retries:
            state.retrying(item, fault, attempt)
            counts["retried"] += 1
            if out is not None:  # one model's transient fault: its next attempts in a task of its own
                batch.after.append(("model", item, None, attempt + 1))
        else:
            counts["failed"] += 1
            batch.after.append(("failed", item, fault, attempt))
    return counts


def _store_here(item: WorkItem, out: dict, state: ScanState) -> None:
    """A model the worker analysed but could not store (another node's disk): written by the flow."""
    if out["status"] != "analysed":
        return
    t0 = time.perf_counter()
    with stage("write"):
        wrote = unit.store_model(state.store, state.settings, item, out["stored_revision"], out.pop("record"),
                                 out.pop("layers"))
    out["stages"]["write"] += time.perf_counter() - t0
    out["status"] = "done" if wrote else "skipped"


def batch_task(state: ScanState):
    """The Prefect task "analyze-batch". Not retried by Prefect: lost workers are handled per model above."""
    from prefect import task
    from prefect.cache_policies import NO_CACHE

    return task(name="analyze-batch", cache_policy=NO_CACHE, persist_result=False, log_prints=False,
                task_run_name="{batch.name}", retries=0)(run_batch)

