"""analyze / analyze_model / describe / analyze_layers / summarize on real safetensors files and mappings."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.numpy import save_file
from support.planted_models import heavy_tailed

import ww_spectral
from ww_spectral.analysis import analyze_layers, make_options, plan_layers
from ww_spectral.checkpoint import open_checkpoint
from ww_spectral.columns import LAYER_COLUMN_NAMES
from ww_spectral.errors import OptionError
from ww_spectral.summary import summarize


def _bad_model() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    nan = heavy_tailed(rng, 40, 30)
    nan[3, 4] = np.nan
    inf = heavy_tailed(rng, 40, 30)
    inf[0, 0] = np.inf
    return {
        "good.weight": heavy_tailed(rng, 80, 40),
        "good.bias": np.zeros(80, dtype=np.float32),
        "nan.weight": nan,
        "inf.weight": inf,
        "zero.weight": np.zeros((40, 30), dtype=np.float32),
        "row.weight": rng.standard_normal((1, 64)).astype(np.float32),  # 1 x N: 1 eigenvalue
        "cube.weight": rng.standard_normal((4, 5, 6)).astype(np.float32),
        "quant.weight": rng.integers(0, 100, (64, 32)).astype(np.int32),
        "rank1.weight": np.outer(rng.standard_normal(50), rng.standard_normal(20)).astype(np.float32),
    }


@pytest.fixture(scope="module")
def bad_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("bad") / "model.safetensors"
    save_file(_bad_model(), str(p))
    return str(p)


def test_every_bad_layer_becomes_a_row_and_the_model_finishes(bad_file):
    m = ww_spectral.analyze_model(bad_file, threads=1)
    assert list(m.layers.columns) == list(LAYER_COLUMN_NAMES)
    t = m.layers.set_index("tensor_name")
    assert len(t) == 9
    assert t.loc["good.weight", "status"] == "success" and 1.5 < t.loc["good.weight", "alpha"] < 10
    for name, code in [("nan.weight", "nonfinite"), ("inf.weight", "nonfinite"), ("zero.weight", "all_zero"),
                       ("rank1.weight", "too_few_evals")]:
        assert t.loc[name, "status"] == "failed", name
        assert t.loc[name, "fit_status"] == code, name
        assert t.loc[name, "skip_reason"], name
        assert math.isnan(t.loc[name, "alpha"]) and t.loc[name, "warning"] == ""
    for name, code in [("good.bias", "not_matrix"), ("row.weight", "size_filter"), ("cube.weight", "not_matrix"),
                       ("quant.weight", "unsupported_dtype")]:
        assert t.loc[name, "status"] == "skipped", name
        assert t.loc[name, "fit_status"] == code, name
        assert t.loc[name, "skip_reason"], name
    assert t.loc["zero.weight", "norm"] == 0 and t.loc["zero.weight", "rank_loss"] == 30
    assert t.loc["rank1.weight", "matrix_rank"] == 1
    s = m.summary
    assert (s["n_tensors"], s["n_layers_analysed"], s["n_layers_failed"], s["n_layers_skipped"]) == (9, 1, 4, 4)
    assert s["alpha"] == pytest.approx(t.loc["good.weight", "alpha"])  # failed layers stay out of the mean


def test_analyze_returns_analysed_and_failed_only(bad_file):
    df = ww_spectral.analyze(bad_file, threads=1)
    assert set(df["status"]) == {"success", "failed"}
    assert list(df.columns) == list(LAYER_COLUMN_NAMES)
    assert df["num_pl_spikes"].dtype == "Int64" and df["alpha"].dtype == np.float64


def test_describe_reads_no_data(bad_file):
    with open_checkpoint(bad_file) as ckpt:
        reads = []
        real_read = ckpt.read
        ckpt.read = lambda *a, **k: reads.append(a) or real_read(*a, **k)
        d = ww_spectral.describe(ckpt)
    assert reads == []
    assert len(d) == 9 and int(d["analysed"].sum()) == 5  # good, nan, inf, zero, rank1
    row = d.set_index("tensor_name").loc["good.weight"]
    assert (row["N"], row["M"], row["rf"], row["num_evals"], row["shape"]) == (80, 40, 1, 40, "80x40")


def test_workers_and_backends_agree(tmp_path):
    rng = np.random.default_rng(5)
    sd = {f"l{i}.weight": heavy_tailed(rng, 60 + 10 * i, 40) for i in range(6)}
    p = tmp_path / "m.safetensors"
    save_file(sd, str(p))
    a = ww_spectral.analyze(str(p), workers=1, threads=1)
    b = ww_spectral.analyze(str(p), workers=2, threads=2)
    c = ww_spectral.analyze(str(p), backend="torch", threads=1)
    pd.testing.assert_frame_equal(a, b)
    assert list(a["tensor_name"]) == list(c["tensor_name"])
    np.testing.assert_allclose(a["alpha"], c["alpha"], atol=1e-3)
    np.testing.assert_allclose(a["norm"], c["norm"], rtol=1e-5)
    assert list(a["num_pl_spikes"]) == list(c["num_pl_spikes"])


def test_analyze_layers_on_a_subset_matches_the_whole(bad_file):
    opts = make_options(precision="float64")
    with open_checkpoint(bad_file) as ckpt:
        plans = plan_layers(ckpt, opts)
        whole = analyze_layers(ckpt, plans, opts, threads=1)
        part = analyze_layers(ckpt, plans[2:4], opts, threads=1)
    assert [r["tensor_name"] for r in part] == [p.tensor_name for p in plans[2:4]]
    assert all(set(r) == set(LAYER_COLUMN_NAMES) for r in part)
    for r in part:
        w = next(x for x in whole if x["tensor_name"] == r["tensor_name"])
        assert r["status"] == w["status"] and (r["norm"] == w["norm"] or math.isnan(r["norm"]))


def test_mapping_and_module_sources():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 16))
    from_module = ww_spectral.analyze(net, threads=1)
    from_mapping = ww_spectral.analyze({k: v.detach().numpy() for k, v in net.state_dict().items()}, threads=1)
    assert list(from_module["longname"]) == ["0", "2"]
    np.testing.assert_allclose(from_module["alpha"], from_mapping["alpha"])
    bf = ww_spectral.analyze({k: v.to(torch.bfloat16) for k, v in net.state_dict().items()}, threads=1)
    assert list(bf["dtype"]) == ["BF16", "BF16"] and (bf["status"] == "success").all()


def test_options_are_validated():
    with pytest.raises(OptionError, match="unknown analysis option"):
        make_options(fixfingers="clip_xmax")
    with pytest.raises(OptionError):
        ww_spectral.analyze({"a.weight": np.ones((10, 10))}, backend="jax")
    with pytest.raises(OptionError):
        ww_spectral.analyze({"a.weight": np.ones((10, 10))}, workers=0)


def test_size_filter_options():
    rng = np.random.default_rng(6)
    sd = {"a.weight": heavy_tailed(rng, 40, 20), "b.weight": heavy_tailed(rng, 40, 30)}
    df = ww_spectral.analyze_model(sd, max_evals=25, threads=1).layers.set_index("tensor_name")
    assert df.loc["a.weight", "status"] == "success" and df.loc["b.weight", "fit_status"] == "size_filter"


def test_summarize_closed_form():
    layers = pd.DataFrame({
        "status": ["success", "success", "success", "failed", "skipped"],
        "alpha": [2.0, 4.0, 7.0, np.nan, np.nan], "alpha_weighted": [1.0, 2.0, 3.0, np.nan, np.nan],
        "log_norm": [1.0, 1.0, 4.0, 9.0, np.nan], "log_alpha_norm": [0.0, 0.0, 3.0, np.nan, np.nan],
        "log_spectral_norm": [1.0, 2.0, 3.0, np.nan, np.nan], "stable_rank": [3.0, 3.0, 3.0, np.nan, np.nan],
        "hill_alpha": [2.0, 3.0, 4.0, np.nan, np.nan],
    })
    s = summarize(layers)
    assert s["alpha"] == pytest.approx(13 / 3) and s["alpha_median"] == 4.0
    assert s["log_norm"] == 2.0  # the failed layer's value stays out
    assert s["share_alpha_2_6"] == pytest.approx(2 / 3)
    assert s["hill_alpha"] == 3.0 and s["hill_alpha_median"] == 3.0 and s["alpha_weighted_median"] == 2.0
    assert (s["n_tensors"], s["n_layers_analysed"], s["n_layers_failed"], s["n_layers_skipped"]) == (5, 3, 1, 1)
    empty = summarize(layers.iloc[3:])
    assert math.isnan(empty["alpha"]) and math.isnan(empty["share_alpha_2_6"])


def test_float32_overflow_is_reported_and_float64_works():
    rng = np.random.default_rng(7)
    sd = {"big.weight": (1e20 * heavy_tailed(rng, 40, 20)).astype(np.float32)}
    r32 = ww_spectral.analyze(sd, threads=1).iloc[0]
    assert r32["status"] == "failed" and r32["fit_status"] == "nonfinite" and "float64" in r32["skip_reason"]
    r64 = ww_spectral.analyze(sd, precision="float64", threads=1).iloc[0]
    assert r64["status"] == "success" and r64["norm"] > 1e40


def test_cores_given_respect_omp_num_threads(monkeypatch):
    from ww_spectral.analysis import available_cores

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    n = available_cores()
    assert n >= 1
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what Ray gives a num_cpus=1 task
    assert available_cores() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "not-a-number")
    assert available_cores() == n


def test_progress_reports_each_layer(capsys):
    rng = np.random.default_rng(8)
    sd = {f"l{i}.weight": heavy_tailed(rng, 30, 20) for i in range(3)}
    ww_spectral.analyze_model(sd, progress=True, threads=1)
    lines = capsys.readouterr().err.splitlines()  # not a terminal: one line per layer (a bar on a tty)
    assert len(lines) == 3
    assert all(f"l{i}.weight" in line and "alpha=" in line for i, line in enumerate(lines))
    ww_spectral.analyze_model(sd, progress=False, threads=1)
    assert capsys.readouterr().err == ""
