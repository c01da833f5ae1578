"""Links (duplicate weight bytes) in the store, and the family leaderboard on hand-made delta rows."""

from __future__ import annotations

import pytest
from support.catalog_data import layer_rows, prov, run_cli, summary

from catalogs import catalog
from catalogs.errors import CatalogError
from catalogs.family import family_leaderboard
from catalogs.store import ResultStore

BASE = "org/base"


def _write(store, repo_id, own, *, deltas=(), kind="base_delta", base=BASE, quant="", revision="r1", **facts):
    """A model with own rows (alphas `own`) and update rows (alphas `deltas`) against `base`@b0."""
    rows = layer_rows(own)
    for r in rows:
        r["quant_format"] = quant
    for i, r in enumerate(layer_rows(deltas)):
        r.update(layer_id=len(own) + i, delta_kind=kind, base_ref=f"{base}@b0")
        rows.append(r)
    store.write_model(model=summary(list(own), **facts), layers=rows, provenance=prov(repo_id, revision))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("family")
    store = ResultStore(root)
    _write(store, BASE, [3.0, 3.0], revision="b0")
    # delta medians: ft-a 4.0, ft-b 2.5, ft-c 3.0 (own rows all alike: raw metrics cannot tell them apart)
    _write(store, "org/ft-a", [3.0, 3.0], deltas=[3.0, 5.0, 4.0], base_model=BASE)
    _write(store, "org/ft-b", [3.0, 3.0], deltas=[2.0, 3.0, 2.5], base_model=BASE)
    _write(store, "org/ft-c", [3.0, 3.0], deltas=[3.0, 3.0, 3.0], base_model=BASE)
    _write(store, "org/lora", [3.0], deltas=[2.2, 2.2], kind="lora_update", base_model=BASE)
    _write(store, "org/fp8", [3.1, 3.1], quant="fp8_e4m3", base_model=BASE)
    # another family: its fine-tune must not be ranked among BASE's
    _write(store, "other/base", [4.0], revision="b0")
    _write(store, "other/ft", [4.0], deltas=[1.0], base="other/base", base_model="other/base")
    store.write_link(repo_id="mirror/ft-b", revision="m1", options_hash="opt0", linked_repo_id="org/ft-b",
                     linked_revision="r1", sha256s={"model.safetensors": "ab" * 32}, linked_stored=True)
    catalog.build_catalog(root)
    return root, store


def test_links_are_stored_and_count_as_stored(data):
    _, store = data
    assert store.has_model("mirror/ft-b", "m1", "opt0")  # a later scan skips it from the listing
    (row,) = store.read_links().to_pylist()
    assert (row["linked_repo_id"], row["linked_revision"], row["linked_stored"]) == ("org/ft-b", "r1", True)
    # a link to a revision still being analysed: no marker, the next scan looks again
    store.write_link(repo_id="mirror/x", revision="m2", options_hash="opt0", linked_repo_id="org/x",
                     linked_revision="r9", sha256s={"a": "cd" * 32}, linked_stored=False)
    assert not store.has_model("mirror/x", "m2", "opt0")


def test_content_claims_are_exclusive(tmp_path):
    store = ResultStore(tmp_path)
    digest = ResultStore.content_digest(["bb" * 32, "aa" * 32])
    assert digest == ResultStore.content_digest(["AA" * 32, "bb" * 32])  # order and case do not count
    assert store.claim_content(digest, "opt0", "org/a", "r1") is None      # ours
    assert store.claim_content(digest, "opt0", "org/a", "r1") is None      # ours again (a retried attempt)
    held = store.claim_content(digest, "opt0", "org/b", "r2")              # someone else's: link to it
    assert (held["repo_id"], held["state"]) == ("org/a", "claimed")
    assert store.claim_content(digest, "opt1", "org/b", "r2") is None      # other options: its own content
    # a claim whose revision was never stored, older than stale_s, is taken over
    assert store.claim_content(digest, "opt0", "org/b", "r2", stale_s=-1) is None
    store.content_stored(digest, "opt0", "org/b", "r2")
    assert store.claim_content(digest, "opt0", "org/c", "r3", stale_s=-1)["state"] == "stored"


def test_family_leaderboard_ranks_updates_within_the_family(data):
    root, _ = data
    con = catalog.connect(root)
    try:
        cols, rows = family_leaderboard(con, BASE, options_hash="opt0")
        got = [dict(zip(cols, r)) for r in rows]
        # ranked by the median alpha of the update rows; the base and the fp8 copy unranked; the mirror last
        assert [(g["repo_id"], g["rank"], g["kind"]) for g in got] == [
            ("org/lora", 1, "adapter"), ("org/ft-b", 2, "fine-tune"), ("org/ft-c", 3, "fine-tune"),
            ("org/ft-a", 4, "fine-tune"), (BASE, None, "base"), ("org/fp8", None, "quantised"),
            ("mirror/ft-b", None, "link")]
        assert {g["family"] for g in got} == {BASE}
        assert got[-1]["linked_to"] == "org/ft-b@r1" and got[-1]["delta_alpha"] == got[1]["delta_alpha"] == 2.5
        assert got[5]["quant_format"] == "fp8_e4m3" and got[1]["base_ref"] == f"{BASE}@b0"
        # another metric, another order (mean log norm: equal for all -> ties share rank 1)
        _, rows = family_leaderboard(con, BASE, metric="delta_alpha_weighted", options_hash="opt0", top=2)
        assert [r[2] for r in rows if r[1] is not None] == ["org/lora", "org/ft-b"]
        _, every = family_leaderboard(con, None, options_hash="opt0")
        assert {r[0] for r in every} == {BASE, "other/base"}
        assert [(r[2], r[1]) for r in every if r[0] == "other/base"] == [("other/ft", 1), ("other/base", None)]
        assert catalog.query(con, "SELECT count(*) FROM model_links")[1] == [(2,)]
        with pytest.raises(CatalogError, match="delta_alpha"):
            family_leaderboard(con, BASE, metric="alpha", options_hash="opt0")
    finally:
        con.close()


def test_family_leaderboard_cli(data, capsys):
    root, _ = data
    assert run_cli(["leaderboard", "--data", str(root), "--family", BASE, "--options-hash", "0" * 16]) == 0
    capsys.readouterr()
    assert run_cli(["leaderboard", "--data", str(root), "--family", "all", "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert "org/ft-b" in out and "mirror/ft-b" in out
