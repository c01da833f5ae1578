"""Quiet output by default (issue 13): `ww-spectral scan` prints only its own progress lines on stderr;
Prefect's and Ray's log lines and notices (Ray's token-authentication warning, Prefect's temporary-server
notice and flow-run INFO lines) only with the global --verbose (pipelines/ray_runtime.py quiet_output).

Run as a user runs it: `python -m pipelines.cli scan --folder DIR --data D` in a subprocess, on a folder
holding one two-layer model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.checkpoints import random_tensors, write_safetensors

REPO = Path(__file__).resolve().parents[2]
CHATTER = ("Token authentication", "| INFO    |", "Starting temporary server")


def _scan(tmp_path: Path, *, verbose: bool) -> subprocess.CompletedProcess:
    folder = tmp_path / "models" / "tiny"
    if not folder.exists():
        folder.mkdir(parents=True)
        write_safetensors(folder / "model.safetensors", random_tensors({"fc1.weight": (48, 24)}, seed=1))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "PREFECT_LOGGING_LEVEL")}
    data = tmp_path / ("data-verbose" if verbose else "data-quiet")
    argv = [sys.executable, "-m", "pipelines.cli", *(["--verbose"] if verbose else []), "scan",
            "--folder", str(tmp_path / "models"), "--data", str(data), "--workers", "1"]
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)


@pytest.mark.slow
def test_scan_is_quiet_unless_verbose(tmp_path):
    quiet = _scan(tmp_path, verbose=False)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "1 analysed" in quiet.stdout
    assert not [line for line in quiet.stderr.splitlines() if any(c in line for c in CHATTER)], quiet.stderr
    assert all(line.startswith("[ww-spectral]") for line in quiet.stderr.splitlines() if line.strip()), quiet.stderr
    loud = _scan(tmp_path, verbose=True)
    assert loud.returncode == 0, loud.stderr[-2000:]
    assert "Token authentication" in loud.stderr and "| INFO    |" in loud.stderr, loud.stderr
