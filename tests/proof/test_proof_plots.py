"""Plots: non-empty 640x480 PNGs, the fit line where it must be, D(xmin) consistent with the fit."""

from __future__ import annotations

import struct

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import save_file

from ww_spectral.fit import fit_power_law
from ww_spectral.plots import (
    candidate_fits,
    esd_fit_line,
    log_binned_density,
    plot_alpha_by_depth,
    plot_alpha_histogram,
    plot_metric_vs_accuracy,
    plot_model,
)


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def pareto(n: int, alpha: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (1.0 - rng.random(n)) ** (-1.0 / (alpha - 1.0))  # density ~ x^-alpha on [1, inf)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_line_passes_through_its_point_at_xmin(seed):
    ev = np.concatenate([np.random.default_rng(seed).random(300) * 0.5 + 0.01, pareto(200, 3.0, seed)])
    fit = fit_power_law(ev)
    x, y = esd_fit_line(ev, alpha=fit.alpha, xmin=fit.xmin)
    k = np.count_nonzero(ev >= fit.xmin)
    assert x[0] == pytest.approx(fit.xmin) and x[-1] == pytest.approx(ev.max())
    assert y[0] == pytest.approx(k / ev.size * (fit.alpha - 1) / fit.xmin)
    # the slope on log-log axes is -alpha
    slope = np.polyfit(np.log(x), np.log(y), 1)[0]
    assert slope == pytest.approx(-fit.alpha, rel=1e-9)


def test_log_binned_density_integrates_to_one():
    ev = pareto(1000, 2.5, 0)
    c, d = log_binned_density(ev, bins=30)
    edges = np.geomspace(ev.min(), ev.max(), 31)
    assert np.sum(d * np.diff(edges)) == pytest.approx(1.0)
    assert c.shape == d.shape == (30,)


@pytest.mark.parametrize("seed", [0, 1])
def test_d_vs_xmin_minimum_is_the_fit(seed):
    ev = np.concatenate([np.random.default_rng(seed).random(200) + 0.01, pareto(150, 3.5, seed)])
    fit = fit_power_law(ev)
    cand = candidate_fits(ev)
    j = int(np.argmin(cand["D"]))
    assert cand["xmin"][j] == pytest.approx(fit.xmin)
    assert cand["D"][j] == pytest.approx(fit.D, rel=1e-9)
    assert cand["alpha"][j] == pytest.approx(fit.alpha, rel=1e-9)


def test_model_plots_are_pngs_of_the_right_size(tmp_path):
    rng = np.random.default_rng(0)
    weights = {"mlp.fc1.weight": rng.standard_normal((256, 64)).astype(np.float32),
               "mlp.fc1.bias": np.zeros(256, np.float32),
               "mlp.fc2.weight": (rng.standard_t(2.5, (128, 256))).astype(np.float32)}
    src = tmp_path / "m"
    src.mkdir()
    save_file(weights, str(src / "model.safetensors"))
    out = plot_model(str(src), out_dir=tmp_path / "plots")
    paths = [out["alpha_depth"], out["alpha_hist"]] + [p for d in out["layers"].values() for p in d.values()]
    assert set(out["layers"]) == {"mlp.fc1", "mlp.fc2"}  # the bias is no layer
    assert len(paths) == 8
    for p in paths:
        assert p.stat().st_size > 5000
        assert png_size(p) == (640, 480)
    only = plot_model(str(src), out_dir=tmp_path / "one", layer="mlp.fc2")
    assert set(only["layers"]) == {"mlp.fc2"}


def test_alpha_plots_from_a_table(tmp_path):
    layers = pd.DataFrame({"layer_id": [0, 1, 2, 3], "longname": ["a", "b", "c", "d"],
                           "alpha": [1.5, 3.0, np.nan, 7.5], "status": ["success", "success", "failed", "success"]})
    p1 = plot_alpha_by_depth(layers, path=tmp_path / "d.png")
    p2 = plot_alpha_histogram(layers, path=tmp_path / "h.png")
    assert png_size(p1) == png_size(p2) == (640, 480)


def test_names_are_never_mathtext_and_never_share_a_file(tmp_path):
    """'$\\foo{$' in a tensor name, a title or a sweep name is drawn as written (matplotlib would parse
    a '$...$' pair as mathtext and fail on the unknown command); 'a b' and 'a_b' get their own files."""
    rng = np.random.default_rng(1)
    hostile = "$\\foo{$"
    weights = {f"{hostile}.weight": rng.standard_t(3, (64, 32)).astype(np.float32),
               "a b.weight": rng.standard_t(3, (48, 32)).astype(np.float32),
               "a_b.weight": rng.standard_t(3, (40, 32)).astype(np.float32)}
    src = tmp_path / "m.safetensors"
    save_file(weights, str(src))
    out = plot_model(str(src), out_dir=tmp_path / "plots", title=f"org/{hostile}")
    assert set(out["layers"]) == {hostile, "a b", "a_b"}
    files = [p for d in out["layers"].values() for p in d.values()]
    assert len(set(files)) == 9 and all(p.parent == tmp_path / "plots" and p.stat().st_size > 5000 for p in files)
    table = pd.DataFrame({"m": [1.0, 2.0], "test_accuracy": [0.5, 0.6], "sweep": [hostile, "$x$"]})
    assert png_size(plot_metric_vs_accuracy(table, metric="m", path=tmp_path / "acc.png", title=hostile)) == (640, 480)
