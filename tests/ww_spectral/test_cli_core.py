"""`ww-spectral analyze` / `describe` through the real dispatcher (pipelines.cli.main) and the entry point."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import save_file
from support.planted_models import heavy_tailed

from pipelines.cli import main
from ww_spectral.columns import LAYER_COLUMN_NAMES


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    rng = np.random.default_rng(0)
    p = tmp_path_factory.mktemp("cli") / "model.safetensors"
    save_file({"a.weight": heavy_tailed(rng, 64, 32), "a.bias": np.zeros(64, np.float32),
               "b.weight": heavy_tailed(rng, 48, 48)}, str(p))
    return str(p)


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".json"])
def test_analyze_writes_one_row_per_layer(model, tmp_path, suffix, capsys):
    out = tmp_path / f"layers{suffix}"
    assert main(["analyze", model, "--out", str(out), "--no-progress"]) == 0
    if suffix == ".parquet":
        df = pd.read_parquet(out)
    elif suffix == ".csv":
        df = pd.read_csv(out)
    else:
        df = pd.DataFrame(json.loads(out.read_text()))
    assert list(df.columns) == list(LAYER_COLUMN_NAMES)
    assert sorted(df["tensor_name"]) == ["a.weight", "b.weight"]
    assert (df["status"] == "success").all()
    assert "2 rows" in capsys.readouterr().out


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
