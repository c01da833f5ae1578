"""The zoo generator on tiny grids: valid HF model folders, a truth file, a no-op second run, and
bit-for-bit reproducible training (the same weights whatever the number of training processes)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import load_file

from pipelines.proof import DEFAULT_ZOOS, zoo_cnn, zoo_mlp, zoo_tfm
from pipelines.proof.truth import read_truth
from pipelines.proof.zoo import (
    KINDS,
    ZooError,
    _pinned_torch,
    build_zoo,
    weights_digest,
    zoo_fingerprint,
    zoo_is_complete,
)


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    first = build_zoo(root, grid=zoo_mlp.TINY_GRID, workers=1)
    return root, first


def test_tiny_zoo_writes_hf_folders_and_truth(tiny_zoo):
    root, first = tiny_zoo
    specs = zoo_mlp.TINY_GRID.specs()
    assert first.trained == len(specs) == 4 and first.reused == 0 and first.kind == "mlp"
    truth = read_truth(root / "truth.csv")
    assert tuple(truth.columns) == zoo_mlp.TRUTH_COLUMNS
    assert sorted(truth["repo_id"]) == sorted(s.name for s in specs)
    assert truth["test_accuracy"].between(0, 1).all()
    for spec in specs:
        folder = root / spec.name
        cfg = json.loads((folder / "config.json").read_text())
        assert cfg["model_type"] == "ww-zoo-mlp" and cfg["hidden_sizes"] == list(zoo_mlp.TINY_GRID.hidden_sizes)
        tensors = load_file(str(folder / "model.safetensors"))  # real safetensors, readable by the library
        assert tensors["mlp.fc1.weight"].shape == (zoo_mlp.TINY_GRID.hidden_sizes[0], 64)
        assert tensors["mlp.fc3.weight"].shape == (10, zoo_mlp.TINY_GRID.hidden_sizes[-1])
        assert all(t.dtype == np.float32 for t in tensors.values())
        card = (folder / "README.md").read_text()
        meta = json.loads((folder / "zoo_meta.json").read_text())
        assert card.startswith("---\n") and f"value: {meta['test_accuracy']}" in card
        # trained in a process whose kernels were pinned before torch was imported
        assert meta["compute"]["aten_cpu_capability"] == "DEFAULT" and meta["compute"]["threads"] == 1
        row = truth[truth["repo_id"] == spec.name].iloc[0]
        assert row["test_accuracy"] == pytest.approx(meta["test_accuracy"])
        assert (row["label_noise"], row["batch_size"], row["epochs"]) == (spec.label_noise, spec.batch_size,
                                                                          spec.epochs)
        assert (row["steps"] == 0) == (spec.epochs == 0)  # the random-init member: no optimiser step
    assert not list(root.glob(".tmp-*"))  # atomic writes leave no temp folders


def test_second_run_is_a_noop(tiny_zoo):
    root, _ = tiny_zoo
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    again = build_zoo(root, grid=zoo_mlp.TINY_GRID, workers=1)
    assert again.trained == 0 and again.reused == 4
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == stamps
    assert zoo_is_complete(root, grid=zoo_mlp.TINY_GRID)
    assert not zoo_is_complete(root, grid=zoo_mlp.DEFAULT_GRID)
    assert not zoo_is_complete(root, grid=zoo_tfm.TINY_GRID)


def test_builds_are_bit_for_bit_the_same(tiny_zoo, tmp_path):
    """Another build of the same grid, with 2 processes instead of 1 (other scheduling, other process
    for each model): the same weights and the same truth. A changed seed changes the fingerprint."""
    root, _ = tiny_zoo
    other = build_zoo(tmp_path / "again", grid=zoo_mlp.TINY_GRID, workers=2)
    assert other.trained == 4
    assert zoo_fingerprint(tmp_path / "again") == zoo_fingerprint(root)
    assert (tmp_path / "again" / "truth.csv").read_bytes() == (root / "truth.csv").read_bytes()
    reseeded = dataclasses.replace(zoo_mlp.TINY_GRID, seeds=(1,))
    build_zoo(tmp_path / "reseeded", grid=reseeded, workers=2)
    assert zoo_fingerprint(tmp_path / "reseeded") != zoo_fingerprint(root)


def test_incomplete_folder_is_retrained_to_the_same_weights(tiny_zoo):
    root, _ = tiny_zoo
    victim = root / zoo_mlp.TINY_GRID.specs()[1].name
    before_weights = weights_digest(victim / "model.safetensors")
    (victim / "zoo_meta.json").unlink()
    before = pd.read_csv(root / "truth.csv")
    again = build_zoo(root, grid=zoo_mlp.TINY_GRID, workers=1)
    assert again.trained == 1
    pd.testing.assert_frame_equal(pd.read_csv(root / "truth.csv"), before)
    assert weights_digest(victim / "model.safetensors") == before_weights


def test_default_grids_are_the_fixed_experiments():
    assert set(KINDS) == set(DEFAULT_ZOOS) == {"mlp", "transformer", "conv"}
    mlp = zoo_mlp.DEFAULT_GRID.specs()
    assert len(mlp) == 57 and len({s.name for s in mlp}) == 57
    assert min(zoo_mlp.DEFAULT_GRID.hidden_sizes) >= 256
    assert {s.sweep for s in mlp} == {"label_noise", "batch_size", "epochs"}
    tfm = zoo_tfm.DEFAULT_GRID.specs()
    assert len(tfm) == 39 and len({s.name for s in tfm}) == 39
    assert {s.sweep for s in tfm} == {"epochs", "label_noise", "lr"}
    conv = zoo_cnn.DEFAULT_GRID.specs()
    assert len(conv) == 33 and {s.sweep for s in conv} == {"epochs", "label_noise", "lr"}
    for specs in (mlp, tfm, conv):  # random-init and barely trained members in every zoo, 3 seeds each
        assert sum(s.epochs == 0 for s in specs) == 3 and sum(s.epochs == 1 for s in specs) == 3


def test_file_in_place_of_folder_is_an_error(tmp_path):
    f = tmp_path / "zoo"
    f.write_text("x")
    with pytest.raises(ZooError, match="is a file"):
        build_zoo(f, grid=zoo_mlp.TINY_GRID, workers=1)
    with pytest.raises(ZooError, match="unknown zoo kind 'cnn'; choose one of: mlp, transformer, conv"):
        build_zoo(tmp_path / "z", kind="cnn")


def test_changed_architecture_is_not_reused(tmp_path):
    one = dataclasses.replace(zoo_mlp.TINY_GRID, sweeps=zoo_mlp.TINY_GRID.sweeps[:1], seeds=(0,))
    build_zoo(tmp_path, grid=one, workers=1)
    wider = dataclasses.replace(one, hidden_sizes=(48, 16))
    res = build_zoo(tmp_path, grid=wider, workers=1)
    assert res.trained == 2 and res.reused == 0  # same folder names, different models: retrained
    assert json.loads((tmp_path / one.specs()[0].name / "config.json").read_text())["hidden_sizes"] == [48, 16]


def test_training_refuses_a_process_whose_torch_is_not_pinned():
    """In this (test) process torch runs the host's own kernels: the pin must refuse to train here."""
    import torch

    assert torch.backends.cpu.get_cpu_capability() != "DEFAULT"
    with pytest.raises(ZooError, match="before its kernels were pinned"):
        _pinned_torch()
