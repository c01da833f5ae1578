"""Declared schemas: built from LAYER_COLUMNS, conformance errors name the column, NaN stored as NULL."""

from __future__ import annotations

import datetime as dt
import math

import pandas as pd
import pyarrow as pa
import pytest
from support.catalog_data import layer_rows

from catalogs.errors import SchemaError
from catalogs.schema import LAYERS_SCHEMA, MODELS_SCHEMA, PROVENANCE_FIELDS, SCHEMAS, Provenance, conform
from catalogs.store import ResultStore
from ww_spectral.columns import LAYER_COLUMN_NAMES


def _prov_cols(n=1):
    p = Provenance(repo_id="o/m", revision="abc", options_hash="h")
    return {
        **{k: [v] * n for k, v in p.as_columns().items()},
        "record_key": ["k"] * n,
        "schema_version": [1] * n,
    }


def test_layers_schema_is_provenance_plus_layer_columns_in_order():
    prov = [f.name for f in PROVENANCE_FIELDS]
    assert LAYERS_SCHEMA.names == prov + list(LAYER_COLUMN_NAMES)
    kinds = {"alpha": pa.float64(), "layer_id": pa.int64(), "status": pa.string()}
    for name, typ in kinds.items():
        assert LAYERS_SCHEMA.field(name).type == typ
    for table, schema in SCHEMAS.items():
        assert schema.metadata[b"table"] == table.encode()
        for name in ("repo_id", "revision", "ww_spectral_version", "options_hash", "analysed_at"):
            assert name in schema.names, (table, name)


def test_models_schema_has_summary_keys_and_facts():
    for k in (
        "alpha",
        "alpha_weighted",
        "log_norm",
        "log_spectral_norm",
        "share_alpha_2_6",
        "n_tensors",
        "parameter_count",
        "architecture",
        "model_type",
        "pipeline_tag",
        "base_model",
        "downloads",
    ):
        assert k in MODELS_SCHEMA.names


def test_conform_reorders_casts_and_turns_nan_into_null():
    rows = layer_rows([3.0, None])
    df = pd.DataFrame(rows).assign(**{k: v for k, v in _prov_cols(2).items()})
    df = df[list(reversed(df.columns))]  # any column order
    df["N"] = df["N"].astype("int32")  # narrower int casts losslessly
    t = conform(df, "layers")
    assert t.schema == LAYERS_SCHEMA
    assert t.column("alpha").to_pylist() == [3.0, None]  # NaN of the skipped row -> NULL
    assert t.column("N").type == pa.int64()


def test_conform_missing_required_column_names_it():
    rows = layer_rows([3.0])
    for r in rows:
        del r["alpha"]
    df = pd.DataFrame(rows).assign(**_prov_cols())
    with pytest.raises(SchemaError, match="'alpha'"):
        conform(df, "layers")


def test_conform_mistyped_column_names_it():
    df = pd.DataFrame(layer_rows([3.0])).assign(**_prov_cols())
    df["alpha"] = "three"
    with pytest.raises(SchemaError, match="'alpha' has type .*string.*declared double"):
        conform(df, "layers")
    df = pd.DataFrame(layer_rows([3.0])).assign(**_prov_cols())
    df["layer_id"] = 1.5  # a fractional value does not cast to int64 losslessly
    with pytest.raises(SchemaError, match="'layer_id'"):
        conform(df, "layers")


def test_conform_unknown_column_is_refused():
    df = pd.DataFrame(layer_rows([3.0])).assign(**_prov_cols(), surprise=1)
    with pytest.raises(SchemaError, match="surprise"):
        conform(df, "layers")


def test_optional_model_columns_default_to_null():
    t = conform([{**{k: v[0] for k, v in _prov_cols().items()}, "alpha": 3.0}], "models")
    assert t.column("parameter_count").to_pylist() == [None]
    assert t.column("alpha").to_pylist() == [3.0]


def test_provenance_is_frozen_and_validated():
    p = Provenance(repo_id="o/m", revision="abc", options_hash="h")
    with pytest.raises(AttributeError):
        p.revision = "x"
    assert p.analysed_at.tzinfo is not None and p.ww_spectral_version
    with pytest.raises(SchemaError, match="revision"):
        Provenance(repo_id="o/m", revision="", options_hash="h")
    with pytest.raises(SchemaError, match="timezone"):
        Provenance(repo_id="o/m", revision="a", options_hash="h", analysed_at=dt.datetime(2026, 1, 1))


def test_write_model_rejects_bad_layers_before_writing_anything(tmp_path):
    store = ResultStore(tmp_path)
    rows = layer_rows([3.0])
    rows[0]["alpha"] = "bad"
    with pytest.raises(SchemaError, match="alpha"):
        store.write_model(
            model={}, layers=rows, provenance=Provenance(repo_id="o/m", revision="r", options_hash="h")
        )
    assert not list(tmp_path.rglob("*.parquet")) and not list(tmp_path.rglob("*.json"))


def test_nan_summary_values_are_stored_as_null(tmp_path):
    store = ResultStore(tmp_path)
    store.write_model(
        model={"alpha": math.nan, "alpha_weighted": 2.5},
        layers=layer_rows([2.5]),
        provenance=Provenance(repo_id="o/m", revision="r", options_hash="h"),
    )
    t = store.read("models")
    assert t.column("alpha").to_pylist() == [None] and t.column("alpha_weighted").to_pylist() == [2.5]
