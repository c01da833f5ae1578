"""Plots of a stored model: ESDs recomputed only through analysis.layer_esds, with the options the model
was stored with, from the analysed revision of its weights - else a note and the store's numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipelines.proof.spectra import draw_stored_model, stored_esds, weights_folder
from pipelines.proof.stored import latest_layers, latest_models


@pytest.fixture()
def stored(tmp_path, store_models, tiny_model):
    """One model analysed in float64 (not the default float32: a recomputation with default options
    would give other alphas), stored; returns (models_dir, data_root)."""
    models = tmp_path / "models"
    store_models(tmp_path / "data", [tiny_model(models / "m", seed=3)], precision="float64")
    return models, tmp_path / "data"


def _row(data):
    return latest_models(str(data)).iloc[0]


def test_recomputed_fit_is_the_stored_fit(stored):
    models, data = stored
    row, layers = _row(data), latest_layers(str(data))
    assert json.loads(row["options_json"])["precision"] == "float64"
    esds, note = stored_esds(row, models)
    assert note == "" and sorted(esds) == sorted(layers["longname"])
    for _, layer in layers.iterrows():
        fit = esds[layer["longname"]].fit
        assert (fit.alpha, fit.xmin, fit.D) == (layer["alpha"], layer["xmin"], layer["D"])


def test_without_weights_the_page_says_so_and_keeps_the_stores_plots(stored, tmp_path):
    models, data = stored
    row, layers = _row(data), latest_layers(str(data))
    for models_dir, says in [(None, "--models-dir"), (tmp_path / "elsewhere", "no weights")]:
        figures = draw_stored_model(row, layers, out_dir=tmp_path / "img", models_dir=models_dir)
        assert says in figures.note and figures.layers == {}
        assert [p.name for p in figures.model] == ["alpha_by_depth.png", "alpha_hist.png"]


def test_other_weights_than_the_analysed_revision_are_not_drawn(stored):
    models, data = stored
    from safetensors.numpy import load_file, save_file

    weights = models / "m" / "model.safetensors"
    tensors = load_file(weights)
    save_file({k: np.ascontiguousarray(v[::-1]) * 2 for k, v in tensors.items()}, weights)
    esds, note = stored_esds(_row(data), models)
    assert esds == {} and "not the analysed" in note


@pytest.mark.parametrize("options_json", [None, "", "[]", "{" * 5000, '{"precision": "float16"}',
                                          '{"no_such_option": 1}', '{"precision": "float32"}'])
def test_missing_damaged_or_other_stored_options_give_a_note(stored, options_json):
    models, data = stored
    row = _row(data).copy()
    row["options_json"] = options_json
    esds, note = stored_esds(row, models)
    assert esds == {} and note and "\n" not in note


@pytest.mark.parametrize("repo_id", ["../outside", "/abs", "a/../../outside", "./m", "m/", ""])
def test_a_stored_name_never_leads_out_of_the_models_folder(tmp_path, repo_id):
    (tmp_path / "outside").mkdir()
    (tmp_path / "models" / "m").mkdir(parents=True)
    assert weights_folder(repo_id, tmp_path / "models") is None


def test_weights_are_found_by_folder_name_or_cache_layout(tmp_path):
    (tmp_path / "org" / "name").mkdir(parents=True)
    (tmp_path / "models--lab--net").mkdir()
    assert weights_folder("org/name", tmp_path) == tmp_path / "org" / "name"
    assert weights_folder("lab/net", tmp_path) == tmp_path / "models--lab--net"
    assert weights_folder("lab/none", tmp_path) is None
