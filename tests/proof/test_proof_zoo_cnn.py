"""The third zoo (small conv nets on a synthetic image task) on its tiny grid: real HF model folders,
cached (a second build trains nothing), bit-for-bit reproducible, validated against its truth through the
store; and the task it learns."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from pipelines.proof import zoo_cnn
from pipelines.proof.validation import validate
from pipelines.proof.zoo import build_zoo, zoo_fingerprint, zoo_is_complete


@pytest.fixture(scope="module")
def tiny_conv(tmp_path_factory):
    root = tmp_path_factory.mktemp("conv")
    return root, build_zoo(root, kind="conv", grid=zoo_cnn.TINY_GRID, workers=2)


def test_the_task_places_one_pattern_anywhere():
    x, y = zoo_cnn.make_data(500, seed=0)
    assert x.shape == (500, 1, zoo_cnn.SIDE, zoo_cnn.SIDE) and x.dtype == np.float32
    assert set(np.unique(y)) == set(range(zoo_cnn.N_CLASSES))
    pats = zoo_cnn.patterns()
    assert len({p.tobytes() for p in pats}) == zoo_cnn.N_CLASSES  # distinct patterns
    x2, y2 = zoo_cnn.make_data(500, seed=0)
    assert (y2 == y).all() and (x2 == x).all()  # seeded: the same images every time
    assert not (zoo_cnn.make_data(500, seed=1)[0] == x).all()  # the test set is another draw
    # the noise-free image holds its class's pattern somewhere: the best 3x3 match is the right class
    old = zoo_cnn.NOISE
    try:
        zoo_cnn.NOISE = 0.0
        clean, labels = zoo_cnn.make_data(20, seed=3)
    finally:
        zoo_cnn.NOISE = old
    k = zoo_cnn.PATTERN
    for img, label in zip(clean[:, 0], labels):
        windows = np.lib.stride_tricks.sliding_window_view(img, (k, k)).reshape(-1, k * k)
        assert (windows @ pats.reshape(zoo_cnn.N_CLASSES, -1).T).max(axis=0).argmax() == label


def test_tiny_conv_zoo_builds_caches_and_reproduces(tiny_conv, tmp_path):
    root, first = tiny_conv
    g = zoo_cnn.TINY_GRID
    specs = g.specs()
    assert first.kind == "conv" and first.trained == len(specs) == 4 and first.reused == 0
    for spec in specs:
        cfg = json.loads((root / spec.name / "config.json").read_text())
        assert cfg["model_type"] == "ww-zoo-conv" and cfg["channels"] == list(g.channels)
        tensors = load_file(str(root / spec.name / "model.safetensors"))
        assert tensors["conv2.weight"].shape == (g.channels[1], g.channels[0], 3, 3)
        assert tensors["head.weight"].shape == (zoo_cnn.N_CLASSES, g.hidden)
    assert "image-classification" in (root / specs[0].name / "README.md").read_text()
    fingerprint = zoo_fingerprint(root)
    again = build_zoo(root, grid=g, workers=2)
    assert again.trained == 0 and again.reused == 4 and zoo_is_complete(root, grid=g)
    build_zoo(tmp_path, grid=g, workers=1)
    assert zoo_fingerprint(tmp_path) == fingerprint


def test_tiny_conv_zoo_validates(tiny_conv, tmp_path, store_models):
    root, _ = tiny_conv
    specs = zoo_cnn.TINY_GRID.specs()
    store_models(tmp_path / "data", [root / s.name for s in specs])
    v = validate(str(tmp_path / "data"), root)
    assert v.unmatched == () and len(v.joined) == 4
    assert {"default_rank", "alpha_weighted", "alpha", "hill_alpha"} <= set(v.long["metric"])
    assert v.random_init is not None and (v.random_init["n_random"] == 1).all()


def test_the_full_grid_is_the_preregistered_one():
    """The grid fixed before the third zoo was trained (pipelines/proof/zoo_cnn.py): 11 values x 3 seeds,
    random-init (epochs 0) and barely trained (1 epoch) members included; its hash is the manifest's."""
    g = zoo_cnn.DEFAULT_GRID
    specs = g.specs()
    assert len(specs) == 33 and len({s.name for s in specs}) == 33
    assert sum(s.epochs == 0 for s in specs) == 3 and sum(s.epochs == 1 for s in specs) == 3
    assert g.grid_hash() == "83e09aaac2e69176"
