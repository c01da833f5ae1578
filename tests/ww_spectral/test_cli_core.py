"""`ww-spectral analyze` / `describe` through the real dispatcher (pipelines.cli.main) and the entry point."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import save_file
from support.planted_models import heavy_tailed

from pipelines.cli import main
from ww_spectral import cli_core
from ww_spectral.columns import LAYER_COLUMN_NAMES


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    rng = np.random.default_rng(0)
    p = tmp_path_factory.mktemp("cli") / "model.safetensors"
    save_file({"a.weight": heavy_tailed(rng, 64, 32), "a.bias": np.zeros(64, np.float32),
               "b.weight": heavy_tailed(rng, 48, 48)}, str(p))
    return str(p)


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".json"])
def test_analyze_out_writes_one_row_per_tensor_skipped_included(model, tmp_path, suffix, capsys):
    out = tmp_path / f"layers{suffix}"
    assert main(["analyze", model, "--out", str(out), "--no-progress"]) == 0
    if suffix == ".parquet":
        df = pd.read_parquet(out)
    elif suffix == ".csv":
        df = pd.read_csv(out)
    else:
        df = pd.DataFrame(json.loads(out.read_text()))
    assert list(df.columns) == list(LAYER_COLUMN_NAMES)
    assert sorted(df["tensor_name"]) == ["a.bias", "a.weight", "b.weight"]
    t = df.set_index("tensor_name")
    assert (t.loc[["a.weight", "b.weight"], "status"] == "success").all()
    assert t.loc["a.bias", "status"] == "skipped" and t.loc["a.bias", "fit_status"] == "not_matrix"
    assert "1-D tensor" in t.loc["a.bias", "skip_reason"]
    assert "3 rows (2 analysed, 0 failed, 1 skipped)" in capsys.readouterr().out


def test_include_skipped_and_options(model, tmp_path):
    out = tmp_path / "all.parquet"
    assert main(["analyze", model, "--out", str(out), "--include-skipped", "--fix-fingers", "clip_xmax",
                 "--precision", "float64", "--backend", "torch", "--workers", "1"]) == 0
    df = pd.read_parquet(out).set_index("tensor_name")
    assert df.loc["a.bias", "status"] == "skipped"
    assert (df.loc[["a.weight", "b.weight"], "raw_alpha"] > 0).all()


def test_table_and_summary_without_out(model, capsys):
    assert main(["analyze", model]) == 0
    text = capsys.readouterr().out
    assert "alpha_weighted" in text and "n_layers_analysed" in text and "share_alpha_2_6" in text
    assert "a.bias" not in text and "1-D tensor" not in text  # the printed table hides skipped tensors ...
    assert main(["analyze", model, "--include-skipped"]) == 0
    assert "1-D tensor" in capsys.readouterr().out  # ... unless asked


def test_help_describes_every_command_and_states_every_default(capsys):
    parser = argparse.ArgumentParser()
    cli_core.register(parser.add_subparsers())
    commands = parser._subparsers._group_actions[0].choices
    for name in ("analyze", "describe"):
        assert commands[name].description, f"{name} --help has no description"
        options = [a for a in commands[name]._actions if a.option_strings and a.dest != "help"]
        assert "allow_external_links" in {a.dest for a in options}
        for action in options:
            assert "default" in (action.help or ""), f"{name} {action.option_strings}: help states no default"
    with pytest.raises(SystemExit):
        main(["describe", "--help"])
    assert "no tensor data is read" in " ".join(capsys.readouterr().out.split())


def test_describe_lists_layers(model, capsys):
    assert main(["describe", model]) == 0
    text = capsys.readouterr().out
    assert "a.weight" in text and "a.bias" in text and "not_matrix" in text and "2 layers to analyse" in text


def test_file_faults_are_one_line_and_exit_2(model, tmp_path):
    exe = [sys.executable, "-m", "pipelines.cli"]
    r = subprocess.run(exe + ["analyze", model, "--out", str(tmp_path / "x.txt")], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and ".parquet" in r.stderr
    assert not (tmp_path / "x.txt").exists()
    r = subprocess.run(exe + ["analyze", str(tmp_path / "missing.safetensors")], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    r = subprocess.run(exe + ["describe", str(broken)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
