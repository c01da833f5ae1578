"""Fixtures of the proof tests: a data root filled with real analyses of tiny checkpoints, fast."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.checkpoints import random_tensors, write_safetensors

from catalogs.schema import Provenance
from catalogs.store import ResultStore
from ww_spectral.analysis import analyze_model


def _store_models(data_root: Path, folders: list[Path], **options) -> None:
    """Analyse each model folder (the library's analyze_model, with analysis `options`) and write it to
    the store under data_root as a folder scan does: its model record (options_json included) and its
    layer rows."""
    store = ResultStore(str(data_root))
    for folder in folders:
        ma = analyze_model(str(folder), **options)
        store.write_model(model=ma.model_record(source_kind="folder"), layers=ma.layers,
                          provenance=Provenance(repo_id=ma.ref.repo_id, revision=ma.ref.revision,
                                                options_hash=ma.options.fingerprint()))


def _tiny_model(folder: Path, *, seed: int = 0, tensor: str = "fc") -> Path:
    """A model folder with two small dense layers (`{tensor}1.weight`, `{tensor}2.weight`) in
    model.safetensors; analysing it takes milliseconds."""
    folder.mkdir(parents=True, exist_ok=True)
    write_safetensors(folder / "model.safetensors",
                      random_tensors({f"{tensor}1.weight": (48, 24), f"{tensor}2.weight": (24, 16)}, seed=seed))
    return folder


@pytest.fixture(scope="session")
def store_models():
    """store_models(data_root, folders): analyse and store model folders (see _store_models)."""
    return _store_models


@pytest.fixture(scope="session")
def tiny_model():
    """tiny_model(folder, seed=0, tensor="fc") -> folder: a two-layer model folder (see _tiny_model)."""
    return _tiny_model
