"""`ww-spectral report`: a static HTML report of a data root (no server; opens from file://).

Layout of OUT_DIR:
  index.html               the leaderboard (click a column header to sort), the validation table when a
                           truth file is given, and metric-vs-accuracy scatter plots
  models/<slug>.html       one page per model: its summary, its layer table, and its plots
  img/<slug>/*.png         the PNGs (matplotlib; see ww_spectral/plots.py)

Where the plots' data come from (the simplest honest way):
- alpha by depth and the alpha histogram are drawn from the catalog's `layers` view: the stored numbers;
- the per-layer ESD, log10 histogram and D-vs-xmin plots need eigenvalues, which the store does not keep.
  They are recomputed from the model's weights with the library's own functions when the weights are
  found: MODELS_DIR/<repo_id> (the folder that was scanned; `--models-dir`), else skipped with a note on
  the model page. Recomputation uses default analysis options; the catalog's alpha is shown beside it.
The sort script is a few lines of inline vanilla JS; there is no CDN and no external file.
"""

from __future__ import annotations

import html
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

LEADERBOARD_COLUMNS = (
    "alpha_weighted", "alpha", "alpha_median", "log_norm", "log_spectral_norm", "log_alpha_norm",
    "stable_rank", "hill_alpha", "share_alpha_2_6", "n_layers_analysed",
)  # fmt: skip
LAYER_COLUMNS = (
    "layer_id",
    "longname",
    "shape",
    "status",
    "alpha",
    "D",
    "xmin",
    "num_pl_spikes",
    "alpha_weighted",
    "log_spectral_norm",
    "stable_rank",
    "hill_alpha",
    "warning",
)

SORT_JS = """
// Click a header to sort by that column; click again to reverse. Empty cells always sort last.
document.querySelectorAll("table.sortable").forEach(function (table) {
  var heads = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(heads, function (th, col) {
    th.addEventListener("click", function () {
      var asc = th.getAttribute("aria-sort") !== "ascending";
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      function key(row) {
        var cell = row.cells[col];
        var raw = cell.hasAttribute("data-value") ? cell.getAttribute("data-value") : cell.textContent.trim();
        if (raw === "") return null;
        var num = Number(raw);
        return isNaN(num) ? raw : num;
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null || y === null) return (x === null) - (y === null);
        var c = (typeof x === "number" && typeof y === "number") ? x - y : String(x).localeCompare(String(y));
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
td.text, th.text { text-align: left; white-space: nowrap; }
table.sortable th { cursor: pointer; background: #f0f0f0; user-select: none; }
th[aria-sort=ascending]::after { content: " \\25B2"; }
th[aria-sort=descending]::after { content: " \\25BC"; }
td.works { background: #d9f2d9; } td.wrong { background: #f7d4d4; } td.weak { background: #f6f6f6; }
img { max-width: 640px; border: 1px solid #ddd; margin: 0.3em; }
.note { color: #666; font-size: 0.9em; }
"""


@dataclass(frozen=True)
class ReportResult:
    index: Path
    n_models: int
    n_layer_plots: int
    seconds: float


def _slug(repo_id: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in repo_id.replace("/", "__"))


def _num(v) -> str:
    """Cell text for a number: 4 significant digits; '' for None/NaN/NA."""
    import pandas as pd

    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return ""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return html.escape(str(v))
    if not math.isfinite(f):
        return ""
    if f == int(f) and abs(f) < 1e12 and not isinstance(v, float):
        return str(int(f))
    return f"{f:.4g}"


def _text(v) -> str:
    import pandas as pd

    return "" if v is None or (not isinstance(v, str) and pd.isna(v)) else str(v)


def _cell(v, *, text: bool = False, cls: str = "") -> str:
    if text:
        return f'<td class="text {cls}">{html.escape(_text(v))}</td>'
    s = _num(v)
    raw = "" if s == "" else repr(float(v))
    return f'<td class="{cls}" data-value="{raw}">{s}</td>'


def _page(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f'<link rel="icon" href="data:,"><style>{CSS}</style></head>\n<body>\n{body}\n'
        f"<script>{SORT_JS}</script>\n</body></html>\n"
    )


def _load(data_root: str):
    """(models, layers) DataFrames: latest revision per repo_id, and the layers of exactly those rows."""
    from catalogs.catalog import connect

    con = connect(data_root)
    try:
        models = con.sql("SELECT * FROM models WHERE is_latest").df()
        layers = con.sql(
            "SELECT l.* FROM layers l JOIN (SELECT repo_id, revision, options_hash FROM models WHERE is_latest) m"
            " USING (repo_id, revision, options_hash) ORDER BY l.repo_id, l.layer_id"
        ).df()
    finally:
        con.close()
    return models, layers


def _find_weights(repo_id: str, models_dir: str | None) -> str | None:
    if not models_dir:
        return None
    for cand in (Path(models_dir) / repo_id, Path(models_dir) / repo_id.split("/")[-1]):
        if cand.exists():
            return str(cand)
    return None


def _validation_html(v) -> str:
    from .validation import WORKS_P, WORKS_TAU, summary_lines

    tau, rho = v.wide("tau"), v.wide("rho")
    verdicts = v.wide("verdict")
    ns = v.long.groupby("sweep", sort=False)["n"].max()
    cols = list(tau.columns)
    head = '<tr><th class="text">sweep</th><th>n</th>' + "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    rows = []
    for sweep in tau.index:
        cells = []
        for c in cols:
            t, r, vd = tau.loc[sweep, c], rho.loc[sweep, c], verdicts.loc[sweep, c]
            cls = {"works": "works", "wrong sign": "wrong", "weak": "weak"}.get(vd, "")
            txt = "" if not math.isfinite(float(t)) else f"{float(t):+.2f} ({float(r):+.2f})"
            val = "" if not math.isfinite(float(t)) else repr(float(t))
            cells.append(f'<td class="{cls}" data-value="{val}" title="{html.escape(str(vd))}">{txt}</td>')
        rows.append(
            f'<tr><td class="text">{html.escape(str(sweep))}</td><td>{int(ns[sweep])}</td>'
            + "".join(cells)
            + "</tr>"
        )
    items = "".join(f"<li>{html.escape(line)}</li>" for line in summary_lines(v))
    return (
        "<h2>Does the metric predict accuracy?</h2>"
        '<p class="note">Kendall tau (Spearman rho) between each metric and the measured clean test accuracy, '
        "per sweep and pooled, <b>expected sign</b>: lower-is-better metrics are negated, so +1 means the "
        "metric ranks the models exactly as their accuracy does and a negative value means it points the "
        f"wrong way. Green: tau &ge; {WORKS_TAU} with p &lt; {WORKS_P}; red: the same with the wrong sign. "
        "Layout of Martin &amp; Mahoney, Nature Communications 2021.</p>"
        f'<table class="sortable" id="validation"><thead>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
        f"<ul>{items}</ul>"
    )


def build_report(
    data_root: str,
    out_dir: str | os.PathLike,
    *,
    truth: str | os.PathLike | None = None,
    models_dir: str | None = None,
    metric: str | None = None,
    layer_plots: bool = True,
    log=None,
) -> ReportResult:
    """Write OUT_DIR/index.html, OUT_DIR/models/*.html and their PNGs; returns where and how much.

    truth: truth.csv (or the zoo folder holding it): adds test accuracy, the validation table and the
    scatter plots. models_dir: folder holding the scanned model folders (for ESD plots); when truth is a
    zoo folder's truth.csv and models_dir is not given, that zoo folder is used.
    """

    from catalogs.errors import CatalogError
    from catalogs.metrics import DEFAULT_METRIC, get_metric
    from ww_spectral import plots

    t0 = time.perf_counter()
    m = get_metric(metric or DEFAULT_METRIC)
    out = Path(out_dir)
    models, layers = _load(data_root)
    if models.empty:
        raise CatalogError(f"no models under {data_root}; run a scan first (`ww-spectral demo` builds one)")
    for sub in ("models", "img"):
        if (out / sub).exists():
            shutil.rmtree(out / sub)  # a report is rebuilt whole; stale pages would mislead
    (out / "models").mkdir(parents=True, exist_ok=True)

    validation = None
    truth_df = None
    if truth is not None:
        from .validation import read_truth, validate_frames

        truth_df = read_truth(truth)
        validation = validate_frames(models, truth_df)
        if models_dir is None:
            tp = Path(truth)
            models_dir = str(tp if tp.is_dir() else tp.parent)

    models = models.copy()
    models["_key"] = models["repo_id"].astype(str).map(lambda r: r.split("/")[-1])
    if truth_df is not None:
        t = truth_df.assign(_key=truth_df["repo_id"].astype(str).map(lambda r: r.split("/")[-1]))
        models = models.merge(t[["_key", "sweep", "test_accuracy"]], on="_key", how="left")
    # predicted rank: 1 = best by the metric's direction (catalogs/metrics.py)
    models["rank"] = (
        (m.sign * models[m.column].astype(float)).rank(method="min", na_option="bottom").astype(int)
    )
    models = models.sort_values(["rank", "repo_id"]).reset_index(drop=True)

    n_layer_plots = 0
    for i, row in models.iterrows():
        repo_id = str(row["repo_id"])
        slug = _slug(repo_id)
        if log:
            log(f"report: {i + 1}/{len(models)} {repo_id}")
        ml = layers[(layers["repo_id"] == row["repo_id"]) & (layers["revision"] == row["revision"])]
        img = out / "img" / slug
        figs = [
            plots.plot_alpha_by_depth(
                ml, path=img / "alpha_by_depth.png", title=f"{repo_id}: alpha by depth"
            ),
            plots.plot_alpha_histogram(ml, path=img / "alpha_hist.png", title=f"{repo_id}: layer alphas"),
        ]
        layer_figs: dict[str, dict] = {}
        weights = _find_weights(repo_id, models_dir) if layer_plots else None
        note = ""
        if weights:
            for name, ev in plots.layer_eigenvalues(weights).items():
                layer_figs[name] = plots.plot_layer(ev, out_dir=img, name=name)
                n_layer_plots += len(layer_figs[name])
        else:
            note = (
                "ESD plots need the weights: pass --models-dir with the scanned folder"
                if layer_plots
                else "ESD plots were not requested (--no-layer-plots)"
            )
        (out / "models" / f"{slug}.html").write_text(
            _model_page(row, ml, figs, layer_figs, note, out, m.column), encoding="utf-8"
        )

    scatter = []
    if validation is not None:
        for col in dict.fromkeys([m.column, "alpha"]):
            if col in validation.joined.columns:
                scatter.append(
                    plots.plot_metric_vs_accuracy(
                        validation.joined, metric=col, path=out / "img" / f"scatter_{col}.png"
                    )
                )
    (out / "index.html").write_text(
        _index_page(models, m, validation, scatter, out, data_root), encoding="utf-8"
    )
    return ReportResult(
        index=out / "index.html",
        n_models=len(models),
        n_layer_plots=n_layer_plots,
        seconds=time.perf_counter() - t0,
    )


def _rel(path: Path, base: Path) -> str:
    return os.path.relpath(path, base).replace(os.sep, "/")


def _index_page(models, metric, validation, scatter, out: Path, data_root: str) -> str:
    has_truth = "test_accuracy" in models.columns
    cols = [c for c in LEADERBOARD_COLUMNS if c in models.columns]
    head = ["rank", "repo_id"] + (["sweep", "test_accuracy"] if has_truth else []) + cols
    th = "".join(
        f'<th class="{"text" if h in ("repo_id", "sweep") else ""}">{html.escape(h)}</th>' for h in head
    )
    body = []
    for _, r in models.iterrows():
        slug = _slug(str(r["repo_id"]))
        cells = [
            _cell(r["rank"]),
            f'<td class="text" data-value="{html.escape(str(r["repo_id"]))}">'
            f'<a href="models/{slug}.html">{html.escape(str(r["repo_id"]))}</a></td>',
        ]
        if has_truth:
            cells += [_cell(r.get("sweep"), text=True), _cell(r.get("test_accuracy"))]
        cells += [_cell(r[c]) for c in cols]
        body.append("<tr>" + "".join(cells) + "</tr>")
    parts = [
        "<h1>ww-spectral report</h1>",
        f'<p class="note">Data root: {html.escape(str(data_root))}; {len(models)} models (latest revision of '
        f"each). Ranked by <b>{html.escape(metric.name)}</b> ({metric.direction} is better): "
        f"{html.escape(metric.doc)}. Click a column header to sort.</p>",
        f'<table class="sortable" id="leaderboard"><thead><tr>{th}</tr></thead><tbody>{"".join(body)}</tbody></table>',
    ]
    if validation is not None:
        parts.append(_validation_html(validation))
        parts += [f'<img src="{_rel(p, out)}" alt="{html.escape(p.stem)}">' for p in scatter]
    return _page("ww-spectral report", "\n".join(parts))


def _model_page(row, layers, figs, layer_figs, note, out: Path, metric_col: str) -> str:
    base = out / "models"
    repo_id = str(row["repo_id"])
    facts = [("repo_id", repo_id), ("revision", row.get("revision")), ("predicted rank", row.get("rank"))]
    if "test_accuracy" in row.index:
        facts += [("sweep", row.get("sweep")), ("test accuracy (truth)", row.get("test_accuracy"))]
    facts += [(c, row.get(c)) for c in LEADERBOARD_COLUMNS if c in row.index]
    facts += [
        (c, row.get(c)) for c in ("architecture", "model_type", "parameter_count", "dtype") if c in row.index
    ]
    summary = "".join(
        f'<tr><th class="text">{html.escape(k)}</th>{_cell(v, text=isinstance(v, str) or v is None)}</tr>'
        for k, v in facts
    )
    lcols = [c for c in LAYER_COLUMNS if c in layers.columns]
    lhead = "".join(
        f'<th class="{"text" if c in ("longname", "shape", "status", "warning") else ""}">{c}</th>'
        for c in lcols
    )
    lrows = "".join(
        "<tr>"
        + "".join(_cell(r[c], text=c in ("longname", "shape", "status", "warning")) for c in lcols)
        + "</tr>"
        for _, r in layers.iterrows()
    )
    imgs = "".join(f'<img src="{_rel(p, base)}" alt="{html.escape(p.stem)}">' for p in figs)
    per_layer = []
    for name, kinds in layer_figs.items():
        per_layer.append(
            f"<h3>{html.escape(name)}</h3>"
            + "".join(f'<img src="{_rel(p, base)}" alt="{html.escape(name)} {k}">' for k, p in kinds.items())
        )
    body = [
        '<p><a href="../index.html">&larr; leaderboard</a></p>',
        f"<h1>{html.escape(repo_id)}</h1>",
        f'<table id="summary"><tbody>{summary}</tbody></table>',
        "<h2>Alpha by depth</h2>",
        imgs,
        "<h2>Layers</h2>",
        f'<table class="sortable" id="layers"><thead><tr>{lhead}</tr></thead><tbody>{lrows}</tbody></table>',
        "<h2>Layer spectra</h2>",
        (
            '<p class="note">ESD on log-log axes with the fitted power law and xmin; histogram of log10 '
            "eigenvalues; KS distance D against candidate xmin. Eigenvalues recomputed from the weights "
            "with default analysis options.</p>" + "".join(per_layer)
        )
        if per_layer
        else f'<p class="note">{html.escape(note)}</p>',
    ]
    return _page(f"{repo_id} - ww-spectral", "\n".join(body))
