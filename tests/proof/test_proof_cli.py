"""The proof CLI end to end: `zoo build`, `plot`, and the demo on a tiny zoo through the real scan flow."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_zoo_build_and_plot_commands(tmp_path, capsys):
    zoo = tmp_path / "zoo"
    assert main(["zoo", "build", str(zoo), "--tiny", "--workers", "1"]) == 0
    assert "4 trained, 0 reused" in capsys.readouterr().out
    assert main(["zoo", "build", str(zoo), "--tiny", "--workers", "1"]) == 0
    assert "0 trained, 4 reused" in capsys.readouterr().out
    model = next(p for p in sorted(zoo.iterdir()) if p.is_dir())
    out = tmp_path / "plots"
    assert main(["plot", str(model), "--layer", "mlp.fc2", "--out", str(out)]) == 0
    files = [Path(line) for line in capsys.readouterr().out.split()]
    assert {f.name for f in files} == {"alpha_by_depth.png", "alpha_hist.png", "mlp.fc2.esd.png",
                                       "mlp.fc2.log10_hist.png", "mlp.fc2.d_vs_xmin.png"}
    for f in files:
        assert struct.unpack(">II", f.read_bytes()[16:24]) == (640, 480)
    # a layer that does not exist: one line naming the layers, exit 2
    assert main(["plot", str(model), "--layer", "nope", "--out", str(out)]) == 2
    assert "mlp.fc1" in capsys.readouterr().err


def test_validate_without_truth_file_is_one_line_error(tmp_path, capsys):
    assert main(["validate", "--data", str(tmp_path), "--truth", str(tmp_path / "missing.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "zoo build" in err


@pytest.mark.slow
def test_demo_end_to_end_on_a_tiny_zoo(tmp_path):
    """The README command on the tiny grid, in a fresh process as a user runs it; a second run re-uses all."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "pipelines.cli", "demo", "--tiny", "--zoo", "z", "--data", "d", "--workers", "2"]
    first = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=500)
    assert first.returncode == 0, first.stderr[-3000:]
    out = first.stdout
    assert "4 analysed, 0 already stored, 0 failed" in out
    assert "Leaderboard by alpha_weighted" in out and "test acc" in out and "Kendall tau" in out
    assert sum(line.startswith("   ") and "mlp-" in line for line in out.splitlines()) == 4
    assert (tmp_path / "d" / "catalog.duckdb").is_file() and (tmp_path / "z" / "truth.csv").is_file()
    # the validate command reads the same catalog and truth
    val = subprocess.run([sys.executable, "-m", "pipelines.cli", "validate", "--data", "d", "--truth", "z",
                          "--format", "csv"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert val.returncode == 0, val.stderr[-2000:]
    assert val.stdout.startswith("sweep,metric,direction,n,tau") and "pooled,alpha_weighted" in val.stdout
    # the report redraws every ESD of the scanned models: the scan stored the options their fits used
    rep = subprocess.run([sys.executable, "-m", "pipelines.cli", "report", "--data", "d", "--truth", "z", "--out",
                          "rep"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert rep.returncode == 0, rep.stderr[-2000:]
    assert "(4 models, 36 layer plots" in rep.stdout  # 3 layers x 3 plots each
    second = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=500)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "0 analysed, 4 already stored" in second.stdout
    assert "not retraining" in second.stderr
