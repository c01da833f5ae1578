"""ww_spectral.WeightWatcher against weightwatcher.WeightWatcher 0.7.7 (one subprocess for the module):
the same calls on the same models return the same shapes - details columns and order, ids and names,
summary keys, describe rows, ESD arrays, distances tuples - and the same numbers (float64) where ww-spectral
keeps WW's definitions; unsupported options raise OptionError naming the nearest supported one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import save_file
from support.planted_models import conv_model, dense_model
from support.ww_oracle_options import frame, run_calls

import ww_spectral
from ww_spectral.errors import OptionError

pytestmark = [pytest.mark.parity, pytest.mark.slow]

CALLS = [["analyze", {}], ["get_summary", {}], ["analyze", {"mp_fit": True, "randomize": True, "layers": [1, 9]}],
         ["get_summary", {}], ["describe", {}], ["get_ESD", {"layer": 3}], ["get_ESD", {"layer": "blocks.0.fc"}],
         ["get_ESD", {"layer": 1, "random": True}], ["analyze", {"fix_fingers": "clip_xmax", "pool": False}]]


@pytest.fixture(scope="module")
def ww(tmp_path_factory):
    import torch

    d = tmp_path_factory.mktemp("compat")
    model = {**dense_model(), **conv_model()}
    other = {k: v + np.float32(0.01) * np.ones_like(v) for k, v in model.items()}
    paths = {"model": d / "model.safetensors", "other": d / "other.safetensors"}
    save_file(model, str(paths["model"]))
    save_file(other, str(paths["other"]))
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Embedding(64, 16), torch.nn.Linear(16, 32), torch.nn.ReLU(),
                                 torch.nn.Conv2d(4, 8, 3), torch.nn.Linear(32, 24))
    torch.save(module, d / "module.pt")
    dist = [["distances", {"model_1": {"safetensors": str(paths["model"])},
                           "model_2": {"safetensors": str(paths["other"])}, "method": m}]
            for m in ("raw", "euclidean", "cka")]
    out = run_calls([{"model": {"safetensors": str(paths["model"])}, "calls": CALLS + dist},
                     {"model": {"module": str(d / "module.pt")}, "calls": [["analyze", {}], ["describe", {}]]}])
    return {"paths": {k: str(v) for k, v in paths.items()}, "module": module, "file": out[0], "mod": out[1]}


def _numbers_agree(ours: pd.DataFrame, ref: pd.DataFrame, *, skip=()) -> None:
    for c in ref.columns:
        if c in skip or ref[c].dtype.kind not in "fi":
            continue
        np.testing.assert_allclose(ours[c].to_numpy(float), ref[c].to_numpy(float), rtol=1e-9, atol=1e-12, err_msg=c)


def test_analyze_and_summary_have_ww_shapes_and_values(ww):
    watcher = ww_spectral.WeightWatcher(model=ww["paths"]["model"])
    ref = frame(ww["file"][0])
    ours = watcher.analyze(precision="float64", ww_compat_conv_nm=True)
    assert list(ours.columns[: len(ref.columns)]) == list(ref.columns)  # WW's columns, in WW's order, first
    assert list(ours["layer_id"]) == list(ref["layer_id"]) and list(ours["name"]) == list(ref["name"])
    assert ours["layer_id"].dtype == np.int64 and watcher.get_details() is ours
    _numbers_agree(ours, ref)
    summary, ref_summary = watcher.get_summary(), ww["file"][1]
    assert list(summary) == list(ref_summary)
    assert all(summary[k] == pytest.approx(ref_summary[k], rel=1e-9) for k in summary)

    ref = frame(ww["file"][2])
    ours = watcher.analyze(mp_fit=True, randomize=True, layers=[1, 9], precision="float64", ww_compat_conv_nm=True)
    assert list(ours.columns[: len(ref.columns)]) == list(ref.columns)
    assert list(ours["name"]) == list(ref["name"]) and len(ours) == 2
    draws = {"rand_distance", "ww_softrank", "ww_maxdist", "max_rand_eval", "rand_sigma_mp", "rand_mp_softrank",
             "rand_bulk_max", "rand_bulk_min", "num_traps", "rand_num_spikes"}  # depend on the shuffle's draws:
    # compared over seeds in test_parity_options.py
    _numbers_agree(ours, ref, skip=draws)
    summary = watcher.get_summary()
    assert list(summary) == list(ww["file"][3]) and "mp_softrank" in summary
    assert summary["mp_softrank"] == pytest.approx(ww["file"][3]["mp_softrank"], rel=1e-9)

    ref = frame(ww["file"][8])
    ours = watcher.analyze(fix_fingers="clip_xmax", pool=False, precision="float64")
    assert list(ours.columns[: len(ref.columns)]) == list(ref.columns)
    assert list(zip(ours["name"], ours["slice_id"])) == list(zip(ref["name"], ref["slice_id"]))


def test_describe_and_esd_have_ww_shapes(ww):
    watcher = ww_spectral.WeightWatcher(model=ww["paths"]["model"])
    # WW reports N and M swapped for even kernels with out < in; ww_compat_conv_nm=True reproduces it
    pd.testing.assert_frame_equal(watcher.describe(ww_compat_conv_nm=True), frame(ww["file"][4]).reset_index(drop=True),
                                  check_dtype=False)
    fixed = watcher.describe().set_index("name")
    assert (fixed.loc["conv4", "N"], fixed.loc["conv4", "M"]) == (48, 24)
    for i, layer in ((5, 3), (6, "blocks.0.fc")):
        esd = watcher.get_ESD(layer=layer, precision="float64")
        ref = np.asarray(ww["file"][i])
        assert isinstance(esd, np.ndarray) and esd.shape == ref.shape and np.all(np.diff(esd) >= 0)
        np.testing.assert_allclose(esd, ref, rtol=1e-9, atol=1e-12 * ref.max())
    rand = watcher.get_ESD(layer=1, random=True)
    assert rand.shape == (len(ww["file"][7]),)  # all replicas pooled, as WW's rand_evals
    assert np.array_equal(rand, watcher.get_ESD(layer=1, random=True))  # seeded: the same draw again
    assert not np.array_equal(rand, watcher.get_ESD(layer=1, random=True, seed=1))
    with pytest.raises(OptionError, match="not an analysed layer"):
        watcher.get_ESD(layer=999)


def test_distances_match_ww(ww):
    watcher = ww_spectral.WeightWatcher()
    for i, method in enumerate(("raw", "euclidean", "cka"), start=len(CALLS)):
        avg_dw, avg_db, table = watcher.distances(ww["paths"]["model"], ww["paths"]["other"], method=method)
        ref_dw, ref_db, ref = ww["file"][i]
        ref = frame(ref)
        assert list(table.columns) == list(ref.columns) and table.index.name == "layer_id"
        assert [int(v) for v in table.index] == [int(v) for v in ref.index]
        assert avg_dw == pytest.approx(ref_dw, rel=1e-5) and avg_db == pytest.approx(ref_db, rel=1e-5, abs=1e-9)
        np.testing.assert_allclose(table["delta_W"], ref["delta_W"].astype(float), rtol=1e-5)
        assert list(table["M"]) == list(ref["M"]) and list(table["N"]) == list(ref["N"])
        assert [str(v) for v in table["b_shape"]] == [str(v) for v in ref["b_shape"]]


def test_module_ids_names_and_types_are_ww_s(ww):
    watcher = ww_spectral.WeightWatcher(model=ww["module"])
    ref = frame(ww["mod"][0])
    ours = watcher.analyze(precision="float64")
    for c in ("layer_id", "name", "longname", "layer_type", "N", "M", "rf", "num_evals"):
        assert list(ours[c]) == list(ref[c]), c
    _numbers_agree(ours, ref)
    pd.testing.assert_frame_equal(watcher.describe(), frame(ww["mod"][1]).reset_index(drop=True), check_dtype=False)
    only = watcher.analyze(layers=["embedding"])
    assert list(only["layer_type"]) == ["embedding"]
    assert watcher.analyze(layers=[42]).empty  # an id the model does not have: WW's empty frame


def test_unsupported_and_unknown_options_name_the_nearest():
    watcher = ww_spectral.WeightWatcher(model={"a.weight": np.ones((16, 8), dtype=np.float32)})
    with pytest.raises(OptionError, match="did you mean 'randomize'"):
        watcher.analyze(randomise=True)
    with pytest.raises(OptionError, match="vectors=True is not supported.*nearest supported"):
        watcher.analyze(vectors=True)
    with pytest.raises(OptionError, match="ww_spectral.plots"):
        watcher.analyze(plot=True)
    with pytest.raises(OptionError, match="fix_fingers='clip_xmax'"):
        watcher.analyze(xmax="force")
    with pytest.raises(OptionError, match="clip_xmax"):
        watcher.analyze(fit="E_TPL", fix_fingers="clip_xmax")
    # WW's defaults of options ww-spectral lacks are accepted (a notebook passes them)
    assert len(watcher.analyze(plot=False, vectors=False, savefig="img", detX=False, svd_method="accurate")) == 1
    with pytest.raises(OptionError, match="method"):
        watcher.distances({}, {}, method="cosine")


def test_base_model_analyses_the_difference():
    rng = np.random.default_rng(0)
    base = {"a.weight": rng.standard_normal((64, 32)).astype(np.float32)}
    delta = rng.standard_normal((64, 32)).astype(np.float32) * 0.1
    tuned = {"a.weight": base["a.weight"] + delta}
    ours = ww_spectral.WeightWatcher(model=tuned, base_model=base).analyze(precision="float64")
    direct = ww_spectral.analyze({"a.weight": tuned["a.weight"].astype(np.float64) - base["a.weight"]},
                                 precision="float64")
    assert ours["alpha"].iloc[0] == pytest.approx(direct["alpha"].iloc[0], rel=1e-9)
    assert ours["norm"].iloc[0] == pytest.approx(float(np.sum(delta.astype(np.float64) ** 2)), rel=1e-5)
