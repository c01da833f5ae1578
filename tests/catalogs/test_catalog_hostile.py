"""Hostile input to the catalog (issue 9, rows 4, 5, 6 and 13): user SQL reaches nothing outside the
store, read-only commands write nothing, a root with glob characters reads only itself, and a writer
killed between a model's two files shows no half model and leaves no temp file behind for good."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from support.catalog_data import killed_after, run_cli, write

from catalogs import catalog
from catalogs.compact import compact
from catalogs.store import TEMP_DIR, ResultStore, temp_file_name

SECRET = "TOKEN=hf_s3cr3t_value"


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under root with its size and mtime: what 'wrote nothing' compares."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A store, and beside it a secret file the SQL must not reach."""
    base = tmp_path_factory.mktemp("hostile")
    (base / "outside").mkdir()
    (base / "outside" / "secret.txt").write_text(SECRET + "\n")
    root = base / "store"
    store = ResultStore(root)
    write(store, "org/a", [2.5, 3.0, 3.5])
    write(store, "org/b", [2.0, 4.0, 9.0])
    return {"root": str(root), "secret": str(base / "outside" / "secret.txt"), "base": base}


# ---------------------------------------------------------------------------- row 4: SQL sandbox
@pytest.mark.parametrize(
    "sql",
    [
        "SELECT content FROM read_text('/proc/self/environ')",
        "SELECT content FROM read_text('{secret}')",
        "SELECT content FROM read_blob('{secret}')",
        "SELECT content FROM read_blob('/etc/passwd')",
        "SELECT * FROM read_csv('{secret}', header = false)",
        "SELECT * FROM glob('{home}/*')",
        "SELECT * FROM glob('{base}/outside/*')",
        "SELECT content FROM read_text('{root}/../outside/secret.txt')",  # traversal out of the root
        "SELECT * FROM query('SELECT content FROM read_text(''{secret}'')')",  # SQL inside SQL
        "SELECT * FROM parquet_metadata('{secret}')",
        "SELECT * FROM read_parquet('https://127.0.0.1:9/x.parquet')",  # would autoinstall httpfs
        "SELECT * FROM read_json('s3://some-bucket/x.json')",
    ],
)
def test_sql_reaches_nothing_outside_the_store(hostile, capsys, sql):
    text = sql.format(secret=hostile["secret"], home=Path.home(), base=hostile["base"], root=hostile["root"])
    assert run_cli(["sql", "--data", hostile["root"], "--format", "csv", text]) == 2, text
    out, err = capsys.readouterr()
    assert out == "" and SECRET not in err and "PATH=" not in err
    assert err.startswith("ww-spectral: error:") and "store's own files" in err, err
    assert len(err.strip().splitlines()) == 1


def test_where_is_no_oracle_on_file_contents(hostile, capsys):
    """A right and a wrong guess about the secret must give the same answer (an error), not rows/no rows."""
    answers = []
    for guess in ("TOKEN=hf%", "NOPE%"):
        where = f"EXISTS (SELECT 1 FROM read_text('{hostile['secret']}') WHERE content LIKE '{guess}')"
        code = run_cli(["leaderboard", "--data", hostile["root"], "--format", "csv", "--where", where])
        answers.append((code, capsys.readouterr().out))
    assert answers == [(2, ""), (2, "")]


def test_the_stores_own_files_stay_readable(hostile, capsys):
    """The sandbox keeps what the views need: the store's Parquet (and its other files) by path."""
    sql = f"SELECT count(*) AS n FROM read_parquet('{hostile['root']}/models/*/m-*.parquet')"
    assert run_cli(["sql", "--data", hostile["root"], "--format", "csv", sql]) == 0
    assert capsys.readouterr().out == "n\n2\n"


def test_the_sandbox_cannot_be_undone_from_sql(hostile):
    con = catalog.connect(hostile["root"])
    try:
        for statement in ("SET enable_external_access = true", "SET lock_configuration = false",
                          "SET allowed_directories = ['/']"):  # fmt: skip
            with pytest.raises(duckdb.Error, match="locked"):  # even past check_read_only, on the connection
                con.execute(statement).fetchall()
        settings = dict(catalog.query(con, "SELECT name, value FROM duckdb_settings()")[1])
        assert settings["enable_external_access"] == "false" and settings["lock_configuration"] == "true"
        assert settings["autoinstall_known_extensions"] == "false"
        assert settings["autoload_known_extensions"] == "false"
        assert int(settings["max_execution_time"]) == catalog.QUERY_TIMEOUT_S * 1000
    finally:
        con.close()


def test_a_query_past_the_time_limit_is_stopped(hostile, capsys):
    sql = "SELECT sum(hash(range)) FROM range(100000000000)"
    t0 = time.monotonic()
    assert run_cli(["sql", "--data", hostile["root"], "--timeout", "0.5", sql]) == 2
    assert time.monotonic() - t0 < 120  # the query alone would run for hours; a busy machine adds seconds
    assert "time limit" in capsys.readouterr().err


def test_a_catalog_file_connection_is_sandboxed_too(tmp_path, capsys):
    store = ResultStore(tmp_path / "store")
    write(store, "org/a", [3.0])
    (tmp_path / "secret.txt").write_text(SECRET)
    assert run_cli(["catalog", "build", "--data", str(tmp_path / "store")]) == 0
    capsys.readouterr()
    sql = f"SELECT content FROM read_text('{tmp_path / 'secret.txt'}')"
    assert run_cli(["sql", "--data", str(tmp_path / "store"), sql]) == 2
    assert SECRET not in capsys.readouterr().err


# ---------------------------------------------------------------------------- row 5: read-only writes nothing
def test_sql_on_an_empty_folder_writes_nothing(tmp_path, capsys, monkeypatch):
    empty, cwd = tmp_path / "empty", tmp_path / "cwd"
    empty.mkdir()
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert run_cli(["sql", "--data", str(empty), "--format", "csv", "select 42 AS x"]) == 0
    assert capsys.readouterr().out == "x\n42\n"
    for argv in (
        ["leaderboard", "--data", str(empty)],
        ["sql", "--data", str(empty), "SELECT * FROM failures"],
    ):
        assert run_cli(argv) == 0, argv
    assert run_cli(["show", "org/a", "--data", str(empty)]) == 2  # not in the store: an error, no write
    assert list(empty.iterdir()) == [] and list(cwd.iterdir()) == []


@pytest.mark.parametrize("built", [False, True], ids=["no catalog", "current catalog"])
def test_read_commands_write_nothing(tmp_path, capsys, built):
    root = tmp_path / "store"
    write(ResultStore(root), "org/a", [2.5, 3.0])
    if built:
        catalog.build_catalog(root)
    before = _tree(tmp_path)
    for argv in (["sql", "SELECT count(*) FROM layers"], ["leaderboard"], ["show", "org/a"]):
        assert run_cli([*argv, "--data", str(root)]) == 0, argv
    assert "org/a" in capsys.readouterr().out
    assert _tree(tmp_path) == before


def test_a_stale_catalog_is_not_rebuilt_by_a_read(tmp_path, capsys):
    root = tmp_path / "store"
    write(ResultStore(root), "org/a", [2.5, 3.0])
    path = catalog.build_catalog(root)
    con = duckdb.connect(str(path))  # make it stale, as an older version's catalog would be
    con.execute("UPDATE _catalog_meta SET fingerprint = 'old'").fetchall()
    con.close()
    before = _tree(tmp_path)
    assert run_cli(["leaderboard", "--data", str(root), "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("1,org/a,")
    assert _tree(tmp_path) == before


def test_missing_root_is_one_line_for_every_read_command(tmp_path, capsys):
    missing = tmp_path / "typo"
    for argv in (["sql", "select 1"], ["leaderboard"], ["show", "org/a"]):
        assert run_cli([*argv, "--data", str(missing)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "no store at" in err
    assert not missing.exists()


# ---------------------------------------------------------------------------- row 6: glob characters in the root
@pytest.mark.parametrize("name", ["st[1]", "st*", "st?", "st{1,x}", "st[!a]"])
def test_a_root_with_glob_characters_reads_only_itself(tmp_path, capsys, monkeypatch, name):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # where a 'st?' root keeps its catalog
    write(ResultStore(tmp_path / name), "org/mine", [3.0, 3.5])
    for decoy in ("st1", "stx", "sta"):  # what the unescaped pattern would also match
        write(ResultStore(tmp_path / decoy), f"org/other-{decoy}", [2.0])
    root = str(tmp_path / name)
    assert run_cli(["sql", "--data", root, "--format", "csv", "SELECT repo_id FROM models"]) == 0
    assert capsys.readouterr().out == "repo_id\norg/mine\n"
    assert run_cli(["show", "org/mine", "--data", root, "--format", "json"]) == 0
    assert '"repo_id": "org/mine"' in capsys.readouterr().out
    assert run_cli(["catalog", "build", "--data", root]) == 0  # the catalog file's views too
    assert "models=1," in capsys.readouterr().out
    assert run_cli(["sql", "--data", root, "--format", "csv", "SELECT count(*) AS n FROM layers"]) == 0
    assert capsys.readouterr().out == "n\n2\n"


def test_a_root_with_a_backslash_is_refused_in_one_line(tmp_path, capsys):
    root = tmp_path / "back\\slash"
    write(ResultStore(root), "org/a", [3.0])
    assert run_cli(["sql", "--data", str(root), "SELECT 1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "backslash" in err


# ---------------------------------------------------------------------------- row 13: killed between two files
_KILLED_WRITER = """
import time
from support.catalog_data import layer_rows, prov, summary
from catalogs import store as st

st._CHUNK_BYTES = 256


def pause(_n=0):
    print("paused", flush=True)
    time.sleep(600)


class Killable(st.ResultStore):
    def write_table(self, rel, table):
        if rel.startswith("models/"):
            if {mode!r} == "between":
                pause()  # the layers file is complete and visible on disk; the models file never comes
            self._on_chunk = pause  # mid-write: part of the models file sits in a temp file
        super().write_table(rel, table)


alphas = [2.5, 3.0, 3.5, 4.0]
Killable({root!r}).write_model(model=summary(alphas), layers=layer_rows(alphas), provenance=prov("org/killed"))
"""


def _kill_writer(root: Path, mode: str) -> None:
    assert killed_after(_KILLED_WRITER.format(root=str(root), mode=mode)) == ["paused\n"]


def _visible(root: Path) -> dict[str, list]:
    con = catalog.connect(root)
    try:
        out = {}
        for view in (
            "layers",
            "models",
            "model_summaries",
            "alpha_depth_profile",
            "layers_alpha_out_of_range",
        ):
            out[view] = sorted(catalog.query(con, f"SELECT DISTINCT repo_id FROM {view}")[1])
        return out
    finally:
        con.close()


@pytest.mark.parametrize("mode", ["between", "mid"])
def test_a_writer_killed_between_a_models_files_shows_no_half_model(tmp_path, mode):
    root = tmp_path / "store"
    store = ResultStore(root)
    write(store, "org/fine", [1.5, 3.0, 7.0])
    _kill_writer(root, mode)
    assert store.files("layers") and len(store.files("layers")) == 2  # the orphan layers file is on disk
    assert not store.has_model("org/killed", "r1", "opt0")
    shown = _visible(root)
    assert all(rows == [("org/fine",)] for rows in shown.values()), shown
    compact(root, min_files=1)  # an incomplete revision is not merged ...
    assert _visible(root) == shown
    assert [f for f in store.files("layers", kind="m") if "killed" in f]  # ... it stays a per-model file
    assert write(store, "org/killed", [2.5, 3.0, 3.5, 4.0])  # the re-run completes it, once
    con = catalog.connect(root)
    try:
        rows = catalog.query(con, "SELECT count(*) FROM layers WHERE repo_id = 'org/killed'")[1]
    finally:
        con.close()
    assert rows == [(4,)]


def test_a_killed_writers_temp_file_is_removed_by_the_next_write(tmp_path):
    root = tmp_path / "store"
    store = ResultStore(root)
    write(store, "org/fine", [3.0])
    _kill_writer(root, "mid")
    temps = list((root / TEMP_DIR).iterdir())
    assert len(temps) == 1 and temps[0].stat().st_size > 0  # left by the killed process
    write(store, "org/next", [3.0])
    assert list((root / TEMP_DIR).iterdir()) == []


def test_stale_temp_rules_keep_live_writers_files(tmp_path):
    store = ResultStore(tmp_path)
    write(store, "org/a", [3.0])
    temp_dir = tmp_path / TEMP_DIR
    live = temp_dir / temp_file_name()  # this process: alive
    other_host = temp_dir / "elsewhere-1-bbbb.tmp"  # another host: judged by age only
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    gone = temp_dir / temp_file_name(int(dead.stdout))  # a pid that has exited
    old = temp_dir / "elsewhere-2-dddd.tmp"
    for p in (live, other_host, gone, old):
        p.write_bytes(b"x")
    ancient = time.time() - 7 * 3600
    os.utime(old, (ancient, ancient))
    assert store.clean_stale_temps() == 2
    assert sorted(p.name for p in temp_dir.iterdir()) == sorted([live.name, other_host.name])
    compact(tmp_path)  # compaction cleans with the same rule
    assert live.exists() and other_host.exists()
