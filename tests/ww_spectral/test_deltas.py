"""Fine-tunes against their base (issue 11): `analyze_model(source, base_model=BASE)` adds one delta row
W - W_base per tensor both hold with the same shape (delta_kind base_delta, base_ref repo@revision), skipped
rows with a reason for the others; the model's summary stays its own; the delta rows equal a dense
computation and WeightWatcher 0.7.7's `base_model=` output (in a subprocess, tests/support/ww_oracle_options.py).

Pairs are built here: a base of planted heavy-tailed layers and a "fine-tune" = base + a heavy-tailed
update, plus a tensor of another shape and one the base lacks.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import save_file
from support.planted_models import dense_model, heavy_tailed

import ww_spectral
from ww_spectral import deltas
from ww_spectral.analysis import analyze_model
from ww_spectral.cli_core import register
from ww_spectral.errors import SourceNotFoundError
from ww_spectral.summary import summarize


def _pair(tmp_path, seed: int = 7):
    """(model path, base path, model dict, base dict): model = base + heavy-tailed update per matrix."""
    rng = np.random.default_rng(seed)
    base = dense_model(seed=2)
    model = {}
    for k, v in base.items():
        model[k] = (v + 0.5 * heavy_tailed(rng, *v.shape, 3.0)).astype(np.float32) if v.ndim == 2 else v + 0.01
    model["blocks.0.fc.weight"] = model["blocks.0.fc.weight"].astype(np.float32)
    model["reshaped.weight"] = rng.standard_normal((40, 24)).astype(np.float32)
    base["reshaped.weight"] = rng.standard_normal((24, 40)).astype(np.float32)
    model["new_head.weight"] = rng.standard_normal((50, 20)).astype(np.float32)
    mp, bp = tmp_path / "ft.safetensors", tmp_path / "base.safetensors"
    save_file(model, str(mp))
    save_file(base, str(bp))
    return mp, bp, model, base


def test_delta_rows_beside_own_rows(tmp_path):
    mp, bp, model, base = _pair(tmp_path)
    alone = analyze_model(str(mp))
    both = analyze_model(str(mp), base_model=str(bp))
    layers = both.layers
    own = layers[layers["delta_kind"] == ""]
    dl = layers[layers["delta_kind"] == "base_delta"]
    # the model's own rows are unchanged and come first; the summary is theirs alone
    pd.testing.assert_frame_equal(own.reset_index(drop=True), alone.layers, check_exact=False, rtol=1e-12)
    assert both.summary == pytest.approx(alone.summary, nan_ok=True)
    assert both.summary == pytest.approx(summarize(deltas.own_rows(layers)), nan_ok=True)
    assert list(layers["layer_id"]) == list(range(len(layers)))
    assert (dl["layer_id"] > own["layer_id"].max()).all()
    # one delta row per analysed own layer, with the base's id and revision
    analysed = set(own.loc[own["status"] == "success", "tensor_name"])
    assert set(dl["tensor_name"]) == analysed
    ref = deltas.base_label(ww_spectral.analyze_model(str(bp)).ref)
    assert set(dl["base_ref"]) == {ref} and ref.startswith("base@local-")
    by = dl.set_index("tensor_name")
    assert by.loc["reshaped.weight", "fit_status"] == "base_shape" and "24x40" in by.loc["reshaped.weight", "skip_reason"]
    assert by.loc["new_head.weight", "fit_status"] == "base_missing"
    assert by.loc["reshaped.weight", "status"] == "skipped"
    # the delta rows are the ESD of W - W_base, computed densely here
    for name in ("blocks.0.fc.weight", "blocks.2.fc.weight", "small.weight"):
        d = model[name].astype(np.float64) - base[name].astype(np.float64)
        ev = np.linalg.eigvalsh(d.T @ d if d.shape[0] >= d.shape[1] else d @ d.T)
        row = by.loc[name]
        assert row["status"] == "success" and row["num_evals"] == min(d.shape)
        assert row["lambda_max"] == pytest.approx(ev[-1], rel=1e-5)
        assert row["norm"] == pytest.approx(ev.sum(), rel=1e-5)
        assert row["alpha"] != pytest.approx(own.set_index("tensor_name").loc[name, "alpha"], rel=1e-3)
    s = deltas.delta_summary(layers)
    fitted = dl[dl["status"] == "success"]
    assert s["n_delta_layers"] == len(dl) and s["n_delta_fitted"] == len(fitted) > 0
    assert s["delta_alpha"] == pytest.approx(float(np.median(fitted["alpha"])))
    assert s["base_ref"] == ref
    assert deltas.delta_summary(alone.layers)["n_delta_layers"] == 0


def test_float64_and_identical_base(tmp_path):
    mp, bp, model, base = _pair(tmp_path)
    f64 = analyze_model(str(mp), base_model=str(bp), precision="float64").layers
    row = f64[(f64["delta_kind"] == "base_delta") & (f64["tensor_name"] == "blocks.1.fc.weight")].iloc[0]
    d = model["blocks.1.fc.weight"].astype(np.float64) - base["blocks.1.fc.weight"].astype(np.float64)
    assert row["lambda_max"] == pytest.approx(np.linalg.norm(d, 2) ** 2, rel=1e-10)
    # a model against itself: every delta is zero, a failed row that says so, never a fit of noise
    same = analyze_model(str(mp), base_model=str(mp)).layers
    dl = same[same["delta_kind"] == "base_delta"]
    assert (dl.loc[dl["status"] != "skipped", "fit_status"] == "all_zero").all()


def test_bad_base_is_one_typed_error(tmp_path):
    mp, _, _, _ = _pair(tmp_path)
    other = tmp_path / "other.safetensors"
    save_file({"unrelated.weight": np.ones((30, 20), np.float32)}, str(other))
    with pytest.raises(deltas.BaseModelError, match="shares no float tensor"):
        analyze_model(str(mp), base_model=str(other))
    with pytest.raises(SourceNotFoundError, match="^base model: "):
        analyze_model(str(mp), base_model=str(tmp_path / "missing"))


def test_pair_reopens_from_a_picklable_source(tmp_path):
    mp, bp, model, base = _pair(tmp_path)
    src = pickle.loads(pickle.dumps(deltas.BaseSource(str(mp), str(bp))))
    with deltas.open_source(src) as pair:
        plan = deltas.plan_with_base(pair, None)
        assert pair.source == src and pair.base_ref.repo_id == "base"
        p = next(p for p in plan.layers if p.read_kind == "base_delta" and p.analysed)
        np.testing.assert_array_equal(deltas.read_base_delta(pair, p), model[p.tensor_name] - base[p.tensor_name])
        rows = ww_spectral.analysis.analyze_layers(pair, plan.layers, plan.options, workers=1)
    ref = analyze_model(str(mp), base_model=str(bp)).layers
    got = ww_spectral.model.assemble_model(plan, rows, seconds=0).layers
    pd.testing.assert_frame_equal(got, ref)
    # a plain SOURCE opens as itself
    with deltas.open_source(str(mp)) as ckpt:
        assert ckpt.ref.repo_id == "ft"


def test_cli_base_model(tmp_path, capsys):
    import argparse

    from pipelines.cli import main

    mp, bp, _, _ = _pair(tmp_path)
    out = tmp_path / "rows.parquet"
    assert main(["analyze", str(mp), "--base-model", str(bp), "--out", str(out), "--no-progress"]) == 0
    rows = pd.read_parquet(out)
    assert set(rows["delta_kind"]) == {"", "base_delta"}
    assert "delta rows: base_delta x" in capsys.readouterr().out
    assert main(["analyze", str(mp), "--base-model", str(tmp_path / "nope"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ww-spectral: error: base model: ") and "\n" not in err
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    assert parser.parse_args(["analyze", "x", "--base-model", "org/base@v1"]).base_model == "org/base@v1"


@pytest.fixture(scope="module")
def ww_base_model(tmp_path_factory):
    """The pair and WeightWatcher 0.7.7's analyze(base_model=) of it, run once (in a subprocess)."""
    from support.ww_oracle_options import frame, run_calls

    tmp_path = tmp_path_factory.mktemp("ww_base_model")
    rng = np.random.default_rng(11)
    base = dense_model(seed=2)
    model = {k: (v + 0.5 * heavy_tailed(rng, *v.shape, 3.0)).astype(np.float32) if v.ndim == 2 else v + 0.01
             for k, v in base.items()}
    mp, bp = tmp_path / "ft.safetensors", tmp_path / "base.safetensors"
    save_file(model, str(mp))
    save_file(base, str(bp))
    (res,) = run_calls([{"model": {"safetensors": str(mp)}, "base_model": {"safetensors": str(bp)},
                         "calls": [["analyze", {}]]}])
    return mp, bp, frame(res[0]).set_index("name")


@pytest.mark.parity
@pytest.mark.slow
@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_delta_rows_match_weightwatcher_base_model(ww_base_model, precision):
    """WeightWatcher 0.7.7's analyze() with base_model= on the same pair (its rows are W - W_base of every
    layer both hold): alpha, D within 1e-3 (float32) / 1e-7 (float64), the norm columns within 1e-5 / 1e-7."""
    mp, bp, ww = ww_base_model
    layers = analyze_model(str(mp), base_model=str(bp), precision=precision).layers
    ours = layers[(layers["delta_kind"] == "base_delta") & (layers["status"] == "success")].set_index("longname")
    assert set(ww.index) == set(ours.index)
    # float64: WW subtracts the stored float32 tensors in float32, we in float64 (read_base_delta), so the
    # deltas themselves differ by float32 rounding (~1e-8 relative); the arithmetic after is the same
    fit_tol, norm_tol = (1e-3, 1e-5) if precision == "float32" else (1e-7, 1e-7)
    worst = {}
    for name, w in ww.iterrows():
        o = ours.loc[name]
        assert int(o["num_evals"]) == int(w["num_evals"]) and int(o["N"]) == int(w["N"])
        for c, tol in (("alpha", fit_tol), ("D", fit_tol), ("lambda_max", norm_tol), ("norm", norm_tol),
                       ("log_spectral_norm", norm_tol), ("stable_rank", norm_tol)):
            rel = abs(o[c] - w[c]) / max(abs(w[c]), 1e-300)
            worst[c] = max(worst.get(c, 0.0), rel)
            assert rel <= tol, (name, c, o[c], w[c])
    print(f"base_model parity ({precision}, {len(ww)} layers): worst relative differences {worst}")


def test_expert_stacks_give_one_delta_per_expert(tmp_path):
    """A mixture-of-experts fine-tune: each expert of a 3-D stack gets its own delta row (expert column set),
    W_e - W_base,e read from both stacks the same way (ww_spectral/experts.py)."""
    import json

    rng = np.random.default_rng(3)
    name = "model.layers.0.mlp.experts.down_proj"
    base = {name: rng.standard_normal((4, 32, 48)).astype(np.float32),
            "model.layers.0.self_attn.q_proj.weight": rng.standard_normal((32, 32)).astype(np.float32)}
    ft = {k: (v + 0.1 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in base.items()}
    for folder, sd in (("base", base), ("ft", ft)):
        (tmp_path / folder).mkdir()
        save_file(sd, str(tmp_path / folder / "model.safetensors"))
        (tmp_path / folder / "config.json").write_text(json.dumps({"hidden_size": 32, "model_type": "mixtral"}))
    layers = analyze_model(str(tmp_path / "ft"), base_model=str(tmp_path / "base")).layers
    dl = layers[(layers["delta_kind"] == "base_delta") & (layers["tensor_name"] == name)]
    assert sorted(dl["expert"]) == [0, 1, 2, 3] and (dl["status"] == "success").all()
    for _, row in dl.iterrows():
        d = ft[name][int(row["expert"])].astype(np.float64) - base[name][int(row["expert"])]
        assert row["lambda_max"] == pytest.approx(np.linalg.norm(d, 2) ** 2, rel=1e-5)
    # a base whose stack holds another number of experts: a skipped row per expert, with the shapes
    save_file({**base, name: base[name][:3]}, str(tmp_path / "base" / "model.safetensors"))
    layers = analyze_model(str(tmp_path / "ft"), base_model=str(tmp_path / "base")).layers
    dl = layers[(layers["delta_kind"] == "base_delta") & (layers["tensor_name"] == name)]
    assert (dl["fit_status"] == "base_shape").all() and dl["skip_reason"].str.contains("3x32x48").all()


_FORKED = """
import sys
from ww_spectral import analysis
analysis._MIN_FORK_FLOPS = 0.0
calls = []
real = analysis._analyse_in_processes
analysis._analyse_in_processes = lambda *a, **k: calls.append(1) or real(*a, **k)
layers = analysis.analyze_model(sys.argv[1], base_model=sys.argv[2], workers=2, threads=2).layers
layers.to_parquet(sys.argv[3])
print("forked" if calls else "in process")
"""


def test_forked_workers_read_the_pair(tmp_path):
    """Layers analysed by forked worker processes (analysis._analyse_in_processes) read deltas as in process.
    Run in a fresh interpreter: this test process may hold other threads (Ray, Prefect) and then never forks."""
    mp, bp, _, _ = _pair(tmp_path)
    serial = analyze_model(str(mp), base_model=str(bp), workers=1).layers
    out = tmp_path / "forked.parquet"
    done = subprocess.run([sys.executable, "-c", _FORKED, str(mp), str(bp), str(out)], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "forked"
    pd.testing.assert_frame_equal(pd.read_parquet(out), serial)


def test_base_with_a_model_prefix_is_matched(tmp_path):
    """A ...ForCausalLM fine-tune against its bare base (names differ by a leading "model."): same deltas."""
    mp, bp, model, base = _pair(tmp_path)
    prefixed = tmp_path / "prefixed.safetensors"
    save_file({f"model.{k}": v for k, v in base.items()}, str(prefixed))
    plain = analyze_model(str(mp), base_model=str(bp)).layers
    other = analyze_model(str(mp), base_model=str(prefixed)).layers
    cols = ["tensor_name", "status", "fit_status", "alpha", "lambda_max", "norm"]
    pd.testing.assert_frame_equal(other[cols], plain[cols])
    assert deltas.base_name("blocks.0.fc.weight", {"model.blocks.0.fc.weight": None}) == "model.blocks.0.fc.weight"
    assert deltas.base_name("base_model.model.score.weight", {"score.weight": None}) == "score.weight"
    assert deltas.base_name("x.weight", {"y.weight": None}) is None
