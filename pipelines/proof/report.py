"""`ww-spectral report`: a static HTML report of a data root (no server; opens from file://).

Layout of OUT (written whole into a temp sibling, then swapped in: pipelines/proof/outdir.py):
  index.html                     the leaderboard (click a column header to sort), the validation table
                                 and metric-vs-accuracy scatter plots when a truth file is given
  models/<page_name>.html        one page per model: its stored summary, its layer rows, its plots
  img/<page_name>/*.png          its PNGs (ww_spectral/plots.py)
  .ww-spectral-report            the marker: the files this report wrote (a later report may replace them)

What each plot is drawn from (pipelines/proof/spectra.py): alpha by depth and the alpha histogram from
the store's layer rows; the per-layer ESD plots from eigenvalues recomputed through the analysis' own
call, with the model's stored options, when its weights are found under --models-dir and are the
analysed revision - else the model page says why and shows the store's numbers only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from catalogs.errors import CatalogError
from catalogs.metrics import DEFAULT_METRIC, get_metric
from ww_spectral import plots
from ww_spectral.progress import safe_text

from .outdir import report_folder
from .report_html import index_page, model_page, page_name
from .spectra import draw_stored_model
from .stored import DEFAULT_RANK, latest_layers, latest_models, model_layers
from .truth import merge_truth, read_truth
from .validation import validate_frames

SCATTER_METRICS = ("alpha",)  # drawn against accuracy beside the ranking metric


@dataclass(frozen=True)
class ReportResult:
    """Where the report is and how much it holds: index.html, models, ESD plot files, wall seconds."""

    index: Path
    n_models: int
    n_layer_plots: int
    seconds: float


def _ranked(models, metric, truth_df):
    """models with the truth's columns (when given) and `rank`: the default leaderboard's rank when metric
    is None (pipelines/proof/stored.py DEFAULT_RANK), else 1 = best by the metric's direction
    (catalogs/metrics.py); sorted by rank then repo_id."""
    if truth_df is not None:
        models = merge_truth(models, truth_df, how="left")
    score = models[DEFAULT_RANK] if metric is None else metric.sign * models[metric.column]
    models = models.assign(rank=score.astype(float).rank(method="min", na_option="bottom").astype(int))
    return models.sort_values(["rank", "repo_id"]).reset_index(drop=True)


def _scatter(validation, metric, img: Path) -> list[Path]:
    first = metric.column if metric is not None else get_metric(DEFAULT_METRIC).column
    cols = [c for c in dict.fromkeys([first, *SCATTER_METRICS]) if c in validation.joined.columns]
    return [plots.plot_metric_vs_accuracy(validation.joined, metric=c, path=img / f"scatter_{c}.png") for c in cols]


def build_report(
    data_root: str,
    out_dir: str | os.PathLike,
    *,
    truth: str | os.PathLike | None = None,
    models_dir: str | os.PathLike | None = None,
    metric: str | None = None,
    layer_plots: bool = True,
    log: Callable[[str], None] | None = None,
) -> ReportResult:
    """Write the report of the models stored under data_root into out_dir; returns where and how much.

    truth: truth.csv (or the zoo folder holding it): adds test accuracy, the validation table and the
    scatter plots. models_dir: the folder the models were scanned from (for ESD plots); when not given
    and truth is given, the truth file's folder (the demo zoo keeps its models beside truth.csv).
    Raises OutputFolderError before anything is written when out_dir must not be written
    (pipelines/proof/outdir.py), CatalogError when the store holds no model.
    """
    t0 = time.perf_counter()
    m = get_metric(metric) if metric else None  # None: the default ranking (tier, then DEFAULT_METRIC)
    with report_folder(out_dir, data_root=data_root) as folder:
        work = folder.work
        models, layers = latest_models(data_root), latest_layers(data_root)
        if models.empty:
            raise CatalogError(f"no models under {data_root}; run a scan first (`ww-spectral demo` builds one)")
        truth_df = validation = None
        if truth is not None:
            truth_df = read_truth(truth)
            validation = validate_frames(models, truth_df)
            if models_dir is None:
                models_dir = Path(truth) if Path(truth).is_dir() else Path(truth).parent
        models = _ranked(models, m, truth_df)
        (work / "models").mkdir()
        n_layer_plots = 0
        for i, row in models.iterrows():
            page = page_name(str(row["repo_id"]))
            if log:
                log(f"report: {i + 1}/{len(models)} {safe_text(row['repo_id'])}")
            ml = model_layers(layers, row)
            figures = draw_stored_model(row, ml, out_dir=work / "img" / page, models_dir=models_dir,
                                        layer_plots=layer_plots)
            n_layer_plots += sum(len(kinds) for kinds in figures.layers.values())
            (work / "models" / f"{page}.html").write_text(model_page(row, ml, figures, work / "models"),
                                                          encoding="utf-8")
        scatter = _scatter(validation, m, work / "img") if validation is not None else []
        (work / "index.html").write_text(index_page(models, m, validation, scatter, work, data_root),
                                         encoding="utf-8")
    return ReportResult(index=folder.final / "index.html", n_models=len(models), n_layer_plots=n_layer_plots,
                        seconds=time.perf_counter() - t0)
