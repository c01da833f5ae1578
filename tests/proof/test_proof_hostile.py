"""The report against hostile names and hostile output folders (issue 9, rows 1, 11 and 12).

Row 1: `report --out` never deletes or overwrites what it did not write: it writes a new folder, or one
that a previous report marked, and refuses the data root itself, folders inside it and above it.
Row 11: '$\\foo{$' in a repo id or a tensor name is drawn and printed as written (no mathtext crash).
Row 12: names that differ only by space vs underscore (or by case) get pages of their own.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest

from pipelines.cli import main


def _digest(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under root (what must survive a refused report)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture()
def workspace(tmp_path, monkeypatch, store_models, tiny_model):
    """The README's layout: the user's checkpoints in ./models, the store in ./ww-data, cwd = the folder."""
    models = tmp_path / "models"
    folders = [tiny_model(models / f"m{i}", seed=i) for i in range(2)]
    (models / "NOTES.txt").write_text("my own notes\n")
    data = tmp_path / "ww-data"
    store_models(data, folders)
    monkeypatch.chdir(tmp_path)
    return tmp_path, models, data


def _refused(capsys, argv: list[str], *protected: Path) -> str:
    before = {str(p): _digest(p) for p in protected}
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ww-spectral: error:") and "Traceback" not in err
    assert {str(p): _digest(p) for p in protected} == before  # nothing deleted, nothing overwritten
    return err


def test_report_into_the_working_folder_deletes_no_checkpoint(workspace, capsys):
    base, models, data = workspace
    listing = sorted(p.name for p in base.iterdir())
    err = _refused(capsys, ["report", "--data", "ww-data", "--out", "."], models, data)
    assert "data root" in err  # the folder above the store
    os.chdir(models)  # the checkpoints' own folder, the store elsewhere
    err = _refused(capsys, ["report", "--data", str(data), "--out", "."], models, data)
    assert "working folder" in err
    os.chdir(base)
    err = _refused(capsys, ["report", "--data", "ww-data", "--out", "models"], models, data)
    assert "not empty" in err and "marker" in err
    assert sorted(p.name for p in base.iterdir()) == listing  # and nothing was written beside them


@pytest.mark.parametrize("where", ["root", "inside", "inside-new", "above"])
def test_report_into_or_around_the_data_root_is_refused(workspace, capsys, where):
    base, models, data = workspace
    out = {"root": data, "inside": data / "models", "inside-new": data / "report",
           "above": base}[where]
    err = _refused(capsys, ["report", "--data", str(data), "--out", str(out)], models, data)
    assert "data root" in err or "not empty" in err
    assert not (data / "report").exists()


def test_a_folder_with_other_files_is_refused_a_marked_one_replaced(workspace, capsys):
    base, models, data = workspace
    other = base / "mine"
    other.mkdir()
    (other / "index.html").write_text("my page")
    _refused(capsys, ["report", "--data", "ww-data", "--out", "mine"], other)

    out = base / "rep"
    assert main(["report", "--data", "ww-data", "--out", "rep", "--models-dir", "models"]) == 0
    capsys.readouterr()
    marker = out / ".ww-spectral-report"
    assert marker.is_file() and (out / "index.html").is_file()
    pages = sorted(p.name for p in (out / "models").iterdir())
    assert len(pages) == 2
    # a stale file the report itself wrote (a page of a model gone since) disappears on the next run
    (out / "models" / "stale.html").unlink(missing_ok=True)
    assert main(["report", "--data", "ww-data", "--out", "rep"]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in (out / "models").iterdir()) == pages
    assert not [p for p in base.iterdir() if p.name.startswith(".rep")]  # no temp sibling left behind
    # a file the user put into the report folder: refused, kept
    (out / "img" / "my-drawing.png").write_bytes(b"mine")
    _refused(capsys, ["report", "--data", "ww-data", "--out", "rep"], out)
    assert (out / "img" / "my-drawing.png").read_bytes() == b"mine"


@pytest.mark.parametrize("marker", [b"", b"{" * 100_000, b"\xff\xfe", b'{"files": ["../../models/m0"]}',
                                    b"x" * (8 << 20)])
def test_a_forged_marker_is_refused_in_one_line(workspace, capsys, marker):
    base, models, data = workspace
    out = base / "rep"
    out.mkdir()
    (out / ".ww-spectral-report").write_bytes(marker)
    (out / "index.html").write_text("not ours")
    _refused(capsys, ["report", "--data", "ww-data", "--out", "rep"], out, models)


def test_a_marker_cannot_claim_files_outside_the_report(workspace, capsys):
    """A marker listing '../models' must not make the next report delete the user's checkpoints."""
    base, models, data = workspace
    assert main(["report", "--data", "ww-data", "--out", "rep"]) == 0
    capsys.readouterr()
    marker = base / "rep" / ".ww-spectral-report"
    marker.write_text(marker.read_text().replace('"index.html"', '"index.html", "../models/m0/model.safetensors"'))
    before = _digest(models)
    main(["report", "--data", "ww-data", "--out", "rep"])
    capsys.readouterr()
    assert _digest(models) == before


def test_out_that_is_a_file_or_a_link_is_refused(workspace, capsys):
    base, models, data = workspace
    (base / "afile").write_text("keep")
    _refused(capsys, ["report", "--data", "ww-data", "--out", "afile"], models)
    assert (base / "afile").read_text() == "keep"
    os.symlink(models, base / "link")
    _refused(capsys, ["report", "--data", "ww-data", "--out", "link"], models)
    assert (base / "link").is_symlink()


# ---------------------------------------------------------------------------------------------- names
def _pages(out: Path) -> dict[str, str]:
    """{h1 text of each model page: file name}."""
    found = {}
    for page in (out / "models").glob("*.html"):
        h1 = re.search(r"<h1>(.*?)</h1>", page.read_text()).group(1)
        found[h1] = page.name
    return found


def test_names_that_differ_by_space_or_case_get_their_own_pages(tmp_path, capsys, store_models, tiny_model):
    names = ["a b", "a_b", "A_b", "a__b"]
    folders = [tiny_model(tmp_path / "models" / n, seed=i) for i, n in enumerate(names)]
    store_models(tmp_path / "data", folders)
    out = tmp_path / "rep"
    assert main(["report", "--data", str(tmp_path / "data"), "--out", str(out), "--no-layer-plots"]) == 0
    capsys.readouterr()
    pages = _pages(out)
    assert sorted(pages) == sorted(names)  # four pages, each showing its own model
    assert len({p.lower() for p in pages.values()}) == 4  # distinct even on a case-insensitive disk
    index = (out / "index.html").read_text()
    links = re.findall(r'<a href="models/([^"]+)">([^<]+)</a>', index)
    assert {text: href for href, text in links} == pages  # each leaderboard link opens its own page
    imgs = {p.name for p in (out / "img").iterdir() if p.is_dir()}
    assert len(imgs) == 4


def test_mathtext_in_repo_id_and_tensor_names_is_shown_as_written(tmp_path, capsys, store_models, tiny_model):
    name = "$\\foo{$"
    folder = tiny_model(tmp_path / "models" / name, tensor=name)
    store_models(tmp_path / "data", [folder])
    out = tmp_path / "rep"
    assert main(["report", "--data", str(tmp_path / "data"), "--out", str(out),
                 "--models-dir", str(tmp_path / "models")]) == 0
    capsys.readouterr()
    (page,) = (out / "models").glob("*.html")
    text = page.read_text()
    assert f"<h1>{name}</h1>" in text and f"<h3>{name}1</h3>" in text  # longname: ".weight" dropped
    pngs = list((out / "img").rglob("*.png"))
    assert len(pngs) == 2 + 2 * 3 and all(p.stat().st_size > 1000 for p in pngs)
    # the plot command on the stored model draws the same names
    assert main(["plot", name, "--data", str(tmp_path / "data"), "--models-dir", str(tmp_path / "models"),
                 "--out", str(tmp_path / "plots")]) == 0
    assert len(capsys.readouterr().out.split("\n")) >= 2 + 2 * 3
