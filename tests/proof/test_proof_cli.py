"""The proof CLI end to end: `zoo build`, `plot`, and the demo on a tiny zoo through the real scan flow."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.cli import build_parser, main
from pipelines.proof.cli import program_name

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


PROOF_COMMANDS = (("zoo", "build"), ("zoo", "fingerprint"), ("validate",), ("plot",), ("report",), ("demo",))


def _subparser(parser, path):
    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return parser


@pytest.mark.parametrize("path", PROOF_COMMANDS, ids=" ".join)
def test_every_proof_help_is_complete_with_defaults(path):
    """Each proof command has a description, and every argument a help text that states its default
    (optional arguments with a default or a switch, and optional positionals)."""
    parser = _subparser(build_parser(), path)
    assert parser.description and len(parser.description) > 40
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, (path, action.dest)
        optional_positional = not action.option_strings and action.nargs == "?"
        has_default = action.option_strings and (action.default not in (None, argparse.SUPPRESS)
                                                 or action.const is not None)
        if optional_positional or has_default or (action.option_strings and not action.required):
            assert "default" in action.help or action.required, (path, action.dest, action.help)


def test_the_help_checker_sees_a_missing_default():
    parser = argparse.ArgumentParser(description="x" * 50)
    parser.add_argument("--workers", type=int, default=2, help="training processes")
    action = next(a for a in parser._actions if a.dest == "workers")
    assert "default" not in action.help  # what the test above would reject


def test_zoo_build_kinds_and_fingerprint(tmp_path, capsys):
    zoo = tmp_path / "tfm"
    assert main(["zoo", "build", str(zoo), "--kind", "transformer", "--tiny", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "(transformer): 4 trained, 0 reused" in out
    fingerprint = out.rsplit("fingerprint ", 1)[1].strip()
    assert main(["zoo", "fingerprint", str(zoo)]) == 0
    assert capsys.readouterr().out.strip() == fingerprint
    with pytest.raises(SystemExit):  # argparse refuses an unknown kind
        main(["zoo", "build", "--kind", "cnn"])
    assert main(["zoo", "fingerprint", str(tmp_path / "nothing")]) == 2
    assert "build the zoo first" in capsys.readouterr().err


def test_program_name_is_what_the_user_can_run_again(tmp_path, monkeypatch):
    script = tmp_path / "bin" / "ww-spectral"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert program_name(str(script)) == str(script)  # not on PATH: the path they ran
    monkeypatch.setenv("PATH", f"{script.parent}:/usr/bin:/bin")
    assert program_name(str(script)) == "ww-spectral"
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert program_name("/x/pipelines/cli.py").endswith(" -m pipelines.cli")


ALLOWED_STDERR = re.compile(r"^(demo: |zoo: |\[ww-spectral\] )")


def _demo(cwd: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    env.pop("PREFECT_LOGGING_LEVEL", None)
    cmd = [sys.executable, "-m", "pipelines.cli", *extra, "demo", "--tiny", "--zoo", "z", "--data", "d",
           "--workers", "2"]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _tables(stdout: str) -> str:
    """The demo's leaderboard and validation tables (without timings and the scan line)."""
    body = stdout.split("Leaderboard of", 1)[1]
    return body.split("zoo fingerprint", 1)[0]


@pytest.mark.slow
def test_demo_end_to_end_on_a_tiny_zoo(tmp_path):
    """The README command on the tiny grid, in fresh processes as a user runs it: quiet stderr, the next
    commands at the end; a second demo in another folder reproduces the zoo and every table bit for bit;
    a third run in the first folder re-uses everything and, with --verbose, lets Prefect speak."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = _demo(tmp_path / "a")
    assert first.returncode == 0, first.stderr[-3000:]
    out = first.stdout
    assert "4 analysed, 0 already stored, 0 failed" in out
    assert "Leaderboard of the mlp zoo by the default ranking" in out and "test acc" in out and "Kendall tau" in out
    assert sum(line.startswith("   ") and "mlp-" in line for line in out.splitlines()) == 4
    assert "randomly initialised models (steps = 0), 1 of 4" in out
    # stderr: only our own progress lines - no Prefect or Ray INFO line, notice or warning
    noise = [line for line in first.stderr.splitlines() if not ALLOWED_STDERR.match(line)]
    assert noise == [], noise
    assert "INFO" not in first.stderr
    # it ends with the commands to run next, and they work as printed
    tail = out.rstrip().splitlines()[-4:]
    assert tail[0].lstrip().startswith(("ww-spectral report", f"{sys.executable} -m pipelines.cli report")) \
        or " report --data d --truth z --out ww-report" in tail[0]
    assert any(" show mlp-" in line for line in tail) and any(" sql --data d " in line for line in tail)
    assert "catalog file: d/catalog.duckdb" in tail[-1]
    assert (tmp_path / "a" / "d" / "catalog.duckdb").is_file() and (tmp_path / "a" / "z" / "truth.csv").is_file()
    sql = tail[-2].split(" sql ", 1)[1].split("   #", 1)[0]
    run_sql = subprocess.run([sys.executable, "-m", "pipelines.cli", "sql", *shlex.split(sql)], cwd=tmp_path / "a",
                             env={**os.environ, "COLUMNS": "80"}, capture_output=True, text=True, timeout=120)
    assert run_sql.returncode == 0 and "(4 rows)" in run_sql.stdout, run_sql.stdout + run_sql.stderr[-2000:]
    # the validate command reads the same catalog and truth
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    val = subprocess.run([sys.executable, "-m", "pipelines.cli", "validate", "--data", "d", "--truth", "z",
                          "--format", "csv"], cwd=tmp_path / "a", env=env, capture_output=True, text=True, timeout=120)
    assert val.returncode == 0, val.stderr[-2000:]
    assert val.stdout.startswith("sweep,metric,direction,n,tau") and "pooled,default_rank" in val.stdout
    # the report redraws every ESD of the scanned models: the scan stored the options their fits used
    rep = subprocess.run([sys.executable, "-m", "pipelines.cli", "report", "--data", "d", "--truth", "z", "--out",
                          "rep"], cwd=tmp_path / "a", env=env, capture_output=True, text=True, timeout=300)
    assert rep.returncode == 0, rep.stderr[-2000:]
    assert "(4 models, 36 layer plots" in rep.stdout  # 3 layers x 3 plots each
    # another fresh demo reproduces the zoo (weights + truth) and every table bit for bit
    other = _demo(tmp_path / "b")
    assert other.returncode == 0, other.stderr[-3000:]
    fingerprint = re.search(r"zoo fingerprint \(weights \+ truth\): (\w+)", out).group(1)
    assert f"zoo fingerprint (weights + truth): {fingerprint};" in other.stdout
    assert _tables(other.stdout) == _tables(out)
    # a rerun re-uses the zoo and the store; --verbose lets Prefect's own log lines through
    again = _demo(tmp_path / "a", "--verbose")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 analysed, 4 already stored" in again.stdout and _tables(again.stdout) == _tables(out)
    assert "not retraining" in again.stderr and "| INFO    | prefect" in again.stderr
