"""The store and the catalog on an object store: a real S3-compatible server (moto's server mode) on
127.0.0.1, reached over HTTP by s3fs (writes) and by DuckDB through the registered fsspec filesystem
(httpfs cannot be installed offline here)."""

from __future__ import annotations

import json
import uuid

import pytest
from support.catalog_data import run_cli, write

from catalogs import catalog
from catalogs.compact import compact
from catalogs.store import ResultStore

moto_server = pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    client.create_bucket(Bucket="wwdata")
    opts = {
        "key": "test",
        "secret": "test",
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
    }
    yield {"endpoint": endpoint, "client": client, "opts": opts}
    server.stop()


@pytest.fixture
def root(s3):
    return f"s3://wwdata/runs/{uuid.uuid4().hex[:8]}"


def _keys(s3, root):
    prefix = root.removeprefix("s3://wwdata/") + "/"
    resp = s3["client"].list_objects_v2(Bucket="wwdata", Prefix=prefix)
    return sorted(o["Key"][len(prefix) :] for o in resp.get("Contents", []))


def test_write_has_model_and_noop_on_s3(s3, root):
    store = ResultStore(root, storage_options=s3["opts"])
    assert not store.has_model("org/a", "r1", "opt0")
    assert write(store, "org/a", [3.0, 4.0])
    key = store.model_key("org/a", "r1", "opt0")
    assert _keys(s3, root) == [
        f"_markers/owner=org/a.{key}.json",
        f"layers/owner=org/m-a.{key}.parquet",
        f"models/owner=org/m-a.{key}.parquet",
    ]
    assert store.has_model("org/a", "r1", "opt0")
    etags = {o["Key"]: o["ETag"] for o in s3["client"].list_objects_v2(Bucket="wwdata")["Contents"]}
    assert write(store, "org/a", [9.0]) is False
    assert {o["Key"]: o["ETag"] for o in s3["client"].list_objects_v2(Bucket="wwdata")["Contents"]} == etags
    assert store.read("models").column("alpha").to_pylist() == [3.5]
    # The last failure per revision: one dataset read of the failures files through the store's s3fs.
    store.write_failure(repo_id="org/b", revision="r1", stage="read", error_type="CheckpointError", message="m",
                        options_hash="opt0")
    assert {k: v["error_type"] for k, v in store.last_failures("opt0").items()} == {("org/b", "r1"): "CheckpointError"}


def test_catalog_over_s3_ranks_and_shows(s3, root, tmp_path):
    store = ResultStore(root, storage_options=s3["opts"])
    write(store, "org/a", [3.0, 4.0], model_type="llama")
    write(store, "org/b", [2.0, 2.5], model_type="llama")
    write(store, "lab/c", [5.0, 6.0], model_type="gpt2")
    db = tmp_path / "s3catalog.duckdb"
    con = catalog.connect(root, db_path=db, storage_options=s3["opts"])
    try:
        assert [r[1] for r in catalog.leaderboard(con, metric="alpha")[1]] == ["org/b", "org/a", "lab/c"]
        summary, layers = catalog.show_model(con, "org/a", storage_options=s3["opts"])
        assert summary[1][0][summary[0].index("alpha")] == 3.5 and len(layers[1]) == 2
        _, rows = catalog.query(con, "SELECT count(*) FROM layers")
        assert rows == [(6,)]
    finally:
        con.close()
    stats = compact(root, storage_options=s3["opts"], min_files=1)
    assert stats.files_written == 4  # layers + models x {org, lab}
    assert not [k for k in _keys(s3, root) if "/m-" in k]
    con = catalog.connect(root, db_path=db, storage_options=s3["opts"])
    try:
        assert [r[1] for r in catalog.leaderboard(con, metric="alpha")[1]] == ["org/b", "org/a", "lab/c"]
        assert catalog.query(con, "SELECT count(*) FROM layers")[1] == [(6,)]
    finally:
        con.close()
    assert store.has_model("lab/c", "r1", "opt0")


def test_cli_on_s3_with_environment_credentials(s3, root, tmp_path, monkeypatch, capsys):
    """The CLI takes the endpoint and keys from the standard AWS environment variables."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3["endpoint"])
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    store = ResultStore(root, storage_options=s3["opts"])
    write(store, "org/a", [3.0, 4.0])
    write(store, "org/b", [2.0, 2.5])
    assert run_cli(["catalog", "build", "--data", root]) == 0
    capsys.readouterr()
    assert run_cli(["leaderboard", "--data", root, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["rank"], r["repo_id"]) for r in rows] == [(1, "org/b"), (2, "org/a")]
    assert run_cli(["show", "org/b", "--data", root, "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["layers"]) == 2
