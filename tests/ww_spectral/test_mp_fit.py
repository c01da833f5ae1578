"""mp_fit (ww_spectral/mp_fit.py): WeightWatcher 0.7.7's Marchenko-Pastur columns.

Parity: WeightWatcher runs ONCE for this module, in a subprocess: its analyze(mp_fit=True) on the
dense, conv, embedding and bf16 models the default parity test uses, and its own
WeightWatcher.mp_fit on eigenvalue samples (square Q = 1, Q < 1 as WW reports for some conv kernels,
spiked, heavy-tailed, tiny). Samples are the same float64 numbers on both sides: every column equal
to 1e-12. Layers: our float64 ESD gives WW's columns to 1e-9; our float32 ESD (the default) to the
default columns' tolerance, 1e-5 relative, with the same num_spikes.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file as save_numpy
from support.planted_models import conv_model, dense_model, embedding_model, heavy_tailed

from ww_spectral.mp_fit import COLUMNS, MPFit, mp_fit
from ww_spectral.spectrum import eigenvalues, noise_floor

_CHILD = r"""
import json, sys, warnings, io, contextlib, logging
warnings.simplefilter("ignore")
logging.disable(logging.CRITICAL)
jobs = json.load(open(sys.argv[1]))
out = []
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    import numpy as np
    import weightwatcher as ww
    from safetensors.torch import load_file
    for job in jobs:
        if "path" in job:
            df = ww.WeightWatcher(model=load_file(job["path"])).analyze(mp_fit=True)
            out.append(json.loads(df.to_json(orient="records", double_precision=15)))
        else:
            watcher, res = ww.WeightWatcher(), []
            for s in job["samples"]:
                ev = np.sort(np.asarray(s["evals"], dtype=np.float64))
                r = watcher.mp_fit(ev, s["N"], s["M"], 1, "x", 0, 0, False, False, "", "b", 0.5, True, ev)
                res.append([float(v) for v in r])
            out.append(res)
json.dump(out, open(sys.argv[2], "w"))
"""
WW_ORDER = ("num_spikes", "sigma_mp", "mp_softrank", "bulk_min", "bulk_max", "W_scale")  # WW.mp_fit's return


def _weightwatcher(jobs: list, tmp_path) -> list:
    job_file, out_file = tmp_path / "jobs.json", tmp_path / "out.json"
    job_file.write_text(json.dumps(jobs))
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MKL_NUM_THREADS="1", MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(job_file), str(out_file)], capture_output=True,
                          text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out_file.read_text())


def _samples() -> list[dict]:
    rng = np.random.default_rng(11)
    out = []
    for n, m, spikes in ((300, 100, (3.0, 2.0)), (200, 200, (2.5,)), (512, 64, ()), (40, 16, (2.0,))):
        W = rng.standard_normal((n, m)) / math.sqrt(n)
        for s in spikes:  # rank-one spikes beyond the bulk
            W += s * np.outer(rng.standard_normal(n) / math.sqrt(n), rng.standard_normal(m) / math.sqrt(m))
        out.append({"evals": np.linalg.svd(W, compute_uv=False) ** 2, "N": n, "M": m})
    lam = np.sort(np.linalg.svd(heavy_tailed(rng, 400, 160, 2.5).astype(np.float64), compute_uv=False) ** 2)
    out.append({"evals": lam, "N": 400, "M": 160})
    out.append({"evals": lam, "N": 160, "M": 400})  # Q < 1, as WW reports even-kernel conv layers
    pooled = np.concatenate([np.linalg.svd(rng.standard_normal((48, 24)), compute_uv=False) ** 2 * 0.5
                             for _ in range(4)])
    out.append({"evals": pooled, "N": 48, "M": 24})  # conv-like: 4 slices pooled, scaled by 0.5
    return out


def _layer_esd(W: np.ndarray, precision: str) -> np.ndarray:
    """WW's ESD of one tensor: eigenvalues of W^T W (2-D), or of every kh x kw slice scaled by 0.5 (4-D),
    with the float32 round-off floor the default analysis applies."""
    mats = [W] if W.ndim == 2 else [W[:, :, i, j] for i in range(W.shape[2]) for j in range(W.shape[3])]
    scale = 1.0 if W.ndim == 2 else 0.5
    ev = np.sort(np.concatenate([eigenvalues(m, precision=precision) * scale for m in mats]))
    if precision == "float32":
        ev = np.where(ev > noise_floor(float(ev[-1]), min(mats[0].shape), "float32"), ev, 0.0)
    return ev


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    d = tmp_path_factory.mktemp("mp")
    files = {}
    for name, sd in {"dense": dense_model(), "conv": conv_model(), "embed": embedding_model()}.items():
        files[name] = d / f"{name}.safetensors"
        save_numpy(sd, str(files[name]))
    import torch
    from safetensors.torch import save_file

    files["bf16"] = d / "bf16.safetensors"
    save_file({k: torch.from_numpy(v).to(torch.bfloat16) for k, v in dense_model(seed=3).items()}, str(files["bf16"]))
    samples = _samples()
    jobs = [{"path": str(files[k])} for k in ("dense", "conv", "embed", "bf16")]
    jobs.append({"samples": [{"evals": s["evals"].tolist(), "N": s["N"], "M": s["M"]} for s in samples]})
    results = _weightwatcher(jobs, d)
    return {"files": files, "layers": dict(zip(("dense", "conv", "embed", "bf16"), results[:4])),
            "samples": samples, "sample_fits": results[4]}


def _tensors(path) -> dict[str, np.ndarray]:
    if "bf16" in str(path):
        from safetensors.torch import load_file

        return {k: v.float().numpy() for k, v in load_file(str(path)).items()}
    return load_numpy(str(path))


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


@pytest.mark.parity
@pytest.mark.slow
def test_mp_fit_equals_weightwatcher_on_the_same_eigenvalues(oracle):
    worst = 0.0
    for s, ref in zip(oracle["samples"], oracle["sample_fits"]):
        ours = mp_fit(s["evals"], N=s["N"], M=s["M"])
        assert ours.status == "success"
        assert ours.num_spikes == int(ref[0]), (s["N"], s["M"], ours.num_spikes, ref[0])
        for name, value in zip(WW_ORDER[1:], ref[1:]):
            worst = max(worst, _rel(getattr(ours, name), value))
            assert _rel(getattr(ours, name), value) <= 1e-12, (s["N"], s["M"], name, getattr(ours, name), value)
    print(f"mp_fit on identical eigenvalues: max rel diff {worst:.1e}")


@pytest.mark.parity
@pytest.mark.slow
@pytest.mark.parametrize("precision,tol", [("float64", 1e-9), ("float32", 1e-5)])
@pytest.mark.parametrize("family", ["dense", "conv", "embed", "bf16"])
def test_mp_fit_columns_match_weightwatcher_layers(oracle, family, precision, tol):
    tensors = _tensors(oracle["files"][family])
    rows = oracle["layers"][family]
    assert rows and all(r["num_spikes"] >= 0 for r in rows)  # WW fitted every layer it analysed
    worst = 0.0
    for row in rows:
        ev = _layer_esd(tensors[row["name"] + ".weight"], precision)
        ours = mp_fit(ev, N=int(row["N"]), M=int(row["M"]))  # N, M as WW's row (its conv N/M swap too)
        assert ours.num_spikes == row["num_spikes"], (family, row["name"], ours.num_spikes, row["num_spikes"])
        for name in COLUMNS[1:]:
            worst = max(worst, _rel(getattr(ours, name), row[name]))
            assert _rel(getattr(ours, name), row[name]) <= tol, (family, row["name"], name, getattr(ours, name),
                                                                   row[name])
    print(f"{family} {precision}: {len(rows)} layers, max rel diff {worst:.1e}")


# ---------------------------------------------------------------- properties (no WW needed)


def _spiked(seed: int = 0, n: int = 400, m: int = 200) -> np.ndarray:
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((n, m)) / math.sqrt(n)
    W += 4.0 * np.outer(rng.standard_normal(n), rng.standard_normal(m)) / math.sqrt(n * m)
    return np.linalg.svd(W, compute_uv=False) ** 2


def test_nelder_mead_is_scipys_fmin_step_for_step():
    from scipy import optimize

    from ww_spectral.mp_fit import _fmin_1d

    rng = np.random.default_rng(0)
    for t in range(400):
        a, b, c, d = rng.normal(size=4)
        k = int(rng.integers(1, 5))

        def f(x, a=a, b=b, c=c, d=d, k=k):  # bumpy, with a penalty step like WW's residual
            return float((x - a) ** 2 * abs(b) + c * math.sin(k * x) + (1000.0 if x > 3 else 0.0) + d * abs(x) ** 1.5)

        x0 = float(rng.normal() * 2) if t % 10 else 0.0
        ref = optimize.fmin(lambda p, f=f: f(float(p[0])), np.array([x0]), full_output=1, disp=0)[0][0]
        assert _fmin_1d(f, x0) == ref, (t, x0)


def test_grid_shortcut_and_fmin_buffers_give_the_exact_residuals():
    """_Residual.first_min (Q == 1: closed-form screening, exact re-evaluation) picks the grid point that
    argmin over the exact residuals picks, and one() equals the batched residual bit for bit."""
    from ww_spectral.mp_fit import _GRID, _Residual

    rng = np.random.default_rng(3)
    for t in range(12):
        n = int(rng.integers(40, 300))
        W = rng.standard_normal((n, n)) * np.sqrt(rng.random(n) ** (-1.0 / (1.0 + 3.0 * rng.random())))
        lam = np.linalg.svd(W, compute_uv=False) ** 2
        x = lam * (lam.size / lam.sum())
        Q = 1.0 if t % 3 else 2.5
        resid = _Residual(np.sqrt(x) if Q == 1 else x, Q, 0.1)
        scale = math.sqrt(float(np.max(x)) / (1.0 + 1.0 / math.sqrt(Q)) ** 2)
        grid = np.mgrid[slice(*(f * scale for f in _GRID))]
        exact = resid(grid)
        assert resid.first_min(grid) == grid[int(np.argmin(exact))], t
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            for i in rng.integers(0, grid.size, 5).tolist():
                assert resid.one(float(grid[i])) == exact[i], (t, i)


def test_units_follow_the_eigenvalues():
    lam = _spiked()
    a, b = mp_fit(lam, N=400, M=200), mp_fit(37.0 * lam[::-1], N=400, M=200)
    assert a.num_spikes == b.num_spikes >= 1
    assert b.sigma_mp == pytest.approx(a.sigma_mp, rel=1e-12)  # fitted after rescaling to mean 1
    assert b.mp_softrank == pytest.approx(a.mp_softrank, rel=1e-12)
    assert b.bulk_max == pytest.approx(37.0 * a.bulk_max, rel=1e-12)
    assert b.bulk_min == pytest.approx(37.0 * a.bulk_min, rel=1e-12)
    assert b.W_scale == pytest.approx(a.W_scale / math.sqrt(37.0), rel=1e-12)


def test_spikes_are_the_eigenvalues_beyond_the_padded_edge():
    lam = _spiked(1)
    fit = mp_fit(lam, N=400, M=200)
    assert fit.num_spikes == int(np.count_nonzero(fit.is_spike(lam)))
    edge_units = fit.spike_edge / fit.W_scale**2
    assert edge_units > fit.bulk_max  # the Tracy-Widom pad
    assert np.all(lam[fit.is_spike(lam)] > fit.bulk_max)
    # a random matrix has its largest eigenvalue near the fitted edge: softrank about 1
    pure = np.linalg.svd(np.random.default_rng(2).standard_normal((400, 200)), compute_uv=False) ** 2
    clean = mp_fit(pure, N=400, M=200)
    assert clean.num_spikes == 0 and 0.8 < clean.mp_softrank < 1.2


def test_columns_and_prefix():
    fit = mp_fit(_spiked(), N=400, M=200)
    assert list(fit.columns()) == list(COLUMNS)
    assert list(fit.columns("rand_")) == ["rand_" + c for c in COLUMNS]
    assert fit.columns()["num_spikes"] == fit.num_spikes


@pytest.mark.parametrize("evals,code", [
    (np.zeros(50), "all_zero"),
    (np.array([1.0, np.nan, 2.0]), "nonfinite"),
    (np.array([3.0]), "too_few_evals"),
])
def test_degenerate_input_fails_with_a_code(evals, code):
    fit = mp_fit(evals, N=10, M=5)
    assert isinstance(fit, MPFit) and fit.status == "failed" and fit.fit_status == code
    assert fit.num_spikes is None and math.isnan(fit.sigma_mp) and math.isnan(fit.bulk_max)
