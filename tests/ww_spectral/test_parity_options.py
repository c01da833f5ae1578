"""Parity of the options of issue 10 with WeightWatcher 0.7.7, run once in ONE subprocess for the module
(tests/support/ww_oracle_options.py): mp_fit columns, layer selection, pool=False, conv1d modules,
glorot_fix, the randomized ESD's draw-independent statistics over seeds, and planted correlation traps.

Models are built here: planted heavy-tailed dense / conv2d / embedding layers (as test_parity_ww.py), a bf16
copy, an nn.Module with Conv1d layers, and a model with planted correlation traps (a few large elements in
a random matrix, which leave spikes in the randomized ESD).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import save_file as save_numpy
from support.planted_models import conv_model, dense_model, embedding_model, heavy_tailed
from support.ww_oracle_options import frame, run_calls

import ww_spectral
from ww_spectral.columns import MP_COLUMNS

pytestmark = [pytest.mark.parity, pytest.mark.slow]

SEEDS = (0, 1, 2, 3, 4)
FAMILIES = ("dense", "conv", "embed", "bf16")
TRAPS = {"trapped.weight": [(5, 7), (120, 33), (250, 140)], "one_trap.weight": [(17, 99)]}
MP_FLOAT = ("sigma_mp", "mp_softrank", "bulk_max", "bulk_min")


def _traps_model(seed: int = 5) -> dict[str, np.ndarray]:
    """Random layers; two get a few planted large elements (correlation traps), two stay clean."""
    rng = np.random.default_rng(seed)
    sd = {"clean.weight": (0.02 * rng.standard_normal((300, 150))).astype(np.float32),
          "heavy.weight": heavy_tailed(rng, 200, 100, 3.0)}
    for name, cells in TRAPS.items():
        w = (0.02 * rng.standard_normal((300, 150))).astype(np.float32)
        for r, c in cells:
            w[r, c] = 1.5  # ~75 sigma: a spike of ~2.25 far beyond the MP edge (~0.44)
        sd[name] = w
    return sd


def _conv1d_module(path):
    import torch

    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv1d(16, 32, 9), torch.nn.Linear(64, 48), torch.nn.Conv1d(12, 40, 10),
                            torch.nn.Conv1d(8, 8, 3))  # the last: M = 3 < min_evals, skipped by both
    torch.save(m, path)
    return m


@pytest.fixture(scope="module")
def parity(tmp_path_factory):
    import torch
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("parity_options")
    files = {}
    for name, sd in {"dense": dense_model(), "conv": conv_model(), "embed": embedding_model(),
                     "traps": _traps_model()}.items():
        files[name] = d / f"{name}.safetensors"
        save_numpy(sd, str(files[name]))
    files["bf16"] = d / "bf16.safetensors"
    save_file({k: torch.from_numpy(v).to(torch.bfloat16) for k, v in dense_model(seed=3).items()}, str(files["bf16"]))
    module = _conv1d_module(d / "conv1d.pt")

    def st(name):
        return {"safetensors": str(files[name])}

    jobs = [{"model": st(f), "calls": [["analyze", {"mp_fit": True}]]} for f in FAMILIES]
    jobs.append({"model": st("dense"), "calls": [
        ["analyze", {}], ["analyze", {"layers": [1, 5]}], ["analyze", {"layers": [-3]}],
        ["analyze", {"layers": ["blocks.2.fc", "small"]}], ["analyze", {"glorot_fix": True}],
        ["analyze", {"min_evals": 50, "max_evals": 150, "max_N": 200}]]})
    jobs.append({"model": st("conv"), "calls": [["analyze", {"pool": False, "mp_fit": True}],
                                                ["analyze", {"layers": ["conv2d"]}]]})
    jobs.append({"model": {"module": str(d / "conv1d.pt")}, "calls": [["analyze", {"mp_fit": True}]]})
    jobs += [{"model": st("traps"), "np_seed": s, "calls": [["analyze", {"randomize": True}]]} for s in SEEDS]
    out = run_calls(jobs)
    ww = dict(zip(FAMILIES, (frame(r[0]) for r in out[:4])))
    dense_calls = [frame(r) for r in out[4]]
    conv_calls = [frame(r) for r in out[5]]
    return {"files": files, "module": module, "mp": ww, "dense": dense_calls, "conv": conv_calls,
            "conv1d": frame(out[6][0]), "rand": [frame(r[0]) for r in out[7:]]}


def _rel(a, b) -> float:
    return abs(float(a) - float(b)) / max(abs(float(b)), 1e-300)


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("family", FAMILIES)
def test_mp_fit_columns_match_weightwatcher(parity, family, precision):
    ours = ww_spectral.analyze(str(parity["files"][family]), mp_fit=True, precision=precision,
                               ww_compat_conv_nm=True).set_index("longname")
    ww = parity["mp"][family].set_index("name")
    assert set(ww.index) == set(ours.index[ours["status"] == "success"])
    # float64: the same arithmetic path as WW (1e-9); float32: the default columns' tolerance (alpha's 1e-3
    # for the fitted quantities, the norm columns' 1e-5 for W_scale)
    fit_tol, norm_tol = (1e-9, 1e-9) if precision == "float64" else (1e-3, 1e-5)
    for name, w in ww.iterrows():
        o = ours.loc[name]
        assert int(o["num_spikes"]) == int(w["num_spikes"]), (name, o["num_spikes"], w["num_spikes"])
        assert _rel(o["W_scale"], w["W_scale"]) <= norm_tol, (name, o["W_scale"], w["W_scale"])
        for c in MP_FLOAT:
            assert _rel(o[c], w[c]) <= fit_tol, (name, c, o[c], w[c])
    off = ww_spectral.analyze(str(parity["files"][family]))
    assert off[list(MP_COLUMNS)].isna().all().all()  # the columns exist and are null when mp_fit is off


def _by_name(df: pd.DataFrame, col: str = "name") -> list[str]:
    return sorted(df[col])


def test_layer_selection_and_size_filters_match_weightwatcher(parity):
    path = str(parity["files"]["dense"])
    full, ids, minus, names, glorot, sized = parity["dense"]
    ww_id = dict(zip(full["layer_id"].astype(int), full["name"]))
    watcher = ww_spectral.WeightWatcher(model=path)
    assert _by_name(watcher.analyze(layers=[1, 5])) == _by_name(ids)
    assert _by_name(watcher.analyze(layers=[-3])) == _by_name(minus)
    assert len(ids) == 2 and len(minus) == len(full) - 1
    assert _by_name(watcher.analyze(layers=["blocks.2.fc", "small"])) == _by_name(names)
    # the same selections in ww-spectral's own terms: tensor names / globs
    kept = [f"{ww_id[i]}.weight" for i in (1, 5)]
    assert _by_name(ww_spectral.analyze(path, layers=kept), "longname") == _by_name(ids)
    assert _by_name(ww_spectral.analyze(path, include=[kept[0], kept[1][:-8] + "*"]), "longname") == _by_name(ids)
    excl = ww_spectral.analyze(path, exclude=[f"{ww_id[3]}*"])
    assert _by_name(excl, "longname") == _by_name(minus)
    ours = ww_spectral.analyze(path, min_evals=50, max_evals=150, max_N=200)
    assert _by_name(ours, "longname") == _by_name(sized)
    # WW's glorot_fix is a no-op (it stores the flag as 'glorot_fit', reads 'glorot_fix'): its numbers equal the
    # default's. Ours rescales W by sqrt((N+M)/2): alpha and D are scale-free and agree, the norms scale.
    g = ww_spectral.analyze(path, glorot_fix=True, precision="float64").set_index("longname")
    for _, w in glorot.iterrows():
        d = full.set_index("name").loc[w["name"]]
        assert w["norm"] == pytest.approx(d["norm"], rel=1e-12)
        o = g.loc[w["name"]]
        assert o["alpha"] == pytest.approx(w["alpha"], abs=1e-9) and o["D"] == pytest.approx(w["D"], abs=1e-9)
        assert o["norm"] == pytest.approx(w["norm"] * (o["N"] + o["M"]) / 2, rel=1e-9)


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_pool_false_rows_match_weightwatcher(parity, precision):
    ww, conv2d_only = parity["conv"]
    path = str(parity["files"]["conv"])
    ours = ww_spectral.analyze(path, pool=False, mp_fit=True, precision=precision, ww_compat_conv_nm=True)
    assert len(ours) == len(ww)
    key = ["longname", "slice_id"]
    ours = ours.assign(slice_id=ours["slice_id"].astype(int)).set_index(key).sort_index()
    ww = ww.assign(longname=ww["name"], slice_id=ww["slice_id"].astype(int)).set_index(key).sort_index()
    assert list(ours.index) == list(ww.index)
    tol = 1e-9 if precision == "float64" else 1e-5
    for idx, w in ww.iterrows():
        o = ours.loc[idx]
        assert int(o["num_evals"]) == int(w["num_evals"]) and int(o["rf"]) == int(w["rf"])
        assert _rel(o["lambda_max"], w["lambda_max"]) <= tol and _rel(o["norm"], w["norm"]) <= tol, idx
        assert abs(o["alpha"] - w["alpha"]) <= (1e-9 if precision == "float64" else 1e-3), idx
        assert int(o["num_spikes"]) == int(w["num_spikes"]), idx
    sel = ww_spectral.analyze(path, layers=["conv2d"])
    assert _by_name(sel, "longname") == _by_name(conv2d_only)


def test_conv1d_module_matches_weightwatcher(parity):
    ww = parity["conv1d"].set_index("name")
    ours = ww_spectral.WeightWatcher(model=parity["module"]).analyze(mp_fit=True, precision="float64")
    ours = ours.set_index("name")
    assert list(ours.index) == list(ww.index) and list(ours["layer_type"]) == list(ww["layer_type"])
    assert list(ours["layer_id"]) == list(ww["layer_id"].astype(int))
    for c in ("N", "M", "rf", "num_evals", "num_pl_spikes", "num_spikes", "matrix_rank"):
        assert [int(v) for v in ours[c]] == [int(v) for v in ww[c]], c
    for c in ("alpha", "D", "lambda_max", "norm", "sv_min", "entropy", "sigma_mp", "mp_softrank"):
        np.testing.assert_allclose(ours[c].to_numpy(float), ww[c].to_numpy(float), rtol=1e-9, err_msg=c)
    # a 3-D tensor in a file stays skipped by default (WW's state-dict path skips it too)
    layers = ww_spectral.analyze_model({k: v.detach().numpy() for k, v in parity["module"].state_dict().items()})
    assert set(layers.layers.loc[layers.layers["layer_type"] == "other", "fit_status"]) <= {"not_matrix"}


def _ours_randomized(path: str, seeds=SEEDS) -> list[pd.DataFrame]:
    return [ww_spectral.analyze(path, randomize=True, seed=s).set_index("longname") for s in seeds]


def test_randomized_statistics_match_weightwatcher_over_seeds(parity):
    ours = _ours_randomized(str(parity["files"]["traps"]))
    ww = [f.set_index("name") for f in parity["rand"]]
    for name in ww[0].index:
        w_scale = [f.loc[name, "rand_W_scale"] for f in ww]
        # a shuffle keeps every element: W_scale of the randomized ESD is the layer's, for every draw
        assert max(_rel(o.loc[name, "rand_W_scale"], w_scale[0]) for o in ours) <= 1e-5
        for col, tol in (("rand_sigma_mp", 0.03), ("rand_bulk_max", 0.06), ("max_rand_eval", 0.1)):
            mw = np.mean([f.loc[name, col] for f in ww])
            mo = np.mean([o.loc[name, col] for o in ours])
            assert _rel(mo, mw) <= tol, (name, col, mo, mw)
        # rand_distance: the two distributions over seeds overlap (means within 4 pooled standard errors)
        dw = np.array([f.loc[name, "rand_distance"] for f in ww])
        do = np.array([o.loc[name, "rand_distance"] for o in ours])
        se = math.sqrt((dw.var(ddof=1) + do.var(ddof=1)) / len(SEEDS)) + 1e-3 * abs(dw.mean())
        assert abs(do.mean() - dw.mean()) <= 4 * se, (name, do, dw)


def test_planted_correlation_traps_found_by_both(parity):
    ours = _ours_randomized(str(parity["files"]["traps"]))
    for f in parity["rand"]:
        w = f.set_index("name")
        for name in ("clean", "heavy"):
            assert int(w.loc[name, "num_traps"]) == 0
        for tensor, cells in TRAPS.items():
            assert int(w.loc[tensor[:-7], "num_traps"]) == len(cells)
    for o in ours:
        assert int(o.loc["clean", "num_traps"]) == 0 and int(o.loc["heavy", "num_traps"]) == 0
        assert json.loads(o.loc["clean", "trap_positions"]) == []
        for tensor, cells in TRAPS.items():
            row = o.loc[tensor[:-7]]
            assert int(row["num_traps"]) == int(row["rand_num_spikes"]) == len(cells)
            found = json.loads(row["trap_positions"])
            # where they are: every trap points at a planted element. Near-equal spikes mix their singular
            # vectors, so two traps can point at the same element (randomize.py locates each one by its own
            # singular vectors) and localization is well above a spread vector's ~1e-3 but below 1.
            assert {(t["row"], t["col"]) for t in found} <= set(cells)
            if len(cells) == 1:
                assert [(t["row"], t["col"]) for t in found] == cells and found[0]["localization"] > 0.9
            assert all(t["weight"] == pytest.approx(1.5) and t["localization"] > 0.3 for t in found)
