"""The zoo generator on a tiny grid: valid HF model folders, a truth file, and a no-op second run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import load_file

from pipelines.proof.truth import read_truth
from pipelines.proof.zoo import (
    DEFAULT_GRID,
    TINY_GRID,
    TRUTH_COLUMNS,
    ZooError,
    build_zoo,
    zoo_is_complete,
)


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    first = build_zoo(root, grid=TINY_GRID, workers=1)
    return root, first


def test_tiny_zoo_writes_hf_folders_and_truth(tiny_zoo):
    root, first = tiny_zoo
    specs = TINY_GRID.specs()
    assert first.trained == len(specs) == 4 and first.reused == 0
    truth = read_truth(root / "truth.csv")
    assert tuple(truth.columns) == TRUTH_COLUMNS
    assert sorted(truth["repo_id"]) == sorted(s.name for s in specs)
    assert truth["test_accuracy"].between(0, 1).all()
    for spec in specs:
        folder = root / spec.name
        cfg = json.loads((folder / "config.json").read_text())
        assert cfg["model_type"] == "ww-zoo-mlp" and cfg["hidden_sizes"] == list(TINY_GRID.hidden_sizes)
        tensors = load_file(str(folder / "model.safetensors"))  # real safetensors, readable by the library
        assert tensors["mlp.fc1.weight"].shape == (TINY_GRID.hidden_sizes[0], 64)
        assert tensors["mlp.fc3.weight"].shape == (10, TINY_GRID.hidden_sizes[-1])
        assert all(t.dtype == np.float32 for t in tensors.values())
        card = (folder / "README.md").read_text()
        meta = json.loads((folder / "zoo_meta.json").read_text())
        assert card.startswith("---\n") and f"value: {meta['test_accuracy']}" in card
        row = truth[truth["repo_id"] == spec.name].iloc[0]
        assert row["test_accuracy"] == pytest.approx(meta["test_accuracy"])
        assert (row["label_noise"], row["batch_size"], row["epochs"]) == (spec.label_noise, spec.batch_size,
                                                                          spec.epochs)
    assert not list(root.glob(".tmp-*"))  # atomic writes leave no temp folders


def test_second_run_is_a_noop(tiny_zoo):
    root, _ = tiny_zoo
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    again = build_zoo(root, grid=TINY_GRID, workers=1)
    assert again.trained == 0 and again.reused == 4
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == stamps
    assert zoo_is_complete(root, grid=TINY_GRID)
    assert not zoo_is_complete(root, grid=DEFAULT_GRID)


def test_incomplete_folder_is_retrained(tiny_zoo):
    root, _ = tiny_zoo
    victim = root / TINY_GRID.specs()[0].name
    (victim / "zoo_meta.json").unlink()
    before = pd.read_csv(root / "truth.csv")
    again = build_zoo(root, grid=TINY_GRID, workers=1)
    assert again.trained == 1
    # training is deterministic: the retrained model has the same accuracy
    pd.testing.assert_frame_equal(pd.read_csv(root / "truth.csv"), before)


def test_default_grid_is_the_fixed_experiment():
    specs = DEFAULT_GRID.specs()
    assert len(specs) == 54 and len({s.name for s in specs}) == 54
    assert min(DEFAULT_GRID.hidden_sizes) >= 256
    assert {s.sweep for s in specs} == {"label_noise", "batch_size", "epochs"}


def test_file_in_place_of_folder_is_an_error(tmp_path):
    f = tmp_path / "zoo"
    f.write_text("x")
    with pytest.raises(ZooError, match="is a file"):
        build_zoo(f, grid=TINY_GRID, workers=1)


def test_changed_architecture_is_not_reused(tmp_path):
    import dataclasses

    one = dataclasses.replace(TINY_GRID, sweeps=TINY_GRID.sweeps[:1], seeds=(0,))
    build_zoo(tmp_path, grid=one, workers=1)
    wider = dataclasses.replace(one, hidden_sizes=(48, 16))
    res = build_zoo(tmp_path, grid=wider, workers=1)
    assert res.trained == 2 and res.reused == 0  # same folder names, different models: retrained
    assert json.loads((tmp_path / one.specs()[0].name / "config.json").read_text())["hidden_sizes"] == [48, 16]
