"""A rescan skips a revision whose last attempt failed for good (pipelines/faults.py skips_rescan) and counts
it apart from "already stored"; --retry-failed (WW_SCAN_RETRY_FAILED=1) attempts it again as a new attempt.
Gated, not-found, transient and unexpected faults, other versions, revisions and options are attempted."""

from __future__ import annotations

import argparse
import datetime as dt

import pytest
from pipelines_zoo import make_zoo

from catalogs.catalog import run_sql
from catalogs.schema import Provenance, writer_version
from catalogs.store import ResultStore
from pipelines.faults import StageFailure
from pipelines.flows import scan_folder
from pipelines.listing import WorkItem
from pipelines.scan import _select
from pipelines.scan_cli import format_summary, register
from pipelines.scan_state import ScanState
from pipelines.settings import ScanSettings
from ww_spectral.errors import CheckpointError

T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
REV = "a" * 40


def _record(store: ResultStore, repo_id: str, error_type: str, *, options_hash: str, day: int = 0,
            stage: str = "read", attempt: int = 1, revision: str = REV, version: str | None = None) -> None:
    prov = Provenance(repo_id=repo_id, revision=revision, options_hash=options_hash,
                      ww_spectral_version=version or writer_version())
    store.write_failure(repo_id=repo_id, revision=revision, stage=stage, error_type=error_type, message="m",
                        attempt=attempt, provenance=prov, failed_at=T0 + dt.timedelta(days=day))


def test_selection_skips_only_settled_faults_of_this_version_revision_and_options(tmp_path):
    settings = ScanSettings(data_root=str(tmp_path / "data"))
    fp = settings.fingerprint
    store = ResultStore(settings.data_root)
    skipped = {"org/broken": "CheckpointError", "org/quantized": "NoAnalysableLayerError",
               "org/empty": "NoWeightsError", "org/fp8": "UnsupportedDtypeError", "other/opt": "OptionError"}
    for repo, error_type in skipped.items():
        _record(store, repo, error_type, options_hash=fp)
    _record(store, "org/gated", "GatedRepoError", options_hash=fp)  # a token may be supplied later
    _record(store, "org/missing", "SourceNotFoundError", options_hash=fp)  # private repos read as missing
    _record(store, "org/flaky", "TransientHubError", options_hash=fp, stage="download", attempt=4)
    _record(store, "org/bug", "KeyError", options_hash=fp)  # unexpected: a bug a release may fix
    _record(store, "org/older", "CheckpointError", options_hash=fp, version="0.0.1")  # another version's readers
    _record(store, "org/healed", "CheckpointError", options_hash=fp)
    _record(store, "org/healed", "TransientHubError", options_hash=fp, day=1, stage="download")  # last: transient
    _record(store, "org/newrev", "CheckpointError", options_hash=fp, revision="b" * 40)  # the listing has REV
    _record(store, "org/opts", "CheckpointError", options_hash="0" * 16)  # other options
    attempted = ["org/bug", "org/flaky", "org/gated", "org/healed", "org/missing", "org/newrev", "org/older",
                 "org/opts", "org/unseen"]
    items = [WorkItem(repo, REV, "hub", repo) for repo in [*skipped, *attempted]]
    items.append(WorkItem("org/noref", None, "hub", "org/noref"))  # revision resolved later: always attempted

    state = ScanState(settings, scan_id="s1")
    todo = _select(state, list(items), [])
    assert [it.repo_id for it in todo] == sorted([*attempted, "org/noref"])
    assert (state.total, state.skipped, state.skipped_failed) == (len(items), 0, len(skipped))

    # --retry-failed: every one is attempted; a settled one's new failure is the attempt after the recorded one.
    retry = ScanState(ScanSettings(data_root=settings.data_root, retry_failed=True), scan_id="s2")
    todo = _select(retry, list(items), [])
    assert len(todo) == len(items) and retry.skipped_failed == 0
    assert retry.attempts_before == {(repo, REV): 1 for repo in skipped}
    broken = next(it for it in todo if it.repo_id == "org/broken")
    assert retry.fail(broken, StageFailure("read", CheckpointError("bad header")), 1)["attempt"] == 2
    assert store.last_failures(fp)[("org/broken", REV)]["attempt"] == 2
    assert store.read("failures").num_rows == 15  # 14 recorded above, and this new attempt beside them


def test_retry_failed_flag_setting_and_summary_line():
    assert ScanSettings.from_env(environ={}).retry_failed is False
    assert ScanSettings.from_env(environ={"WW_SCAN_RETRY_FAILED": "1"}).retry_failed is True
    assert ScanSettings.from_env(environ={"WW_SCAN_RETRY_FAILED": "1"}, retry_failed=False).retry_failed is False
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    assert parser.parse_args(["scan", "--folder", "x", "--retry-failed"]).retry_failed is True
    assert parser.parse_args(["scan", "--folder", "x"]).retry_failed is False
    summary = {"scan_id": "s", "source": "hub", "requested": 5, "done": 1, "skipped": 2, "skipped_failed": 1,
               "failed": 1, "seconds": 1.0, "models_per_minute": 60.0, "failures": [], "catalog": None}
    text = format_summary(summary)
    assert "2 skipped (already stored), 1 skipped (failed for good before; --retry-failed" in text
    assert "failed before" not in format_summary({**summary, "skipped_failed": 0})


@pytest.mark.slow
def test_folder_rescan_skips_the_broken_model_until_retry_failed(ray_local, prefect_api, tmp_path, monkeypatch):
    monkeypatch.delenv("WW_SCAN_RETRY_FAILED", raising=False)
    make_zoo(tmp_path / "zoo", n_good=1, quantized=False)  # m0, and 'broken' (a truncated header)
    data = str(tmp_path / "data")
    store = ResultStore(data)

    def scan() -> dict:
        return scan_folder(folder=str(tmp_path / "zoo"), data_root=data, workers=2)

    first = scan()
    assert (first["done"], first["skipped"], first["skipped_failed"], first["failed"]) == (1, 0, 0, 1)
    (row,) = store.read("failures").to_pylist()
    assert (row["repo_id"], row["error_type"], row["attempt"]) == ("broken", "CheckpointError", 1)

    # Rescan: m0 is stored, 'broken' failed for good with this version and options: neither is attempted.
    second = scan()
    assert (second["requested"], second["done"], second["skipped"], second["skipped_failed"], second["failed"]) == (
        2, 0, 1, 1, 0), second["failures"]
    assert store.read("failures").to_pylist() == [row]  # no new row, the old one untouched
    cols, rows = run_sql(data, "SELECT n_skipped, n_skipped_failed, n_failed FROM scan_health")
    assert rows == [(1, 1, 0), (0, 0, 1)]  # newest first

    # --retry-failed: attempted again; its failure is a new row, the attempt after the recorded one.
    monkeypatch.setenv("WW_SCAN_RETRY_FAILED", "1")
    third = scan()
    assert (third["done"], third["skipped"], third["skipped_failed"], third["failed"]) == (0, 1, 0, 1)
    assert third["failures"][0]["attempt"] == 2
    rows = sorted(store.read("failures").to_pylist(), key=lambda r: r["attempt"])
    assert [(r["repo_id"], r["error_type"], r["attempt"]) for r in rows] == [
        ("broken", "CheckpointError", 1), ("broken", "CheckpointError", 2)]
