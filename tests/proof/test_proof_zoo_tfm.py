"""The second zoo (small transformers on a synthetic sequence task) on its tiny grid: it builds real HF
model folders, caches (a second build trains nothing), reproduces bit for bit, and validates against
its truth through the store, with the random-init member placed in every ranking."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from pipelines.proof import zoo_tfm
from pipelines.proof.stored import latest_models
from pipelines.proof.validation import render, validate
from pipelines.proof.zoo import build_zoo, zoo_fingerprint, zoo_is_complete


@pytest.fixture(scope="module")
def tiny_tfm(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfm")
    return root, build_zoo(root, kind="transformer", grid=zoo_tfm.TINY_GRID, workers=2)


def test_the_task_needs_every_token():
    x, y = zoo_tfm.make_data(2000, seed=0)
    assert x.shape == (2000, zoo_tfm.SEQ_LEN) and set(np.unique(y)) == set(range(zoo_tfm.N_CLASSES))
    distinct = np.array([len(set(row)) for row in x])
    assert (y == np.clip(distinct - zoo_tfm.MIN_DISTINCT, 0, zoo_tfm.N_CLASSES - 1)).all()
    assert np.bincount(y).max() / len(y) < 0.45  # no class wins by guessing
    x2, _ = zoo_tfm.make_data(100, seed=0)
    assert (x2 == x[:100]).all()  # a smaller training set is a prefix of a larger one


def test_tiny_transformer_zoo_builds_and_caches(tiny_tfm):
    root, first = tiny_tfm
    specs = zoo_tfm.TINY_GRID.specs()
    assert first.kind == "transformer" and first.trained == len(specs) == 4 and first.reused == 0
    g = zoo_tfm.TINY_GRID
    for spec in specs:
        cfg = json.loads((root / spec.name / "config.json").read_text())
        assert cfg["model_type"] == "ww-zoo-transformer" and cfg["hidden_size"] == g.d_model
        tensors = load_file(str(root / spec.name / "model.safetensors"))
        assert tensors["blocks.0.q.weight"].shape == (g.d_model, g.d_model)
        assert tensors["blocks.0.up.weight"].shape == (4 * g.d_model, g.d_model)
        assert tensors["head.weight"].shape == (zoo_tfm.N_CLASSES, g.d_model)
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    fingerprint = zoo_fingerprint(root)
    again = build_zoo(root, grid=g, workers=2)
    assert again.trained == 0 and again.reused == 4 and zoo_is_complete(root, grid=g)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == stamps
    assert zoo_fingerprint(root) == fingerprint


def test_tiny_transformer_zoo_reproduces_bit_for_bit(tiny_tfm, tmp_path):
    root, _ = tiny_tfm
    build_zoo(tmp_path, grid=zoo_tfm.TINY_GRID, workers=1)
    assert zoo_fingerprint(tmp_path) == zoo_fingerprint(root)


def test_tiny_transformer_zoo_validates(tiny_tfm, tmp_path, store_models):
    root, _ = tiny_tfm
    specs = zoo_tfm.TINY_GRID.specs()
    store_models(tmp_path / "data", [root / s.name for s in specs])
    v = validate(str(tmp_path / "data"), root)
    assert v.unmatched == () and len(v.joined) == 4
    pooled = v.long[v.long["sweep"] == "pooled"].set_index("metric")
    assert {"default_rank", "alpha_weighted", "alpha", "hill_alpha"} <= set(pooled.index)
    assert (pooled["n"] == 4).all()
    # the random-init member's place under the default ranking is its place in the default leaderboard
    models = latest_models(str(tmp_path / "data"))
    random_name = next(s.name for s in specs if s.epochs == 0)
    order = list(models.sort_values("default_rank")["repo_id"])
    r = v.random_init.set_index("metric")
    assert r.loc["default_rank", "positions"] == (order.index(random_name) + 1,)
    assert r.loc["default_rank", "all_last"] == (order[-1] == random_name)
    assert "default_rank" in render(v, "markdown")
