"""The pictures WeightWatcher users know, as PNG files (matplotlib, Agg backend; no display needed).

Per layer (from its eigenvalues and its power-law fit):
- `plot_esd`: the ESD on log-log axes (log-binned density) with the fitted power law over [xmin, xmax]
  and xmin marked;
- `plot_log_histogram`: histogram of log10 eigenvalues with xmin marked;
- `plot_d_vs_xmin`: the Kolmogorov-Smirnov distance D of every candidate xmin, the chosen one marked.
Per model (from the per-layer table, e.g. `analyze()`'s DataFrame or the catalog's `layers` view):
- `plot_alpha_by_depth`: alpha against layer index, the 2-6 band shaded;
- `plot_alpha_histogram`: histogram of layer alphas, the <2 / 2-6 / >6 bands shaded.

Eigenvalues and fits come from `analysis.layer_esds` / `analysis.layer_esd`, the function the analysis
rows are made with, so a plotted fit is the stored fit (same eigenvalues, float32 noise floor included).
Every label that can hold outside text (titles, layer names, repo ids, sweep names) goes through `_plain`,
so matplotlib never reads it as mathtext ('$\\foo{$' in a name is drawn as written, never a crash).
matplotlib is imported inside the functions: importing this module does not load it.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .analysis import LayerESD, layer_esds
from .fit import EVALS_THRESH, PowerLawFit, candidate_fits, fit_power_law
from .records import AnalysisOptions, make_options

FIGSIZE = (6.4, 4.8)  # inches; at DPI 100 every PNG is 640 x 480 pixels
DPI = 100
GOOD_BAND = (2.0, 6.0)  # WW: 2 <= alpha <= 6 is well trained; < 2 over-trained, > 6 under-trained


def _plain(text: object) -> str:
    """`text` as plain text for a matplotlib label: '$' escaped, so no part of it is parsed as mathtext
    (an unescaped pair of '$' would be; an unbalanced '$\\foo{' inside one raises in the renderer)."""
    return str(text).replace("$", r"\$")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)  # files only; never a GUI backend
    import matplotlib.pyplot as plt

    return plt


def _figure(*, bottom: float = 0.11):
    """A 640x480 figure with fixed margins (tight_layout would draw every figure twice: 2x slower)."""
    fig, ax = _pyplot().subplots(figsize=FIGSIZE)
    fig.subplots_adjust(left=0.12, right=0.97, bottom=bottom, top=0.93)
    return fig, ax


def _save(fig, path: str | os.PathLike) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=DPI, format="png")
    _pyplot().close(fig)
    return p


def _positive_sorted(evals: np.ndarray) -> np.ndarray:
    x = np.asarray(evals, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    return np.sort(x[x > EVALS_THRESH])


def esd_fit_line(evals: np.ndarray, *, alpha: float, xmin: float, num: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """The fitted power law as a density over all eigenvalues, on [xmin, max(evals)].

    p(x) = (k/n) * (alpha - 1)/xmin * (x/xmin)^(-alpha): the tail's normalised Pareto density times the
    tail's share k/n of the n eigenvalues > 1e-5, so it sits on the histogram of the whole ESD.
    Returns (x, y), each shape (num,), x log-spaced; y[0] = (k/n)(alpha-1)/xmin at x[0] = xmin.
    """
    x_all = _positive_sorted(evals)
    if not (math.isfinite(alpha) and math.isfinite(xmin) and alpha > 1 and xmin > 0 and x_all.size):
        return np.empty(0), np.empty(0)
    k = int(np.count_nonzero(x_all >= xmin))
    xmax = max(float(x_all[-1]), xmin)
    x = np.geomspace(xmin, xmax, num) if xmax > xmin else np.full(num, xmin)
    y = (k / x_all.size) * (alpha - 1.0) / xmin * (x / xmin) ** (-alpha)
    return x, y


def log_binned_density(evals: np.ndarray, *, bins: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Empirical density of the eigenvalues > 1e-5 on log-spaced bins: (bin centres, density), both (bins,).

    density integrates to 1 over the bins (count / (n * bin width)), the scale of `esd_fit_line`.
    """
    x = _positive_sorted(evals)
    if x.size == 0:
        return np.empty(0), np.empty(0)
    lo, hi = x[0], x[-1]
    if hi <= lo:
        hi = lo * 1.0001
    edges = np.geomspace(lo, hi, bins + 1)
    counts, _ = np.histogram(x, bins=edges)
    widths = np.diff(edges)
    centres = np.sqrt(edges[:-1] * edges[1:])
    return centres, counts / (x.size * widths)


def plot_esd(evals: np.ndarray, fit: PowerLawFit | None = None, *, path: str | os.PathLike,
             title: str = "ESD") -> Path:
    """Log-log ESD (log-binned density) with the fitted power law and xmin; writes a 640x480 PNG."""
    fit = fit if fit is not None else fit_power_law(evals)
    fig, ax = _figure()
    c, d = log_binned_density(evals)
    keep = d > 0
    ax.loglog(c[keep], d[keep], "o", ms=4, color="tab:blue", label=f"ESD ({_positive_sorted(evals).size} eigenvalues)")
    if fit.status == "success":
        lx, ly = esd_fit_line(evals, alpha=fit.alpha, xmin=fit.xmin)
        ax.loglog(lx, ly, "-", color="tab:red", lw=2,
                  label=f"power-law fit: alpha = {fit.alpha:.2f}, D = {fit.D:.3f}")
        ax.axvline(fit.xmin, color="tab:green", ls="--", label=f"xmin = {fit.xmin:.3g}")
    else:
        ax.text(0.5, 0.9, f"fit failed: {fit.fit_status}", transform=ax.transAxes, ha="center")
    ax.set_xlabel("eigenvalue λ of WᵀW (log scale)")
    ax.set_ylabel("density p(λ) (log scale)")
    ax.set_title(_plain(title), fontsize=10)
    ax.legend(loc="lower left", fontsize=9)
    ax.grid(True, which="major", alpha=0.3)
    return _save(fig, path)


def plot_log_histogram(evals: np.ndarray, fit: PowerLawFit | None = None, *, path: str | os.PathLike,
                       title: str = "Histogram of log10 eigenvalues", bins: int = 50) -> Path:
    """Histogram of log10(λ) for λ > 1e-5, xmin marked; writes a 640x480 PNG."""
    fit = fit if fit is not None else fit_power_law(evals)
    fig, ax = _figure()
    x = _positive_sorted(evals)
    ax.hist(np.log10(x), bins=bins, color="tab:blue", alpha=0.8, label="eigenvalues")
    if fit.status == "success":
        ax.axvline(math.log10(fit.xmin), color="tab:green", ls="--",
                   label=f"xmin = {fit.xmin:.3g} (tail: {fit.num_pl_spikes} eigenvalues)")
    ax.set_xlabel("log10 eigenvalue λ")
    ax.set_ylabel("count")
    ax.set_title(_plain(title), fontsize=10)
    ax.legend(fontsize=9)
    return _save(fig, path)


def plot_d_vs_xmin(evals: np.ndarray, fit: PowerLawFit | None = None, *, path: str | os.PathLike,
                   title: str = "KS distance D against candidate xmin") -> Path:
    """D of every candidate xmin (log x axis), the chosen xmin (first minimum of D) marked; 640x480 PNG."""
    fit = fit if fit is not None else fit_power_law(evals)
    cand = candidate_fits(evals)
    fig, ax = _figure()
    ax.semilogx(cand["xmin"], cand["D"], "-", color="tab:blue", lw=1.2, label="D(xmin)")
    if fit.status == "success":
        ax.axvline(fit.xmin, color="tab:green", ls="--", label=f"chosen xmin = {fit.xmin:.3g}")
        ax.plot([fit.xmin], [fit.D], "o", color="tab:red", label=f"min D = {fit.D:.3f}, alpha = {fit.alpha:.2f}")
    ax.set_xlabel("candidate xmin (eigenvalue, log scale)")
    ax.set_ylabel("KS distance D (dimensionless)")
    ax.set_ylim(0, 1.02)
    ax.set_title(_plain(title), fontsize=10)
    ax.legend(fontsize=9)
    return _save(fig, path)


def depth_table(layers) -> pd.DataFrame:
    """The points of the alpha-by-depth plot: rows with a finite alpha (status success when the column
    exists), in depth order - by layer_id (ww_spectral/model.py numbers tensors in depth order: block 2
    before block 10), then slice_id; the table's own order where it has no layer_id."""
    df = layers
    if "status" in df.columns:
        df = df[df["status"] == "success"]
    df = df[np.isfinite(pd.to_numeric(df["alpha"], errors="coerce").to_numpy(dtype=float, na_value=np.nan))]
    order = [c for c in ("layer_id", "slice_id") if c in df.columns]
    return df.sort_values(order, kind="stable", na_position="first") if order else df


def plot_alpha_by_depth(layers, *, path: str | os.PathLike, title: str = "alpha by depth") -> Path:
    """alpha of each analysed layer against its index (depth), 2-6 band shaded; 640x480 PNG.

    layers: DataFrame with columns alpha and (optionally) layer_id, longname, status.
    """
    df = depth_table(layers)
    fig, ax = _figure(bottom=0.2)
    ax.axhspan(*GOOD_BAND, color="tab:green", alpha=0.12, label="2 ≤ alpha ≤ 6 (well trained)")
    pos = np.arange(len(df))
    ax.plot(pos, df["alpha"].to_numpy(float), "o-", color="tab:blue", label="layer alpha")
    ax.set_xlabel("layer index (analysed layers, input → output)")
    ax.set_ylabel("alpha (power-law exponent, dimensionless)")
    if "longname" in df.columns and 0 < len(df) <= 12:
        ax.set_xticks(pos)
        ax.set_xticklabels([_plain(n) for n in df["longname"].astype(str)], rotation=30, ha="right", fontsize=8)
    hi = max([8.0, *df["alpha"].astype(float).tolist()]) * 1.05
    ax.set_ylim(0, hi)
    ax.set_title(_plain(title), fontsize=10)
    ax.legend(fontsize=9)
    return _save(fig, path)


def plot_alpha_histogram(layers, *, path: str | os.PathLike, title: str = "layer alphas") -> Path:
    """Histogram of layer alphas with the bands <2 (over-trained), 2-6, >6 (under-trained); 640x480 PNG."""
    df = depth_table(layers)
    a = df["alpha"].to_numpy(float)
    fig, ax = _figure()
    hi = max([8.0, *a.tolist()]) * 1.05
    ax.axvspan(0, GOOD_BAND[0], color="tab:red", alpha=0.10, label="alpha < 2 (over-trained)")
    ax.axvspan(*GOOD_BAND, color="tab:green", alpha=0.12, label="2 ≤ alpha ≤ 6")
    ax.axvspan(GOOD_BAND[1], hi, color="tab:orange", alpha=0.10, label="alpha > 6 (under-trained)")
    if a.size:
        width = 0.25 if a.size >= 30 else 0.5  # alpha units per bin
        ax.hist(a, bins=np.arange(0.0, hi + width, width), color="tab:blue", alpha=0.85, edgecolor="white",
                label=f"{a.size} layers")
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(0, hi)
    ax.set_xlabel("alpha (power-law exponent, dimensionless)")
    ax.set_ylabel("number of layers")
    ax.set_title(_plain(title), fontsize=10)
    ax.legend(fontsize=9)
    return _save(fig, path)


def layer_eigenvalues(source, *, layer: str | None = None,
                      options: AnalysisOptions | Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
    """{longname: eigenvalues} of every analysed layer of `source` (or only `layer`): the `evals` of
    analysis.layer_esds, i.e. exactly what the analysis fits. Prefer layer_esds (it carries the fit)."""
    return {name: esd.evals for name, esd in layer_esds(source, layer=layer, options=options).items()}


_SLUG_MAX = 100  # characters of a layer's file-name stem (file systems allow 255 bytes per name)


def _slug(name: str) -> str:
    """A file-name stem for `name`: letters, digits, '-', '_', '.' kept, anything else '_'. Where that
    changed or shortened the name (or left nothing, or only dots), 8 hex chars of its hash are appended,
    so two names never share a file ('a b' and 'a_b' differ) and no stem is empty, '.' or '..'."""
    stem = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "-_.") else "_" for ch in name)[:_SLUG_MAX]
    if stem != name or not stem.strip("."):
        stem = f"{stem}-{hashlib.sha256(name.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"
    return stem


def plot_layer(esd: LayerESD | np.ndarray, *, out_dir: str | os.PathLike, name: str | None = None,
               fix_fingers: str | None = None) -> dict[str, Path]:
    """The three layer plots of one ESD into out_dir: {"esd", "log_hist", "d_vs_xmin"} -> PNG paths.

    esd: a LayerESD (its eigenvalues and its fit are drawn as they are; name defaults to its longname),
    or bare eigenvalues (then fitted here with fix_fingers, and name is required).
    """
    if isinstance(esd, LayerESD):
        evals, fit = esd.evals, esd.fit
        name = esd.plan.longname if name is None else name
    else:
        if name is None:
            raise ValueError("plot_layer(evals, ...) needs name=")
        evals = np.asarray(esd, dtype=np.float64)
        fit = fit_power_law(evals, fix_fingers=fix_fingers)
    base = Path(out_dir) / _slug(name)
    return {
        "esd": plot_esd(evals, fit, path=f"{base}.esd.png", title=f"{name}: ESD and power-law fit"),
        "log_hist": plot_log_histogram(evals, fit, path=f"{base}.log10_hist.png",
                                       title=f"{name}: log10 eigenvalues"),
        "d_vs_xmin": plot_d_vs_xmin(evals, fit, path=f"{base}.d_vs_xmin.png", title=f"{name}: D vs xmin"),
    }


def plot_model(source, *, out_dir: str | os.PathLike, layer: str | None = None, title: str | None = None,
               layers_table=None, fix_fingers: str | None = None,
               options: AnalysisOptions | Mapping[str, Any] | None = None) -> dict[str, object]:
    """Every plot of one model: alpha by depth, alpha histogram, and the 3 layer plots per analysed layer.

    source: anything open_checkpoint accepts. layer: only this layer's plots (model plots still drawn).
    options: the analysis options (fix_fingers, when given, overrides theirs). layers_table: the model's
    per-layer DataFrame when already known (e.g. from the catalog); else the alphas are the fits of
    analysis.layer_esds. Returns {"alpha_depth", "alpha_hist", "layers": {longname: {kind: path}}}.
    """
    opts = make_options(options, **({"fix_fingers": fix_fingers} if fix_fingers is not None else {}))
    out = Path(out_dir)
    esds = layer_esds(source, layer=layer, options=opts)
    if layers_table is None:
        every = esds if layer is None else layer_esds(source, options=opts)
        rows = [{"layer_id": e.plan.layer_id, "longname": name, "alpha": e.fit.alpha, "status": e.fit.status}
                for name, e in every.items()]
        layers_table = pd.DataFrame(rows, columns=["layer_id", "longname", "alpha", "status"])
    label = title or (Path(source).name if isinstance(source, (str, os.PathLike)) else type(source).__name__)
    result: dict[str, object] = {
        "alpha_depth": plot_alpha_by_depth(layers_table, path=out / "alpha_by_depth.png",
                                           title=f"{label}: alpha by depth"),
        "alpha_hist": plot_alpha_histogram(layers_table, path=out / "alpha_hist.png",
                                           title=f"{label}: layer alphas"),
        "layers": {name: plot_layer(e, out_dir=out, name=name) for name, e in esds.items()},
    }
    return result


def plot_metric_vs_accuracy(table, *, metric: str, path: str | os.PathLike, title: str | None = None) -> Path:
    """Scatter of a model-level metric (x) against measured test accuracy (y), one colour per sweep.

    table: DataFrame with columns `metric`, test_accuracy and optionally sweep (one row per model).
    """
    fig, ax = _figure()
    groups = table.groupby("sweep", sort=False) if "sweep" in table.columns else [("all", table)]
    for name, g in groups:
        ax.plot(g[metric].astype(float), g["test_accuracy"].astype(float), "o", ms=5, alpha=0.8,
                label=_plain(f"{name} ({len(g)} models)"))
    ax.set_xlabel(_plain(f"{metric} (model mean over layers)"))
    ax.set_ylabel("test accuracy (fraction, clean labels)")
    ax.set_title(_plain(title or f"{metric} against test accuracy"), fontsize=10)
    ax.legend(fontsize=9)
    ax.grid(True, alpha=0.3)
    return _save(fig, path)
