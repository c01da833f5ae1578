"""AnalysisOptions (issue 10): validation, the fingerprint's identity rules, flags -> options, layer selection
and the plans the options make (pool=False, conv1d, glorot_fix) - from headers and tiny arrays, fast."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest

from ww_spectral import cli_core
from ww_spectral.errors import OptionError
from ww_spectral.fit import MAX_FINGERS, ww_max_fingers
from ww_spectral.layers import eigenvalue_scale, layer_matrices, plan_layer
from ww_spectral.model import TensorListing, assemble_model, plan_model, slice_ids
from ww_spectral.records import AnalysisOptions, CheckpointRef, TensorInfo, make_options
from ww_spectral.selection import not_selected_reason


def _info(name, shape, dtype="F32"):
    return TensorInfo(name=name, shape=tuple(shape), dtype=dtype, file=None, nbytes=0)


def test_default_fingerprint_is_the_first_releases():
    # the first release hashed these eight fields minus device; stores it wrote must still skip
    first = {"fix_fingers": None, "backend": "numpy", "precision": "float32", "min_evals": 8, "max_evals": 15000,
             "max_N": 50000, "ww_compat_conv_nm": False}
    expected = hashlib.sha256(json.dumps(first, sort_keys=True).encode()).hexdigest()[:16]
    assert AnalysisOptions().fingerprint() == expected
    assert AnalysisOptions(device="cuda", backend="torch").fingerprint() != expected  # backend changes it
    assert AnalysisOptions(fix_fingers="clip_xmax").identity()["fix_fingers"] == "clip_xmax"
    assert AnalysisOptions().label() == "default"


def test_same_options_same_hash_different_options_different_hash():
    a = AnalysisOptions(layers=[3, 1, 3], include=["b*", "a*"], randomize=True, seed=2)
    b = make_options({"layers": (1, 3), "include": ("a*", "b*"), "randomize": True, "seed": 2})
    assert a == b and a.fingerprint() == b.fingerprint()
    distinct = [AnalysisOptions(), AnalysisOptions(randomize=True), AnalysisOptions(randomize=True, seed=1),
                AnalysisOptions(mp_fit=True), AnalysisOptions(fit="TPL"), AnalysisOptions(fit="E_TPL"),
                AnalysisOptions(fix_fingers="xmin_peak"), AnalysisOptions(fix_fingers="xmin_peak", xmin_max=2.0),
                AnalysisOptions(fix_fingers="clip_xmax"), AnalysisOptions(fix_fingers="clip_xmax", max_fingers=20),
                AnalysisOptions(fix_fingers="clip_xmax", finger_thresh=0.5), AnalysisOptions(layers=[1]),
                AnalysisOptions(layers=[-1]), AnalysisOptions(include=["x*"]), AnalysisOptions(exclude=["x*"]),
                AnalysisOptions(glorot_fix=True), AnalysisOptions(pool=False), AnalysisOptions(conv1d=True),
                AnalysisOptions(min_evals=9)]
    hashes = [o.fingerprint() for o in distinct]
    assert len(set(hashes)) == len(hashes)
    # options that cannot change a number under the others leave the identity alone
    assert AnalysisOptions(seed=7).fingerprint() == AnalysisOptions().fingerprint()
    assert AnalysisOptions(xmin_max=3.0).fingerprint() == AnalysisOptions().fingerprint()
    assert AnalysisOptions(max_fingers=20, finger_thresh=2.0).fingerprint() == AnalysisOptions().fingerprint()
    assert AnalysisOptions(fit="E_TPL", xmin_max=3.0).fingerprint() != AnalysisOptions(fit="E_TPL").fingerprint()
    assert AnalysisOptions(fit="power_law") == AnalysisOptions()  # WW's spelling
    assert AnalysisOptions(randomize=True, seed=3, mp_fit=True).label() == "mp_fit, randomize, seed=3"


def test_stored_options_round_trip_through_json():
    o = AnalysisOptions(randomize=True, seed=4, layers=[2, "dense", "x.weight"], include=["a*"], pool=False,
                        fit="TPL", fix_fingers="xmin_peak", xmin_max=1.5)
    back = make_options(json.loads(json.dumps(dataclasses.asdict(o))))
    assert back == o and back.fingerprint() == o.fingerprint()


@pytest.mark.parametrize("kwargs,match", [
    ({"fit": "XPL"}, "fit="), ({"fix_fingers": "clip"}, "fix_fingers="),
    ({"fit": "TPL", "fix_fingers": "clip_xmax"}, "clip_xmax"), ({"fit": "E_TPL", "fix_fingers": "clip_xmax"}, "E_TPL"),
    ({"layers": [1, -2]}, "all >= 0"), ({"layers": ["a", "-b"]}, "not both"), ({"layers": [True]}, "not a layer"),
    ({"layers": [1.5]}, "not a layer"), ({"seed": -1}, "seed"), ({"seed": True}, "seed"), ({"xmin_max": 0}, "xmin_max"),
    ({"finger_thresh": float("nan")}, "finger_thresh"), ({"max_fingers": 0}, "max_fingers"),
    ({"randomize": "yes"}, "randomize"), ({"pool": 0}, "pool"), ({"include": [""]}, "glob"),
    ({"min_evals": 10, "max_evals": 9}, "min_evals"),
])
def test_bad_options_raise_option_error_naming_the_fix(kwargs, match):
    with pytest.raises(OptionError, match=match):
        AnalysisOptions(**kwargs)


def test_unknown_option_names_the_nearest():
    with pytest.raises(OptionError, match="did you mean 'randomize'"):
        make_options(randomise=True)


def test_flags_become_options_one_way():
    o = cli_core.options_from_flags("--randomize --seed 3 --mp-fit --fit TPL --fix-fingers xmin_peak --xmin-max 2.5 "
                                    "--layers 4 2 --include 'model.layers.*' --exclude '*lm_head*' --min-evals 10 "
                                    "--max-evals 500 --max-N 900 --glorot-fix --no-pool --conv1d --precision float64")
    assert o == AnalysisOptions(randomize=True, seed=3, mp_fit=True, fit="TPL", fix_fingers="xmin_peak", xmin_max=2.5,
                                layers=(2, 4), include=("model.layers.*",), exclude=("*lm_head*",), min_evals=10,
                                max_evals=500, max_N=900, glorot_fix=True, pool=False, conv1d=True,
                                precision="float64")
    assert cli_core.options_from_flags([]) == AnalysisOptions()
    assert cli_core.options_from_flags("--layers -3 dense") == AnalysisOptions(layers=(-3, "dense"))
    base = AnalysisOptions(mp_fit=True)
    assert cli_core.options_from_flags("--seed 1", base) == AnalysisOptions(mp_fit=True, seed=1)
    with pytest.raises(OptionError, match="unrecognized"):
        cli_core.options_from_flags("--randomise")
    with pytest.raises(OptionError, match="clip_xmax"):
        cli_core.options_from_flags("--fit E_TPL --fix-fingers clip_xmax")


def test_selection_rules():
    def why(layers=(), include=(), exclude=(), name="model.layers.0.mlp.up_proj.weight", lid=5, lt="dense"):
        o = AnalysisOptions(layers=layers, include=include, exclude=exclude)
        return not_selected_reason(tensor_name=name, longname=name[:-7], layer_id=lid, layer_type=lt,
                                   layers=o.layers, include=o.include, exclude=o.exclude)

    assert why() is None
    assert why(layers=[5, 6]) is None and "not in layers= ids" in why(layers=[6])
    assert "left out" in why(layers=[-5]) and why(layers=[-6]) is None
    assert why(layers=["model.layers.0.mlp.up_proj"]) is None and why(layers=["model.layers.0.mlp.up_proj.weight"]) is None
    assert why(layers=["other"]) is not None and why(layers=["-other"]) is None
    assert why(layers=["-model.layers.0.mlp.up_proj"]) is not None
    assert why(layers=["dense"]) is None and "type" in why(layers=["conv2d"])
    assert why(layers=["embedding"], name="model.embed_tokens.weight") is None
    assert why(layers=["embedding"]) is not None
    assert why(layers=["dense", 6]) is not None  # every kind given must keep the layer
    assert why(include=["model.layers.*.mlp.*"]) is None and "include" in why(include=["*.attn.*"])
    assert "exclude" in why(exclude=["*up_proj*"]) and why(exclude=["*lm_head*"]) is None
    assert why(include=["model.layers.0.mlp.up_proj"]) is None  # longnames match too


def test_plans_with_selection_pool_and_conv1d():
    o = AnalysisOptions(layers=[-1])
    assert plan_layer(_info("a.weight", (16, 8)), 1, o).skip_code == "not_selected"
    assert plan_layer(_info("a.bias", (16,)), 1, o).skip_code == "not_matrix"  # a bias is never a layer
    k = plan_layer(_info("c.weight", (16, 8, 3, 3)), 0, AnalysisOptions(pool=False))
    assert (k.row_count, k.num_evals, k.rf, k.N, k.M) == (9, 8, 9, 16, 8) and k.analysed
    assert slice_ids(k, AnalysisOptions(pool=False)) == list(range(9))
    d = plan_layer(_info("d.weight", (16, 8)), 1, AnalysisOptions(pool=False))
    assert d.row_count == 1 and slice_ids(d, AnalysisOptions(pool=False)) == [0] and slice_ids(d, AnalysisOptions()) == [None]
    small = plan_layer(_info("c.weight", (16, 6, 3, 3)), 0, AnalysisOptions(pool=False))
    assert small.skip_code == "size_filter" and "M=6" in small.skip_reason  # pool=False filters on M, not M*rf
    assert plan_layer(_info("c.weight", (16, 6, 3, 3)), 0, AnalysisOptions()).analysed  # 54 pooled
    assert plan_layer(_info("m.conv.weight", (32, 16, 9)), 0, AnalysisOptions()).skip_code == "not_matrix"
    c1 = plan_layer(_info("m.conv.weight", (32, 16, 9)), 0, AnalysisOptions(conv1d=True))
    assert (c1.layer_type, c1.N, c1.M, c1.rf, c1.num_evals) == ("conv1d", 32, 9, 1, 9) and c1.analysed
    experts = plan_layer(_info("model.layers.0.mlp.experts.down_proj", (8, 64, 32)), 0, AnalysisOptions(conv1d=True))
    assert experts.skip_code == "not_matrix"  # an expert stack is never a Conv1d kernel


def test_matrices_and_scales_of_the_options():
    a = np.arange(16 * 8 * 2 * 3, dtype=np.float32).reshape(16, 8, 2, 3)
    sliced = plan_layer(_info("c.weight", a.shape), 0, AnalysisOptions(pool=False, min_evals=2))
    pooled = plan_layer(_info("c.weight", a.shape), 0, AnalysisOptions())
    (s4,) = layer_matrices(sliced, a, slice_id=4)
    assert np.array_equal(s4, a[:, :, 1, 1])
    assert eigenvalue_scale(pooled) == 0.5 and eigenvalue_scale(sliced) == 3.0  # rf / 2 per slice (WW)
    assert eigenvalue_scale(pooled, AnalysisOptions(glorot_fix=True)) == (16 + 8) / 2
    assert eigenvalue_scale(sliced, AnalysisOptions(glorot_fix=True, pool=False)) == (16 + 8) * 6 / 2
    c = np.random.default_rng(0).standard_normal((5, 4, 9))
    mats = layer_matrices(plan_layer(_info("k.weight", c.shape), 0, AnalysisOptions(conv1d=True, min_evals=2)), c)
    assert len(mats) == 5 and all(np.array_equal(m, c[o]) for o, m in enumerate(mats))


def test_ww_max_fingers_rule():
    assert ww_max_fingers(20, 100) == MAX_FINGERS  # WW resets max_fingers below half the eigenvalues
    assert ww_max_fingers(60, 100) == 60 and ww_max_fingers(-1, 4) == MAX_FINGERS


def test_assemble_model_needs_every_slice_row():
    ref = CheckpointRef(repo_id="m", revision="r", files=(), kind="mapping")
    opts = AnalysisOptions(pool=False)
    plan = plan_model(TensorListing(ref, [_info("c.weight", (16, 8, 2, 2)), _info("d.weight", (16, 8))]), opts)
    rows = [{"layer_id": 0, "tensor_name": "c.weight", "slice_id": s, "status": "success"} for s in range(4)]
    rows.append({"layer_id": 1, "tensor_name": "d.weight", "slice_id": 0, "status": "success"})
    full = assemble_model(plan, rows[::-1], seconds=0)
    assert list(full.layers["slice_id"]) == [0, 1, 2, 3, 0] and full.summary["n_tensors"] == 2
    with pytest.raises(ValueError, match="missing layer_ids \\[0\\]"):
        assemble_model(plan, rows[1:], seconds=0)
    with pytest.raises(ValueError, match="slice 2"):
        assemble_model(plan, rows + rows[2:3], seconds=0)
