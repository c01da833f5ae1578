"""The report's HTML: the index page (leaderboard + validation table) and one page per model.

Plain HTML with inline CSS and a few lines of inline vanilla JS (click a header to sort); no CDN, no
external file, so the report opens from disk. Every name from the store (repo ids, tensor names,
sweeps) is HTML-escaped; page file names come from `page_name`, unique per exact name.
"""

from __future__ import annotations

import hashlib
import html
import math
import os
import re
from pathlib import Path

import pandas as pd

from catalogs.metrics import tiers_text

from .validation import WORKS_P, WORKS_TAU, summary_lines

LEADERBOARD_COLUMNS = (
    "tier", "tier_name", "alpha_weighted", "alpha", "alpha_median", "log_norm", "log_spectral_norm", "log_alpha_norm",
    "stable_rank", "hill_alpha", "share_alpha_2_6", "n_layers_analysed",
)  # fmt: skip
LAYER_COLUMNS = (
    "layer_id", "longname", "shape", "status", "alpha", "D", "xmin", "num_pl_spikes", "alpha_weighted",
    "log_spectral_norm", "stable_rank", "hill_alpha", "warning",
)  # fmt: skip
TEXT_COLUMNS = frozenset({"repo_id", "sweep", "longname", "shape", "status", "warning", "tier_name"})
FACT_COLUMNS = ("architecture", "model_type", "parameter_count", "dtype")

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

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_STEM_MAX = 80  # characters of the readable part of a page name


def page_name(repo_id: str) -> str:
    """The file-name stem of a model's page and image folder: a readable slug of the name plus 10 hex
    chars of the sha256 of the EXACT name, so names that slug alike ('a b' / 'a_b') or differ only by
    case ('A' / 'a', one file on a case-insensitive disk) never share a page."""
    slug = _UNSAFE.sub("_", repo_id.replace("/", "__"))[:_STEM_MAX].strip(".") or "model"
    return f"{slug}-{hashlib.sha256(repo_id.encode('utf-8', 'surrogatepass')).hexdigest()[:10]}"


def _missing(v) -> bool:
    return v is None or (not isinstance(v, str) and bool(pd.isna(v)))


def _num(v) -> str:
    """Cell text for a number: 4 significant digits; '' for None/NaN/NA/inf."""
    if _missing(v):
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


def _cell(v, *, text: bool = False, cls: str = "") -> str:
    if text:
        return f'<td class="text {cls}">{"" if _missing(v) else html.escape(str(v))}</td>'
    s = _num(v)
    raw = "" if s == "" else repr(float(v))
    return f'<td class="{cls}" data-value="{raw}">{s}</td>'


def _head(columns) -> str:
    return "".join(f'<th class="{"text" if c in TEXT_COLUMNS else ""}">{html.escape(c)}</th>' for c in columns)


def _page(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f'<link rel="icon" href="data:,"><style>{CSS}</style></head>\n<body>\n{body}\n'
        f"<script>{SORT_JS}</script>\n</body></html>\n"
    )


def _rel(path: Path, base: Path) -> str:
    return html.escape(os.path.relpath(path, base).replace(os.sep, "/"))


def _img(path: Path, base: Path, alt: str) -> str:
    return f'<img src="{_rel(path, base)}" alt="{html.escape(alt)}">'


def validation_html(v) -> str:
    """The validation table (tau (rho) per sweep x metric, coloured by verdict) and its summary lines."""
    tau, rho, verdicts = v.wide("tau"), v.wide("rho"), v.wide("verdict")
    ns = v.long.groupby("sweep", sort=False)["n"].max()
    cols = list(tau.columns)
    head = '<tr><th class="text">sweep</th><th>n</th>' + "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    rows = []
    for sweep in tau.index:
        cells = []
        for c in cols:
            t, r, vd = float(tau.loc[sweep, c]), float(rho.loc[sweep, c]), verdicts.loc[sweep, c]
            cls = {"works": "works", "wrong sign": "wrong", "weak": "weak"}.get(vd, "")
            txt, val = ("", "") if not math.isfinite(t) else (f"{t:+.2f} ({r:+.2f})", repr(t))
            cells.append(f'<td class="{cls}" data-value="{val}" title="{html.escape(str(vd))}">{txt}</td>')
        rows.append(f'<tr><td class="text">{html.escape(str(sweep))}</td><td>{int(ns[sweep])}</td>'
                    + "".join(cells) + "</tr>")
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


def _ranking_words(metric) -> str:
    """What the leaderboard is ranked by, as HTML: the default ranking (metric None) or one metric."""
    if metric is None:
        return f"the <b>default ranking</b>: {html.escape(tiers_text())} (catalogs/metrics.py)"
    return f"<b>{html.escape(metric.name)}</b> alone ({metric.direction} is better): {html.escape(metric.doc)}"


def index_page(models, metric, validation, scatter: list[Path], out: Path, data_root: str) -> str:
    """index.html: the leaderboard (models ranked, with truth columns when present), the validation.
    metric: a catalogs.metrics.Metric, or None for the default ranking."""
    has_truth = "test_accuracy" in models.columns
    cols = [c for c in LEADERBOARD_COLUMNS if c in models.columns]
    head = ["rank", "repo_id"] + (["sweep", "test_accuracy"] if has_truth else []) + cols
    body = []
    for _, r in models.iterrows():
        name = str(r["repo_id"])
        cells = [_cell(r["rank"]),
                 f'<td class="text" data-value="{html.escape(name)}">'
                 f'<a href="models/{page_name(name)}.html">{html.escape(name)}</a></td>']
        if has_truth:
            cells += [_cell(r.get("sweep"), text=True), _cell(r.get("test_accuracy"))]
        cells += [_cell(r[c], text=c in TEXT_COLUMNS) for c in cols]
        body.append("<tr>" + "".join(cells) + "</tr>")
    parts = [
        "<h1>ww-spectral report</h1>",
        f'<p class="note">Data root: {html.escape(str(data_root))}; {len(models)} models (latest revision of '
        f"each). Ranked by {_ranking_words(metric)}. Click a column header to sort.</p>",
        f'<table class="sortable" id="leaderboard"><thead><tr>{_head(head)}</tr></thead>'
        f'<tbody>{"".join(body)}</tbody></table>',
    ]
    if validation is not None:
        parts.append(validation_html(validation))
        parts += [_img(p, out, p.stem) for p in scatter]
    return _page("ww-spectral report", "\n".join(parts))


def model_page(row, layers, figures, base: Path) -> str:
    """models/<page_name>.html: the model's stored summary and facts, its plots, its stored layer rows,
    and its per-layer ESD plots - or the note saying why they are not there. figures: StoredFigures
    (pipelines/proof/spectra.py); base: the folder of the page (image links are relative to it)."""
    repo_id = str(row["repo_id"])
    facts = [("repo_id", repo_id), ("revision", row.get("revision")), ("predicted rank", row.get("rank"))]
    if "test_accuracy" in row.index:
        facts += [("sweep", row.get("sweep")), ("test accuracy (truth)", row.get("test_accuracy"))]
    facts += [(c, row.get(c)) for c in (*LEADERBOARD_COLUMNS, *FACT_COLUMNS) if c in row.index]
    summary = "".join(f'<tr><th class="text">{html.escape(k)}</th>{_cell(v, text=isinstance(v, str))}</tr>'
                      for k, v in facts)
    lcols = [c for c in LAYER_COLUMNS if c in layers.columns]
    lrows = "".join("<tr>" + "".join(_cell(r[c], text=c in TEXT_COLUMNS) for c in lcols) + "</tr>"
                    for _, r in layers.iterrows())
    per_layer = [f"<h3>{html.escape(name)}</h3>" + "".join(_img(p, base, f"{name} {k}") for k, p in kinds.items())
                 for name, kinds in figures.layers.items()]
    spectra = ('<p class="note">ESD on log-log axes with the fitted power law and xmin; histogram of log10 '
               "eigenvalues; KS distance D against candidate xmin. Eigenvalues recomputed from the weights by "
               "the analysis' own function, with the options this model was stored with: the drawn fit is "
               "the stored one.</p>" + "".join(per_layer)) if per_layer else ""
    if figures.note:
        spectra += f'<p class="note">{html.escape(figures.note)}</p>'
    body = [
        '<p><a href="../index.html">&larr; leaderboard</a></p>',
        f"<h1>{html.escape(repo_id)}</h1>",
        f'<table id="summary"><tbody>{summary}</tbody></table>',
        "<h2>Alpha by depth</h2>",
        "".join(_img(p, base, p.stem) for p in figures.model),
        "<h2>Layers</h2>",
        f'<table class="sortable" id="layers"><thead><tr>{_head(lcols)}</tr></thead><tbody>{lrows}</tbody></table>',
        "<h2>Layer spectra</h2>",
        spectra,
    ]
    return _page(f"{repo_id} - ww-spectral", "\n".join(body))
