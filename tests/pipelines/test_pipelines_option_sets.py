"""Option sets in scans (issue 10): the same folder scanned with two analysis option sets gives two sets of
rows side by side (different options_hash); a rescan with the same options skips, one with new options
analyses again; each leaderboard ranks its own set and `show` lists both. Real local Ray, real Prefect API."""

from __future__ import annotations

import json

import pytest
from pipelines_zoo import make_zoo
from support.catalog_data import run_cli

from catalogs.catalog import connect, leaderboard
from catalogs.store import ResultStore
from pipelines.flows import scan_folder
from pipelines.settings import OPTION_SETS, resolve_options
from ww_spectral.errors import OptionError
from ww_spectral.records import AnalysisOptions

FP = AnalysisOptions().fingerprint()
FP_MP = AnalysisOptions(mp_fit=True).fingerprint()


def _scan_cli(capsys, *argv: str) -> dict:
    assert run_cli(["scan", *argv, "--workers", "2", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _counts(summary: dict) -> tuple[int, int, int]:
    return summary["done"], summary["skipped"], summary["failed"]


@pytest.mark.slow
def test_two_option_sets_side_by_side(ray_local, prefect_api, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WW_SCAN_PROGRESS", "0")  # the CLI turns it on; restored after the test
    monkeypatch.setenv("PREFECT_LOGGING_LEVEL", "WARNING")
    make_zoo(tmp_path / "zoo", n_good=2, broken=False, quantized=False)
    zoo, data = str(tmp_path / "zoo"), str(tmp_path / "data")

    first = _scan_cli(capsys, "--folder", zoo, "--data", data)
    assert _counts(first) == (2, 0, 0)
    second = _scan_cli(capsys, "--folder", zoo, "--data", data, "--mp-fit")  # new options: analysed again
    assert _counts(second) == (2, 0, 0)
    # The same options again, named or as a flow parameter (JSON-able: a name, flags, an identity dict): skipped.
    assert _counts(_scan_cli(capsys, "--folder", zoo, "--data", data, "--options", "mp-fit")) == (0, 2, 0)
    assert _counts(scan_folder(folder=zoo, data_root=data, workers=2, options={"mp_fit": True})) == (0, 2, 0)
    assert _counts(scan_folder(folder=zoo, data_root=data, workers=2)) == (0, 2, 0)

    models = ResultStore(data).read("models").to_pylist()
    assert sorted((m["repo_id"], m["options_hash"]) for m in models) == sorted(
        (r, h) for r in ("m0", "m1") for h in (FP, FP_MP))
    by_set = {h: {m["repo_id"]: m for m in models if m["options_hash"] == h} for h in (FP, FP_MP)}
    assert all(m["mp_softrank"] is None for m in by_set[FP].values())
    assert all(m["mp_softrank"] is not None for m in by_set[FP_MP].values()), by_set[FP_MP]
    for name in ("m0", "m1"):  # same weights, same revision: the PL fit does not depend on mp_fit
        assert by_set[FP][name]["revision"] == by_set[FP_MP][name]["revision"]
        assert by_set[FP][name]["alpha"] == pytest.approx(by_set[FP_MP][name]["alpha"], rel=1e-12)

    con = connect(data)
    try:
        default = leaderboard(con)
        assert sorted(r[1] for r in default[1]) == ["m0", "m1"]  # one row per model: the sets never mix
        assert leaderboard(con, where="mp_softrank IS NOT NULL")[1] == []  # only default-option rows
        mp = leaderboard(con, where="mp_softrank IS NOT NULL", options_hash=FP_MP)
        assert sorted(r[1] for r in mp[1]) == ["m0", "m1"]
        assert leaderboard(con, where=f"options_hash = '{FP}'", options_hash=FP_MP)[1] == []
    finally:
        con.close()

    # The CLI chooses the set by flags or by hash; the default is the default analysis.
    assert run_cli(["leaderboard", "--data", data, "--format", "json", "--metric", "alpha",
                    "--where", "mp_softrank IS NOT NULL", "--options=--mp-fit"]) == 0
    assert sorted(r["repo_id"] for r in json.loads(capsys.readouterr().out)) == ["m0", "m1"]
    assert run_cli(["leaderboard", "--data", data, "--format", "json", "--where", "mp_softrank IS NOT NULL"]) == 0
    assert json.loads(capsys.readouterr().out) == []

    # show lists every option set stored for the model and shows the chosen one's rows.
    assert run_cli(["show", "m0", "--data", data, "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {(s["options_hash"], s["options_label"]) for s in doc["option_sets"]} == {(FP, "default"),
                                                                                     (FP_MP, "mp_fit")}
    assert doc["summary"]["options_hash"] == FP and doc["summary"]["mp_softrank"] is None
    assert run_cli(["show", "m0", "--data", data, "--format", "json", "--options-hash", FP_MP]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["summary"]["options_hash"] == FP_MP and doc["summary"]["mp_softrank"] is not None
    assert len(doc["layers"]) == 4
    assert run_cli(["show", "m0", "--data", data]) == 0
    out = capsys.readouterr().out
    assert FP in out and FP_MP in out and "mp_fit" in out


def test_option_sets_resolve_from_names_flags_and_dicts():
    assert resolve_options(None) == AnalysisOptions() == resolve_options("default")
    assert resolve_options("ww-full").fingerprint() == AnalysisOptions(randomize=True, mp_fit=True).fingerprint()
    assert resolve_options("--mp-fit").fingerprint() == FP_MP == resolve_options({"mp_fit": True}).fingerprint()
    for name, flags in OPTION_SETS.items():  # every named set is valid flags
        assert resolve_options(name) == resolve_options(flags)
    opts = AnalysisOptions(randomize=True, seed=3, fit="TPL")
    assert resolve_options(opts.identity()).fingerprint() == opts.fingerprint()  # the CLI passes identity()
    with pytest.raises(OptionError):
        resolve_options("--no-such-flag")
    with pytest.raises(OptionError):
        resolve_options({"mp_fti": True})
    with pytest.raises(OptionError):
        resolve_options(42)


def test_scan_help_shows_the_analysis_flags(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["scan", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--randomize", "--mp-fit", "--fit", "--fix-fingers", "--seed", "--include", "--options"):
        assert flag in text, flag
    assert "ww-full" in text
