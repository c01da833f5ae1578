"""CLI: formats pipe cleanly (csv/json parse, no decorations), tables fit the terminal, writes are refused,
unknown names list the allowed ones; the real `ww-spectral` entry point in subprocesses."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from support.catalog_data import run_cli, write

from catalogs import cli
from catalogs.catalog import check_read_only, connect, run_sql
from catalogs.errors import ReadOnlyError
from catalogs.store import ResultStore


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    store = ResultStore(root)
    write(store, "org/a", [2.5, 3.0, 3.5], model_type="llama", pipeline_tag="text-generation")
    write(store, "org/b", [2.0, 4.0, 9.0], model_type="llama", pipeline_tag="text-generation")
    write(store, "lab/c", [1.5, 1.8, 2.1], model_type="gpt2", pipeline_tag="fill-mask")
    assert run_cli(["catalog", "build", "--data", str(root)]) == 0
    return str(root)


TIERED_HEADER = "rank,repo_id,tier,tier_name,share_alpha_2_6,share_random_like,alpha_weighted,revision"


def test_leaderboard_csv_is_one_row_per_model(root, capsys):
    # default: tier first (org/a: every layer in 2..6 -> tier 1; lab/c, org/b: 1 and 2 of 3 -> tier 2)
    assert run_cli(["leaderboard", "--data", root, "--format", "csv"]) == 0
    out = capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["rank"], r["repo_id"], r["tier"]) for r in rows] == [("1", "org/a", "1"), ("2", "lab/c", "2"),
                                                                     ("3", "org/b", "2")]  # fmt: skip
    assert out.splitlines()[0] == TIERED_HEADER  # no banner, no footer
    assert rows[1]["tier_name"] == "mixed" and float(rows[1]["share_alpha_2_6"]) == pytest.approx(1 / 3)
    # one metric alone: WeightWatcher's order, the columns of before
    assert run_cli(["leaderboard", "--data", root, "--format", "csv", "--metric", "alpha_weighted"]) == 0
    out = capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["rank"], r["repo_id"]) for r in rows] == [("1", "lab/c"), ("2", "org/a"), ("3", "org/b")]
    assert float(rows[0]["alpha_weighted"]) == pytest.approx(1.8)  # full precision, no rounding
    assert out.splitlines()[0] == "rank,repo_id,alpha_weighted,revision"


def test_leaderboard_csv_with_group_columns_and_json(root, capsys):
    assert (
        run_cli(
            [
                "leaderboard",
                "--data",
                root,
                "--group-by",
                "model_type",
                "--metric",
                "alpha",
                "--format",
                "csv",
            ]
        )
        == 0
    )
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["model_type"], r["rank"], r["repo_id"]) for r in rows] == [
        ("gpt2", "1", "lab/c"),
        ("llama", "1", "org/a"),
        ("llama", "2", "org/b"),
    ]
    assert (
        run_cli(
            [
                "leaderboard",
                "--data",
                root,
                "--where",
                "pipeline_tag = 'text-generation'",
                "--top",
                "1",
                "--format",
                "json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out) == [
        {"rank": 1, "repo_id": "org/a", "tier": 1, "tier_name": "well trained", "share_alpha_2_6": 1.0,
         "share_random_like": 0.0, "alpha_weighted": 3.0, "revision": "r1"}
    ]


def test_markdown_and_table(root, capsys, monkeypatch):
    assert run_cli(["leaderboard", "--data", root, "--format", "markdown", "--metric", "alpha_weighted"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| rank | repo_id | alpha_weighted | revision |" and lines[1] == "|---:|---|---:|---|"
    assert lines[2] == "| 1 | lab/c | 1.8000 | r1 |" and len(lines) == 5
    monkeypatch.setenv("COLUMNS", "60")
    assert run_cli(["sql", "--data", root, "SELECT * FROM layers"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert all(len(line) <= 60 for line in out[:-1]), out
    assert out[-1].startswith("(9 rows;") and "more columns not shown" in out[-1]


def test_sql_json_and_refused_writes(root, capsys):
    assert (
        run_cli(
            [
                "sql",
                "--data",
                root,
                "--format",
                "json",
                "SELECT repo_id, count(*) AS n FROM layers GROUP BY repo_id ORDER BY repo_id",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out) == [
        {"repo_id": "lab/c", "n": 3},
        {"repo_id": "org/a", "n": 3},
        {"repo_id": "org/b", "n": 3},
    ]
    for stmt in (
        "DELETE FROM models",
        "CREATE TABLE x AS SELECT 1",
        "COPY (SELECT 1) TO '/tmp/x.csv'",
        "SELECT 1; DROP VIEW layers",
        "ATTACH '/tmp/other.duckdb'",
        "INSTALL httpfs",
        "SET threads = 1",
        "EXPLAIN ANALYZE COPY (SELECT 1) TO '/tmp/x.csv'",
    ):
        assert run_cli(["sql", "--data", root, stmt]) == 2, stmt
        err = capsys.readouterr().err
        assert err.startswith("ww-spectral: error:") and ("refused" in err or "exactly one" in err), err


def test_check_read_only_parse_level():
    check_read_only("WITH t AS (SELECT 1) SELECT * FROM t")
    check_read_only("SELECT * FROM models -- trailing comment")
    with pytest.raises(ReadOnlyError, match="INSERT"):
        check_read_only("INSERT INTO models SELECT * FROM models")


def test_connection_is_read_only_underneath(root):
    con = connect(root)
    try:
        with pytest.raises(duckdb.Error, match="read-only"):
            con.execute("CREATE TABLE t AS SELECT 1").fetchall()
    finally:
        con.close()


def test_unknown_metric_and_group(root, capsys):
    assert run_cli(["leaderboard", "--data", root, "--metric", "accuracy"]) == 2
    err = capsys.readouterr().err
    assert "unknown metric 'accuracy'" in err and "alpha_weighted" in err and "share_alpha_2_6" in err
    assert run_cli(["leaderboard", "--data", root, "--group-by", "size"]) == 2
    assert "param_bucket" in capsys.readouterr().err


def test_show(root, capsys):
    assert run_cli(["show", "org/b", "--data", root]) == 0
    out = capsys.readouterr().out
    assert "repo_id  org/b" in out and "n_alpha_gt_6  1" in out
    assert "model.layers.2.mlp.weight" in out
    assert run_cli(["show", "org/b", "--data", root, "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["summary"]["alpha"] == 5.0 and [r["alpha"] for r in doc["layers"]] == [2.0, 4.0, 9.0]
    assert run_cli(["show", "org/nope", "--data", root]) == 2
    assert "not in the store" in capsys.readouterr().err


def test_compact_command(tmp_path, capsys):
    store = ResultStore(tmp_path)
    write(store, "org/a", [3.0])
    write(store, "org/b", [4.0])
    assert run_cli(["catalog", "compact", "--data", str(tmp_path)]) == 0
    assert "compacted 4 files into 2" in capsys.readouterr().out
    assert run_cli(["leaderboard", "--data", str(tmp_path), "--format", "csv", "--metric", "alpha"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == ["1,org/a,3.0,r1", "2,org/b,4.0,r1"]


def _ww(*args, env=None):
    exe = Path(sys.executable).with_name("ww-spectral")
    return subprocess.run(
        [str(exe), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        cwd="/",
    )


@pytest.mark.slow  # two cold `ww-spectral` processes: >10 s on a loaded 2-core machine
def test_entry_point_pipes_csv_and_refuses_writes(root):
    r = _ww("leaderboard", "--data", root, "--format", "csv", "--metric", "alpha_weighted")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "rank,repo_id,alpha_weighted,revision",
        "1,lab/c,1.8,r1",
        "2,org/a,3.0,r1",
        "3,org/b,5.0,r1",
    ]
    r = _ww("sql", "--data", root, "DROP VIEW models")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == (
        "ww-spectral: error: refused: DROP statement; the sql command is read-only and "
        "runs one SELECT over the views layers, models, failures, scans (and the other "
        "catalog views)"
    )


def test_missing_root_is_a_clear_error_and_creates_nothing(tmp_path, capsys):
    missing = tmp_path / "typo"
    assert run_cli(["leaderboard", "--data", str(missing)]) == 2
    assert "no store at" in capsys.readouterr().err and not missing.exists()


def test_empty_store_gives_empty_leaderboard(tmp_path, capsys):
    assert run_cli(["leaderboard", "--data", str(tmp_path), "--format", "csv"]) == 0
    assert capsys.readouterr().out == TIERED_HEADER + "\n"


def test_sql_select_star_from_models_shows_the_metrics_first(root, capsys):
    cols, _ = run_sql(root, "SELECT * FROM models")
    assert cols[:4] == ["repo_id", "revision", "alpha_weighted", "alpha"]
    assert cols.index("share_alpha_2_6") < cols.index("n_tensors") < cols.index("parameter_count")
    assert cols[-6:] == ["ww_spectral_version", "options_hash", "analysed_at", "record_key", "schema_version",
                         "owner"]  # fmt: skip


def test_tables_show_short_revisions_and_fixed_decimals(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    store = ResultStore(tmp_path)
    sha = "0123456789abcdef0123456789abcdef01234567"
    write(store, "org/long", [2.5, 3.0, 3.25], revision=sha)
    write(store, "org/big", [3.0, 3.0], revision="r2", log_norm=12345.678)
    assert run_cli(["leaderboard", "--data", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sha[:12] in lines[2] and sha[:13] not in lines[2]
    aw = [line.split()[-2] for line in lines[2:4]]  # right-aligned, 4 decimals
    assert aw == ["2.9167", "3.0000"] and lines[2].index("2.9167") == lines[3].index("3.0000")
    assert run_cli(["sql", "--data", str(tmp_path), "SELECT repo_id, log_norm FROM models ORDER BY 1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2].endswith("12345.6780") and out[3].endswith("     2.0000")
    assert run_cli(["leaderboard", "--data", str(tmp_path), "--format", "csv"]) == 0
    assert sha in capsys.readouterr().out  # pipes keep the whole revision
    assert run_cli(["show", f"org/long@{sha[:12]}", "--data", str(tmp_path)]) == 0  # the prefix tables show
    assert f"org/long@{sha[:12]}:" in capsys.readouterr().out


def _options_without_default(parser) -> list[str]:
    """Options of every catalog command whose help does not state its default."""
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                missing += [f"{name} {m}" for m in _options_without_default(sub)]
        elif action.option_strings and action.dest != "help" and "default" not in (action.help or ""):
            missing.append("/".join(action.option_strings))
    return missing


def test_every_help_states_its_defaults_and_describes_the_command():
    top = argparse.ArgumentParser()
    sub = top.add_subparsers()
    cli.register(sub)
    assert _options_without_default(top) == []
    for name, parser in sub.choices.items():
        assert parser.description, name
    help_text = " ".join(sub.choices["leaderboard"].format_help().split())
    assert "(default: ./ww-data)" in help_text and "catalogs/metrics.py" in help_text
