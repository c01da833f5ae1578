"""The per-model unit (ww_spectral/model.py): plan_model's facts and its "no analysable layer" rule, the
same rule through analyze_model and the CLI, assemble_model's checks, model_record, and layer_esd as the
one source of the eigenvalues a stored alpha was fitted on."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from support.checkpoints import Raw, random_tensors, write_hf_model_folder, write_safetensors

from pipelines.cli import main
from ww_spectral import analysis, plots
from ww_spectral.checkpoint import open_checkpoint
from ww_spectral.errors import CheckpointError, NoAnalysableLayerError
from ww_spectral.fit import fit_power_law
from ww_spectral.layers import eigenvalue_scale, layer_matrices
from ww_spectral.model import ModelFacts, TensorListing, assemble_model, depth_order, plan_model
from ww_spectral.records import AnalysisOptions, CheckpointRef, TensorInfo, make_options
from ww_spectral.spectrum import layer_spectrum


def _tiny(tmp_path, config=None):
    tensors = random_tensors({"a.weight": (64, 32), "n.weight": (32,)}, seed=1)
    tensors["b.weight"] = np.random.default_rng(2).standard_normal((16, 8))  # float64 -> stored F64
    tensors["idx.weight"] = Raw("I32", (4, 4), bytes(64))  # 2-D but not float: skipped
    return write_hf_model_folder(tmp_path / "org-tiny", tensors, config=config), tensors


def test_plan_model_facts_and_plans_from_headers(tmp_path):
    folder, tensors = _tiny(tmp_path)
    with open_checkpoint(str(folder)) as ck:
        plan = plan_model(ck, {"min_evals": 8})
        infos = ck.tensors()
    sizes = {i.name: int(np.prod(i.shape)) for i in infos}
    assert sizes == {k: int(np.prod(v.shape)) for k, v in tensors.items()}
    by_dtype: dict[str, int] = {}
    for i in infos:
        by_dtype[i.dtype] = by_dtype.get(i.dtype, 0) + sizes[i.name]
    assert plan.facts == ModelFacts(parameter_count=sum(sizes.values()), dtype=max(by_dtype, key=by_dtype.get),
                                    architecture="LlamaForCausalLM", model_type="llama")
    assert plan.facts.dtype == "F32"  # 64*32 + 32 float32 elements outweigh 16*8 float64 ones
    assert [p.layer_id for p in plan.layers] == list(range(len(infos)))
    assert [p.tensor_name for p in plan.layers] == [i.name for i in depth_order(infos)]
    assert {p.tensor_name for p in plan.analysed} == {"a.weight", "b.weight"}
    skipped = {p.tensor_name: (p.skip_code, p.skip_reason) for p in plan.layers if not p.analysed}
    assert skipped["n.weight"][0] == "not_matrix" and skipped["idx.weight"][0] == "unsupported_dtype"
    assert all(reason for _, reason in skipped.values())
    assert all(p.skip_reason == "" for p in plan.analysed)


@pytest.mark.parametrize("config", [["not", "an", "object"], {"architectures": "Llama", "model_type": 3},
                                    {"architectures": [7]}, {}])
def test_facts_from_odd_configs_are_unknown_not_errors(config):
    facts = ModelFacts.from_tensors([TensorInfo("w", (3, 4), "BF16", None, 24)], config)
    assert facts == ModelFacts(parameter_count=12, dtype="BF16", architecture=None, model_type=None)
    assert ModelFacts.from_tensors([], None) == ModelFacts(None, None, None, None)


def _only_vectors(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {f"norm{i}.weight": rng.standard_normal(32).astype(np.float32) for i in range(3)}
    tensors["row.weight"] = rng.standard_normal((1, 64)).astype(np.float32)  # 1 eigenvalue: size filter
    return write_safetensors(tmp_path / "vectors.safetensors", tensors)


def test_no_analysable_layer_is_one_typed_error_everywhere(tmp_path, capsys):
    path = _only_vectors(tmp_path)
    with pytest.raises(NoAnalysableLayerError) as info:
        analysis.analyze_model(str(path))
    msg = str(info.value)
    assert isinstance(info.value, CheckpointError)  # permanent, like every damaged-checkpoint error
    assert "\n" not in msg and "vectors" in msg and "none of its 4 tensors" in msg
    assert "not_matrix x3, size_filter x1" in msg and "2-D (dense) and 4-D (conv2d)" in msg
    with pytest.raises(NoAnalysableLayerError):
        analysis.analyze(str(path))
    assert main(["analyze", str(path), "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and msg in captured.err
    assert main(["describe", str(path)]) == 0  # describing it is no error: it says why, tensor by tensor
    assert "0 layers to analyse" in capsys.readouterr().out


def test_a_checkpoint_without_tensors_has_no_analysable_layer():
    ref = CheckpointRef(repo_id="org/empty\nforged", revision="r", files=(), kind="safetensors")
    with pytest.raises(NoAnalysableLayerError, match="none of its 0 tensors .*holds no tensor") as info:
        plan_model(TensorListing(ref, []))
    assert "\n" not in str(info.value)  # the name is escaped to one line


def test_out_file_holds_skipped_rows_with_their_reasons(tmp_path, capsys):
    folder, _ = _tiny(tmp_path)
    out = tmp_path / "x.parquet"
    assert main(["analyze", str(folder), "--out", str(out), "--no-progress"]) == 0
    df = pd.read_parquet(out).set_index("tensor_name")
    assert set(df.index) == {"a.weight", "b.weight", "n.weight", "idx.weight"}
    for name, code in [("n.weight", "not_matrix"), ("idx.weight", "unsupported_dtype")]:
        assert df.loc[name, "status"] == "skipped" and df.loc[name, "fit_status"] == code
        assert df.loc[name, "skip_reason"]
    assert "idx.weight" not in analysis.analyze(str(folder))["tensor_name"].tolist()  # WW-compatible table


def _model_and_rows(tmp_path):
    folder, _ = _tiny(tmp_path)
    ck = open_checkpoint(str(folder))
    plan = plan_model(ck)
    rows = analysis.analyze_layers(ck, plan.layers, plan.options, threads=1)
    ck.close()
    return plan, rows


def test_assemble_model_orders_rows_and_refuses_a_mismatch(tmp_path):
    plan, rows = _model_and_rows(tmp_path)
    result = assemble_model(plan, list(reversed(rows)), seconds=1.5)
    assert result.layers["layer_id"].tolist() == [p.layer_id for p in plan.layers]
    assert result.seconds == 1.5 and result.facts == plan.facts and result.ref == plan.ref
    assert result.summary["n_tensors"] == len(plan.layers) and result.summary["n_layers_skipped"] == 2
    direct = analysis.analyze_model(plan.ref.files[0], threads=1)
    pd.testing.assert_frame_equal(direct.layers, result.layers)
    name1 = plan.layers[1].tensor_name
    with pytest.raises(ValueError, match=f"missing layer_ids \\[1\\] \\['{name1}'\\]"):
        assemble_model(plan, [r for r in rows if r["layer_id"] != 1], seconds=0)
    with pytest.raises(ValueError, match="two rows"):
        assemble_model(plan, rows + rows[:1], seconds=0)
    wrong = dict(rows[0], tensor_name="other.weight")
    with pytest.raises(ValueError, match="unplanned rows \\['other.weight'\\]"):
        assemble_model(plan, [wrong, *rows[1:]], seconds=0)
    # rows numbered elsewhere (a scan planning shard by shard) take their plan's layer_id
    renumbered = assemble_model(plan, [dict(r, layer_id=r["layer_id"] + 100) for r in rows], seconds=0)
    assert renumbered.layers["layer_id"].tolist() == [p.layer_id for p in plan.layers]


def test_model_record_keeps_ours_where_the_listing_does_not_know(tmp_path):
    plan, rows = _model_and_rows(tmp_path)
    result = assemble_model(plan, rows, seconds=2.0)
    rec = result.model_record(source_kind="hub", downloads=None, likes=5, parameter_count=None)
    assert rec["parameter_count"] == plan.facts.parameter_count and rec["downloads"] is None
    assert rec["likes"] == 5 and rec["source_kind"] == "hub" and rec["analysis_seconds"] == 2.0
    assert make_options(json.loads(rec["options_json"])) == plan.options  # the stored options round-trip
    assert rec["options_json"] == json.dumps(dataclasses.asdict(plan.options), sort_keys=True)
    assert {k: rec[k] for k in result.summary} == result.summary
    assert result.model_record(parameter_count=7_000_000_000)["parameter_count"] == 7_000_000_000


def test_layer_esd_is_what_the_stored_alpha_was_fitted_on(tmp_path):
    """A rank-deficient layer in float32: the eigenvalues of its null space are round-off (~1e-6 lambda_max),
    above the fit's 1e-5 cut when lambda_max is large. The stored alpha is fitted after the noise floor;
    plots and reports must see the same eigenvalues (they used to see the raw ones)."""
    rng = np.random.default_rng(3)
    low_rank = (rng.standard_t(3, (160, 8)) @ rng.standard_normal((8, 96))).astype(np.float32) * 40.0
    path = write_safetensors(tmp_path / "lowrank.safetensors",
                             {"lr.weight": low_rank, "full.weight": rng.standard_t(3, (128, 96)).astype(np.float32)})
    rows = analysis.analyze(str(path), threads=1).set_index("tensor_name")
    esds = analysis.layer_esds(str(path))
    for name in ("lr", "full"):
        esd = esds[name]
        assert np.all(np.diff(esd.evals) >= 0) and esd.evals.dtype == np.float64
        assert esd.fit.alpha == rows.loc[f"{name}.weight", "alpha"]  # bit for bit
        assert fit_power_law(esd.evals).alpha == rows.loc[f"{name}.weight", "alpha"]
    # The drift this prevents is real: fitting the raw eigenvalues of the rank-deficient layer differs.
    plan = esds["lr"].plan
    raw = np.sort(np.concatenate(layer_spectrum(layer_matrices(plan, low_rank), scale=eigenvalue_scale(plan))))
    assert np.count_nonzero(raw > 1e-5) > 8 and fit_power_law(raw).alpha != rows.loc["lr.weight", "alpha"]
    # ... and the plots draw the stored fit.
    out = plots.plot_model(str(path), out_dir=tmp_path / "plots")
    assert set(out["layers"]) == {"lr", "full"}
    only = analysis.layer_esds(str(path), layer="lr.weight")
    assert list(only) == ["lr"] and np.array_equal(only["lr"].evals, esds["lr"].evals)


def test_layer_esds_unknown_layer_is_an_option_error(tmp_path):
    path = write_safetensors(tmp_path / "m.safetensors", random_tensors({"w.weight": (32, 16)}))
    with pytest.raises(analysis.OptionError, match="not found; analysed layers are: w"):
        analysis.layer_esds(str(path), layer="nope")
    assert analysis.layer_esds(str(path), options=AnalysisOptions(precision="float64"))["w"].fit.status == "success"


def _frame_column_by_column(rows) -> pd.DataFrame:
    """The reference conversion rows_to_frame must equal: the rows as one DataFrame, then each column
    converted in place (pandas' own rules: Int64, to_numeric(errors="coerce"), fillna("").astype(str))."""
    from ww_spectral.columns import FLOAT_COLUMNS, INT_COLUMNS, LAYER_COLUMN_NAMES, STR_COLUMNS

    df = pd.DataFrame(list(rows), columns=list(LAYER_COLUMN_NAMES))
    for c in INT_COLUMNS:
        df[c] = pd.array(df[c].tolist(), dtype="Int64")
    for c in FLOAT_COLUMNS:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    for c in STR_COLUMNS:
        df[c] = df[c].fillna("").astype(str)
    return df.reset_index(drop=True)


def test_rows_to_frame_equals_the_column_by_column_conversion(tmp_path):
    from ww_spectral.model import rows_to_frame

    folder = write_hf_model_folder(tmp_path / "m", random_tensors({"a.weight": (64, 32), "b.weight": (8, 4),
                                                                    "c.bias": (16,)}, seed=3))
    real = analysis.analyze_model(str(folder), threads=1, randomize=True, mp_fit=True).layers.to_dict("records")
    odd = [
        {"layer_id": np.int64(7), "alpha": np.float32(2.5), "D": "0.25", "xmin": "not a number", "status": None,
         "shape": np.float32("nan"), "expert": pd.NA, "slice_id": None, "tensor_name": 3.0},
        {"layer_id": 8, "alpha": None, "sigma": float("nan"), "longname": float("nan"), "N": 12.0},
        {},  # every column missing
    ]
    for rows in (real, odd, real + odd, []):
        pd.testing.assert_frame_equal(rows_to_frame(rows), _frame_column_by_column(rows), check_exact=True)
