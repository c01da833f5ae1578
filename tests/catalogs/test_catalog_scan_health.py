"""The scan-health view (catalogs/sql/50_scan_health.sql) and `ww-spectral scans`, on planted scans rows:
figures derived from the health columns, scans older than those columns, newest first. A real scan with
failing models fills the same row: tests/pipelines/test_pipelines_rehearsal.py."""

from __future__ import annotations

import datetime as _dt
import json

import pytest
from support.catalog_data import run_cli

from catalogs import catalog
from catalogs.store import ResultStore

T0 = _dt.datetime(2026, 11, 27, 2, 0, tzinfo=_dt.UTC)
STAGES = {"download": 3.0, "prefetch": 40.0, "plan": 2.0, "analyze": 90.0, "assemble": 5.0, "write": 6.0}
FAULTS = [{"stage": "download", "error_type": "GatedRepoError", "failed": 4, "retried": 0},
          {"stage": "download", "error_type": "TransientHubError", "failed": 1, "retried": 3},
          {"stage": "read", "error_type": "CheckpointError", "failed": 2, "retried": 0}]


def _health(**over) -> dict:
    row = {"n_requested": 110, "n_done": 93, "n_skipped": 10, "n_failed": 7, "seconds": 120.0,
           "started_at": T0, "fanout_seconds": 100.0, "slots": 2, "n_retried": 3, "n_batches": 6, "n_batched": 90,
           "bytes_downloaded": 250_000_000, "analysis_seconds": 24.0, "stage_seconds_json": json.dumps(STAGES),
           "timings_json": json.dumps({"list": 1.5, "select": 0.5, "ray_start": 4.0, "fanout": 100.0,
                                       "ray_stop": 1.0, "catalog": 30.0}),
           "faults_json": json.dumps(FAULTS)}
    return row | over


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("health")
    store = ResultStore(root)
    store.write_scan({"scan_id": "old", "source": "hub", "counts": {"done": 5},
                      "started_at": T0 - _dt.timedelta(days=2)})  # a row without the health columns
    store.write_scan({"scan_id": "night1", "source": "hub", **_health()})
    store.write_scan({"scan_id": "night2", "source": "hub",  # a rescan: everything skipped, nothing failed
                      **_health(started_at=T0 + _dt.timedelta(days=1), n_requested=100, n_done=0, n_skipped=100,
                                n_failed=0, seconds=20.0, fanout_seconds=0.0, n_retried=0, bytes_downloaded=0,
                                analysis_seconds=0.0, stage_seconds_json=json.dumps(dict.fromkeys(STAGES, 0.0)),
                                faults_json="[]")})
    return str(root)


def _rows(root: str) -> dict[str, dict]:
    cols, rows = catalog.run_sql(root, "SELECT * FROM scan_health")
    return {r[0]: dict(zip(cols, r)) for r in rows}


def test_figures_come_from_the_health_columns(root):
    h = _rows(root)["night1"]
    assert h["total_s"] == 150.0  # the scan's seconds + the catalog refresh after them
    assert h["models_per_min"] == round(60 * 93 / 150, 1) and h["models_per_min_fanout"] == round(60 * 93 / 100, 1)
    assert (h["mb_downloaded"], h["mb_per_s"]) == (250.0, 2.5)
    work = STAGES["download"] + STAGES["plan"] + 24.0 + STAGES["assemble"] + STAGES["write"]  # not prefetch/analyze
    assert h["orchestration_ms_per_model"] == pytest.approx(1000 * (100 - work / 2) / 100, abs=0.01)
    assert h["failures_by_type"] == "GatedRepoError [download] 4, CheckpointError [read] 2, TransientHubError [download] 1"
    assert h["retries_by_type"] == "TransientHubError [download] 3"
    assert (h["catalog_s"], h["ray_start_s"], h["prefetch_s"], h["analysis_s"]) == (30.0, 4.0, 40.0, 24.0)


def test_rescan_and_old_rows_have_no_made_up_figures(root):
    rows = _rows(root)
    rescan = rows["night2"]
    assert (rescan["models_per_min_fanout"], rescan["orchestration_ms_per_model"], rescan["mb_per_s"]) == (None,) * 3
    assert (rescan["failures_by_type"], rescan["retries_by_type"], rescan["models_per_min"]) == ("", "", 0.0)
    old = rows["old"]
    assert old["n_done"] == 5
    assert all(old[k] is None for k in ("total_s", "mb_downloaded", "failures_by_type", "fanout_s", "write_s"))


def test_scans_command_newest_first(root, capsys):
    assert run_cli(["scans", "--data", root, "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["scan_id"] for r in out] == ["night2", "night1", "old"]
    assert run_cli(["scans", "--data", root, "--last", "1"]) == 0
    text = capsys.readouterr().out
    assert "night2" in text and "night1" not in text
    assert "n_skipped  100" in text and "orchestration_ms_per_model" not in text  # empty figures: no line
    assert run_cli(["scans", "--data", root, "--last", "0"]) == 2
    assert "--last" in capsys.readouterr().err
