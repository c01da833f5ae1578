"""Parity with WeightWatcher 0.7.7 (run in ONE subprocess for the whole module: tests/support/ww_oracle.py).

Models with planted heavy-tailed spectra (dense, conv2d, embeddings, bf16) are written as safetensors
and analysed by both. Every layer WW analyses must be analysed with the same tail size; alpha and D
within 1e-3; norm/rank columns within 1e-5 relative in float32 (1e-9 in float64).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import save_file as save_numpy
from support.planted_models import conv_model, dense_model, embedding_model, pareto_eigenvalues
from support.ww_oracle import run_weightwatcher

import ww_spectral
from ww_spectral.fit import fit_power_law
from ww_spectral.spectrum import noise_floor

pytestmark = [pytest.mark.parity, pytest.mark.slow]

NORM_COLUMNS = ("norm", "log_norm", "spectral_norm", "log_spectral_norm", "lambda_max", "stable_rank",
                "sv_max", "entropy", "xmax")
RANK_COLUMNS = ("matrix_rank", "rank_loss", "weak_rank_loss", "num_evals", "num_pl_spikes")
FIT_SAMPLES_SEED = 7


def _save_bf16(sd: dict[str, np.ndarray], path) -> None:
    import torch
    from safetensors.torch import save_file

    save_file({k: torch.from_numpy(v).to(torch.bfloat16) for k, v in sd.items()}, str(path))


def _fit_samples() -> list[np.ndarray]:
    rng = np.random.default_rng(FIT_SAMPLES_SEED)
    out = []
    for n in (9, 10, 12, 15, 19, 20, 21, 40, 100, 300, 1000):
        for a in (2.0, 3.0, 5.0):
            x = pareto_eigenvalues(rng, n, a, scale=rng.uniform(0.01, 10))
            out.append(np.concatenate([x, np.zeros(3), np.full(2, 1e-6)]))  # zeros/tiny are dropped
    out.append(np.repeat(pareto_eigenvalues(rng, 60, 3.0), 2))  # duplicates: ties in the first minimum
    return out


@pytest.fixture(scope="module")
def parity(tmp_path_factory):
    d = tmp_path_factory.mktemp("parity")
    files = {}
    for name, sd in {"dense": dense_model(), "conv": conv_model(), "embed": embedding_model()}.items():
        files[name] = d / f"{name}.safetensors"
        save_numpy(sd, str(files[name]))
    files["bf16"] = d / "bf16.safetensors"
    _save_bf16(dense_model(seed=3), files["bf16"])
    samples = _fit_samples()
    jobs = [(files[k], {}) for k in ("dense", "conv", "embed", "bf16")]
    jobs.append((files["dense"], {"fix_fingers": "clip_xmax"}))
    jobs.append({"samples": samples, "clip": False})
    jobs.append({"samples": [s for s in samples if np.count_nonzero(s > 1e-5) >= 40], "clip": True})
    results = run_weightwatcher(jobs)
    return {"files": files, "ww": dict(zip(["dense", "conv", "embed", "bf16"], results[:4])),
            "ww_clip": results[4], "fits": results[5], "clip_fits": results[6], "samples": samples}


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


def _compare(ours: pd.DataFrame, ww: pd.DataFrame, precision: str, *, clip: bool = False) -> dict:
    """Assert parity layer by layer; returns the max deviations seen."""
    rel_tol = 1e-5 if precision == "float32" else 1e-9
    ours = ours.set_index("longname")
    worst = {"alpha": 0.0, "D": 0.0, "norm_rel": 0.0}
    ww_names = set(ww["name"])
    analysed = set(ours.index[ours["status"] == "success"])
    assert ww_names == analysed, (ww_names ^ analysed)
    for _, w in ww.iterrows():
        o = ours.loc[w["name"]]
        assert o["status"] == w["status"] == "success"
        for c in RANK_COLUMNS:
            assert int(o[c]) == int(w[c]), (w["name"], c, o[c], w[c])
        assert abs(o["alpha"] - w["alpha"]) <= 1e-3, (w["name"], o["alpha"], w["alpha"])
        assert abs(o["D"] - w["D"]) <= 1e-3, (w["name"], o["D"], w["D"])
        assert abs(o["sigma"] - w["sigma"]) <= 1e-3
        assert o["warning"] == w["warning"]
        assert _rel(o["xmin"], w["xmin"]) <= rel_tol * 10
        worst["alpha"] = max(worst["alpha"], abs(o["alpha"] - w["alpha"]))
        worst["D"] = max(worst["D"], abs(o["D"] - w["D"]))
        for c in NORM_COLUMNS:
            r = _rel(o[c], w[c])
            worst["norm_rel"] = max(worst["norm_rel"], r)
            assert r <= rel_tol, (w["name"], c, o[c], w[c])
        # alpha-dependent columns move with alpha and lambda:
        # d(alpha log10 lmax) <= d(alpha) |log10 lmax| + alpha * rel(lmax) / ln 10
        da = abs(o["alpha"] - w["alpha"])
        lam_term = w["alpha"] * rel_tol + 1e-12
        assert abs(o["alpha_weighted"] - w["alpha_weighted"]) <= da * abs(w["log_spectral_norm"]) + lam_term
        assert abs(o["log_alpha_norm"] - w["log_alpha_norm"]) <= da * (abs(w["log_spectral_norm"]) + 1) + lam_term
        # sv_min: float32 eigenvalues carry an absolute error below the round-off floor
        if precision == "float64":
            assert _rel(o["sv_min"], w["sv_min"]) <= rel_tol
        else:
            floor = noise_floor(w["lambda_max"], int(o["M"]), "float32")
            assert abs(o["sv_min"] ** 2 - w["sv_min"] ** 2) <= floor
        if clip:
            assert int(o["num_fingers"]) == int(w["num_fingers"])
            assert abs(o["raw_alpha"] - w["raw_alpha"]) <= 1e-3
    return worst


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("family", ["dense", "conv", "embed", "bf16"])
def test_layers_match_weightwatcher(parity, family, precision):
    ours = ww_spectral.analyze(str(parity["files"][family]), precision=precision, ww_compat_conv_nm=True)
    worst = _compare(ours, parity["ww"][family], precision)
    if precision == "float64":
        assert worst["alpha"] <= 1e-9 and worst["D"] <= 1e-9
    ww = parity["ww"][family].set_index("name")
    for name, o in ours.set_index("longname").iterrows():  # N, M, Q, rf as WW reports them (compat mode)
        if name in ww.index:
            assert (int(o["N"]), int(o["M"]), int(o["rf"])) == (ww.loc[name, "N"], ww.loc[name, "M"],
                                                                  ww.loc[name, "rf"])


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_clip_xmax_matches_weightwatcher(parity, precision):
    ours = ww_spectral.analyze(str(parity["files"]["dense"]), fix_fingers="clip_xmax", precision=precision)
    _compare(ours, parity["ww_clip"], precision, clip=True)


def test_conv_even_kernel_n_m_fixed_by_default(parity):
    ours = ww_spectral.analyze(str(parity["files"]["conv"])).set_index("longname")
    ww = parity["ww"]["conv"].set_index("name")
    # WW reports N=24 < M=48 for the 24x48x2x2 kernel (its bug); we report N >= M unless asked
    assert (ww.loc["conv4", "N"], ww.loc["conv4", "M"]) == (24, 48)
    assert (ours.loc["conv4", "N"], ours.loc["conv4", "M"], ours.loc["conv4", "Q"]) == (48, 24, 2.0)
    assert ours.loc["conv4", "alpha"] == pytest.approx(ww.loc["conv4", "alpha"], abs=1e-3)


def test_skipped_tensors_have_reasons(parity):
    layers = ww_spectral.analyze_model(str(parity["files"]["embed"])).layers.set_index("tensor_name")
    assert layers.loc["big_vocab.weight", "status"] == "skipped"
    assert layers.loc["big_vocab.weight", "fit_status"] == "size_filter"
    assert "big_vocab" not in set(parity["ww"]["embed"]["name"])


@pytest.mark.parametrize("clip", [False, True])
def test_fitter_matches_wwfit_on_samples(parity, clip):
    samples = parity["samples"]
    ref = parity["clip_fits"] if clip else parity["fits"]
    if clip:
        samples = [s for s in samples if np.count_nonzero(s > 1e-5) >= 40]
    assert len(ref) == len(samples)
    for x, w in zip(samples, ref):
        f = fit_power_law(x, fix_fingers="clip_xmax" if clip else None)
        assert f.status == "success"
        for c in ("alpha", "D", "xmin", "xmax", "sigma", "raw_alpha"):
            assert math.isclose(getattr(f, c), w[c], rel_tol=1e-9, abs_tol=1e-12), (len(x), c, getattr(f, c), w[c])
        assert f.num_fingers == w["num_fingers"]
        assert f.num_pl_spikes == int(np.count_nonzero(x >= w["xmin"]))
