"""Fast checks of the scan's settings, deadlines and printed lines (no Ray, no Prefect run)."""

from __future__ import annotations

import ast
import io
import threading
from pathlib import Path

import pytest

from pipelines.deadline import Deadline
from pipelines.faults import StageFailure
from pipelines.listing import WorkItem
from pipelines.scan_cli import format_summary
from pipelines.scan_state import ScanState
from pipelines.settings import ScanSettings
from ww_spectral.errors import CheckpointError, OptionError
from ww_spectral.progress import ProgressReporter

ROOT = Path(__file__).resolve().parents[2]
FORGED = "x\n[ww-spectral] scan 9/9: done 9 | failed 0"


def test_settings_read_the_environment_once_and_flags_win():
    env = {"WW_SCAN_RETRIES": "1", "WW_SCAN_RETRY_DELAY_S": "0.25", "WW_SCAN_MODEL_TIMEOUT_S": "30",
           "WW_SCAN_CHUNK_BYTES": "1e6", "WW_SCAN_PREWARM": "1", "WW_SCAN_PROGRESS": "0",
           "WW_HUB_TIMEOUT_S": "5", "WW_HUB_MAX_ATTEMPTS": "2"}
    s = ScanSettings.from_env(environ=env, data_root="d", workers=2)
    assert (s.data_root, s.workers, s.retries, s.retry_delay_s, s.model_timeout_s, s.chunk_bytes) == (
        "d", 2, 1, 0.25, 30.0, 1_000_000)
    assert (s.prewarm, s.progress, s.hub.timeout_s, s.hub.max_attempts) == (True, False, 5.0, 2)
    # A flag given explicitly wins over the environment; None means "not given".
    assert ScanSettings.from_env(environ=env, retries=5, workers=None).retries == 5
    # Nothing set: the documented defaults.
    d = ScanSettings.from_env(environ={})
    assert (d.retries, d.retry_delay_s, d.model_timeout_s, d.chunk_bytes, d.prewarm, d.progress) == (
        3, 2.0, 6 * 3600.0, 512 * 2**20, False, False)
    assert d.fingerprint == d.options.fingerprint()
    with pytest.raises(AttributeError):
        d.retries = 1  # frozen


@pytest.mark.parametrize("env, flags", [
    ({"WW_SCAN_RETRIES": "three"}, {}),
    ({"WW_SCAN_MODEL_TIMEOUT_S": "0"}, {}),
    ({"WW_SCAN_RETRIES": "-1"}, {}),
    ({}, {"workers": 0}),
    ({}, {"no_such_setting": 1}),
])
def test_bad_settings_are_one_line_option_errors(env, flags):
    with pytest.raises(OptionError) as info:
        ScanSettings.from_env(environ=env, **flags)
    assert "\n" not in str(info.value)


def test_only_settings_and_ray_runtime_read_the_environment():
    """Every WW_SCAN_*/WW_HUB_* variable is read in one place (pipelines/settings.py); ray_runtime reads
    Ray's own variables and sets the telemetry defaults; scan_cli only sets two for the flows it runs."""
    readers = {}
    for path in sorted((ROOT / "pipelines").glob("*.py")):
        tree = ast.parse(path.read_text())
        hits = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Attribute)
                and n.attr in ("environ", "getenv") and getattr(n.value, "id", None) == "os"]
        if hits:
            readers[path.name] = hits
    assert set(readers) == {"settings.py", "ray_runtime.py", "scan_cli.py"}, readers


def test_deadline_stops_waiting_for_a_step_that_hangs():
    release, returned = threading.Event(), threading.Event()

    def hanging_read() -> None:
        release.wait(120)
        returned.set()

    with pytest.raises(TimeoutError, match="reading a FIFO exceeded the model's timeout"):
        Deadline(0.2).call(hanging_read, what="reading a FIFO")
    assert not returned.is_set()  # it stopped waiting while the step still hung (not: waited it out)
    release.set()
    # Results and exceptions of a step that finishes in time come through unchanged.
    assert Deadline(5).call(lambda: 42, what="x") == 42
    with pytest.raises(CheckpointError, match="bad"):
        Deadline(5).call(lambda: (_ for _ in ()).throw(CheckpointError("bad")), what="x")
    with pytest.raises(TimeoutError):
        Deadline(0).call(lambda: 1, what="already late")


def test_progress_and_summary_lines_escape_names(tmp_path):
    stream = io.StringIO()
    settings = ScanSettings(data_root=str(tmp_path / "data"), progress=True)
    state = ScanState(settings, scan_id="s", reporter=ProgressReporter(enabled=True, stream=stream))
    state.total = 2
    item = WorkItem(FORGED, None, "local", str(tmp_path))
    row = state.fail(item, StageFailure("read", CheckpointError(f"{FORGED}: bad header")), 1)
    state.finished(WorkItem("ok\rfake", "r" * 40, "local", "."), {"status": "done", "seconds": 0.1})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and all(line.startswith("[ww-spectral] scan ") for line in lines)
    assert "x\\n[ww-spectral]" in lines[0] and "ok\\rfake" in lines[1]
    assert row["repo_id"] == FORGED  # stored as it is; only printing escapes
    summary = {"scan_id": "s", "source": "folder", "requested": 2, "done": 1, "skipped": 0, "failed": 1,
               "seconds": 1.0, "models_per_minute": 60.0, "failures": [row], "catalog": None}
    text = format_summary(summary)
    assert len(text.splitlines()) == 2 and "x\\n[ww-spectral]" in text
