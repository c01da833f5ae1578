"""The static report in headless Chromium: loads without console errors, sorts, shows its images.

The store is filled with real analyses (analyze_model + ResultStore.write_model, as a scan writes them)
of a tiny zoo; the scan flow itself is exercised by the demo test.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipelines.proof.report import build_report
from pipelines.proof.zoo import build_zoo
from pipelines.proof.zoo_mlp import TINY_GRID

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def report(tmp_path_factory, store_models):
    base = tmp_path_factory.mktemp("report")
    zoo = base / "zoo"
    build_zoo(zoo, grid=TINY_GRID, workers=1)
    data = base / "data"
    store_models(data, [zoo / spec.name for spec in TINY_GRID.specs()])
    res = build_report(str(data), base / "out", truth=zoo / "truth.csv")
    return res, base


def test_report_files(report):
    res, base = report
    assert res.n_models == 4 and res.n_layer_plots == 4 * 3 * 3  # 3 layers, 3 plots each
    html = res.index.read_text()
    assert 'id="leaderboard"' in html and 'id="validation"' in html and "http" not in html.split("<body>")[1]
    pages = sorted((base / "out" / "models").glob("*.html"))
    assert len(pages) == 4
    assert all((base / "out" / "img").rglob("*.esd.png"))


def _texts(page, table_id: str, col: int) -> list[str]:
    return page.eval_on_selector_all(f"#{table_id} tbody tr",
                                     f"rows => rows.map(r => r.cells[{col}].textContent.trim())")


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing (Debian package chromium)")
def test_report_in_headless_chromium(report, tmp_path):
    from playwright.sync_api import sync_playwright

    res, _ = report
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(res.index.resolve().as_uri())
            page.wait_for_load_state("load")
            heads = page.eval_on_selector_all("#leaderboard thead th", "hs => hs.map(h => h.textContent.trim())")
            acc_col = heads.index("test_accuracy")
            name_col = heads.index("repo_id")

            # numeric sort, ascending then descending
            page.click(f"#leaderboard thead th:nth-child({acc_col + 1})")
            asc = [float(x) for x in _texts(page, "leaderboard", acc_col)]
            assert asc == sorted(asc) and len(asc) == 4
            page.click(f"#leaderboard thead th:nth-child({acc_col + 1})")
            desc = [float(x) for x in _texts(page, "leaderboard", acc_col)]
            assert desc == sorted(asc, reverse=True)
            # text sort
            page.click(f"#leaderboard thead th:nth-child({name_col + 1})")
            names = _texts(page, "leaderboard", name_col)
            assert names == sorted(names)

            # images render on the index and on a model page
            widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
            assert widths and all(w > 0 for w in widths)
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
            page.click("#leaderboard tbody tr:first-child a")
            page.wait_for_load_state("load")
            widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
            assert len(widths) == 2 + 9 and all(w == 640 for w in widths)
            page.screenshot(path=str(tmp_path / "model.png"), full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:4] == b"\x89PNG"
    out = REPO / "benchmarks" / "out"
    if out.is_dir():
        shutil.copy(shot, out / "proof_report.png")
        shutil.copy(tmp_path / "model.png", out / "proof_report_model.png")
