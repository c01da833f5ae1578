"""randomize (ww_spectral/randomize.py): WeightWatcher 0.7.7's randomized ESD, rand_* columns, traps.

A shuffle's exact draws differ between implementations (WW uses numpy's global RandomState), so
parity is on what does not depend on them. WeightWatcher runs ONCE for this module, in a subprocess:
- analyze(randomize=True) with np.random.seed(0..1) on a model with planted correlation traps (a few
  unusually large elements in random matrices: dense, a small layer WW shuffles 5 times, a conv
  kernel) and a clean random layer: both find the same number of traps in the same layers, every seed;
  ours also names the planted elements' positions;
- its own random_eigenvalues / jensen_shannon_distance / mp_fit over 100 seeds on two 400 x 200 layers:
  the distributions of rand_bulk_max, max_rand_eval and rand_distance agree (medians within 4 standard
  errors, spreads within a factor 2: `_compare`).
Reproducibility: the same seed gives the same numbers in any layer order, with any number of worker
processes and any PYTHONHASHSEED.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
import scipy.stats
from safetensors.numpy import save_file as save_numpy

from ww_spectral.errors import OptionError
from ww_spectral.randomize import (
    RAND_COLUMNS,
    SMALL_LAYER_REPLICAS,
    _trap_entry,
    jensen_shannon_distance,
    randomize_layer,
    shuffle_rng,
)
from ww_spectral.spectrum import eigenvalues

SEEDS = range(2)  # analyze(randomize=True) runs per implementation
DIST_SEEDS = range(100)  # draws for the distribution comparison

_CHILD = r"""
import json, sys, warnings, io, contextlib, logging
warnings.simplefilter("ignore")
logging.disable(logging.CRITICAL)
job = json.load(open(sys.argv[1]))
out = {"analyze": [], "draws": {}}
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    import numpy as np
    import weightwatcher as ww
    from weightwatcher.constants import DEFAULT_PARAMS
    from weightwatcher.RMT_Util import jensen_shannon_distance
    from safetensors.torch import load_file
    for seed in job["seeds"]:
        np.random.seed(seed)
        df = ww.WeightWatcher(model=load_file(job["path"])).analyze(randomize=True)
        out["analyze"].append(json.loads(df.to_json(orient="records", double_precision=15)))
    sd = {k: v.double().numpy() for k, v in load_file(job["path"]).items()}
    watcher, params = ww.WeightWatcher(), dict(DEFAULT_PARAMS)
    for name in job["draw_layers"]:
        W = sd[name]
        N, M = max(W.shape), min(W.shape)
        evals = np.sort(np.linalg.svd(W, compute_uv=False) ** 2)
        rows = []
        for seed in job["draw_seeds"]:
            np.random.seed(seed)
            rand = watcher.random_eigenvalues([W], M, 1, params)
            fit = watcher.mp_fit(rand, N, M, 1, "x", 0, 0, False, False, "", "b", 0.5, True, evals)
            rows.append({"rand_distance": float(jensen_shannon_distance(evals, rand)),
                         "max_rand_eval": float(np.max(rand)), "rand_bulk_max": float(fit[4])})
        out["draws"][name] = rows
json.dump(out, open(sys.argv[2], "w"))
"""


def _trap_model() -> tuple[dict[str, np.ndarray], dict[str, set]]:
    """Random layers, three with planted large elements; returns (state dict, planted positions)."""
    rng = np.random.default_rng(5)
    sd = {"gauss.weight": rng.standard_normal((400, 200)).astype(np.float32),
          "traps.weight": rng.standard_normal((400, 200)).astype(np.float32),
          "small.weight": rng.standard_normal((60, 40)).astype(np.float32),
          "conv.weight": rng.standard_normal((48, 32, 3, 3)).astype(np.float32)}
    planted = {"traps.weight": {(10, 20, 0), (100, 150, 0), (390, 5, 0)}, "small.weight": {(7, 9, 0)},
               "conv.weight": {(5, 6, 5)}, "gauss.weight": set()}
    for (r, c, _), w in zip(sorted(planted["traps.weight"]), (60.0, 70.0, 80.0)):
        sd["traps.weight"][r, c] = w
    sd["small.weight"][7, 9] = 30.0
    sd["conv.weight"][5, 6, 1, 2] = 60.0  # kernel position (1, 2): slice 1 * 3 + 2 = 5
    return sd, planted


def _mats(W: np.ndarray) -> tuple[list[np.ndarray], float]:
    if W.ndim == 2:
        return [W], 1.0
    return [W[:, :, i, j] for i in range(W.shape[2]) for j in range(W.shape[3])], 0.5


def _randomize(name: str, W: np.ndarray, seed: int, **kw):
    mats, scale = _mats(W)
    evals = np.sort(np.concatenate([eigenvalues(m) * scale for m in mats]))
    N, M = max(mats[0].shape), min(mats[0].shape)
    return randomize_layer(mats, evals, N=N, M=M, seed=seed, tensor_name=name, scale=scale, **kw)


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    d = tmp_path_factory.mktemp("rand")
    sd, planted = _trap_model()
    path = d / "traps.safetensors"
    save_numpy(sd, str(path))
    job = {"path": str(path), "seeds": list(SEEDS), "draw_layers": ["gauss.weight", "traps.weight"],
           "draw_seeds": list(DIST_SEEDS)}
    (d / "job.json").write_text(json.dumps(job))
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MKL_NUM_THREADS="1", MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(d / "job.json"), str(d / "out.json")],
                          capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {"sd": sd, "planted": planted, **json.loads((d / "out.json").read_text())}


@pytest.mark.parity
@pytest.mark.slow
def test_traps_found_by_both_in_the_same_layers(oracle):
    sd, planted = oracle["sd"], oracle["planted"]
    for seed, rows in zip(SEEDS, oracle["analyze"]):
        ww_traps = {r["name"] + ".weight": int(r["num_traps"]) for r in rows}
        assert set(ww_traps) == set(sd)
        for name, W in sd.items():
            ours = _randomize(name, W, seed)
            assert ours.num_traps == ww_traps[name] == len(planted[name]) * ours.replicas, (seed, name)
            assert len(ours.traps) == ours.num_traps
            # every trap is one of the planted elements, at its position (and conv kernel slice)
            assert {(t.row, t.col, t.slice) for t in ours.traps} == planted[name], (name, ours.traps)
            assert all(t.localization > 0.5 and t.weight_z > 10 for t in ours.traps)


def _compare(ours: np.ndarray, ww: np.ndarray, what: str) -> str:
    """Same distribution over seeds: medians within 4 standard errors, spreads within a factor 2. Robust
    statistics (median; spread = interquartile range / 1.349, the standard deviation of a normal sample): a
    shuffle that puts two planted elements in one row or column (about 2 % of draws with three traps in
    400 x 200) roughly doubles max_rand_eval, so the mean and standard deviation of a few dozen draws say mostly
    whether such a draw happened. With 100 draws a spread estimate is good to about 12 %."""
    def centre_spread(x: np.ndarray) -> tuple[float, float]:
        q1, q2, q3 = np.percentile(x, [25, 50, 75])
        return float(q2), float(q3 - q1) / 1.349

    (mo, so), (mw, sw) = centre_spread(ours), centre_spread(ww)
    se = 1.2533 * math.sqrt(so**2 / ours.size + sw**2 / ww.size)  # standard error of a median
    assert abs(mo - mw) <= 4 * se + 1e-12, (what, mo, mw, se)
    assert 0.5 <= so / sw <= 2.0, (what, so, sw)
    return f"{what}: ours {mo:.5g} +- {so:.2g}, WW {mw:.5g} +- {sw:.2g} (median +- IQR/1.349)"


@pytest.mark.parity
@pytest.mark.slow
@pytest.mark.parametrize("name", ["gauss.weight", "traps.weight"])
def test_shuffle_statistics_match_weightwatcher_over_seeds(oracle, name):
    W = oracle["sd"][name]
    ours = [_randomize(name, W, seed, locate_traps=False) for seed in DIST_SEEDS]
    ww = oracle["draws"][name]
    lines = [_compare(np.array([o.mp.bulk_max for o in ours]), np.array([r["rand_bulk_max"] for r in ww]),
                      "rand_bulk_max"),
             _compare(np.array([o.max_rand_eval for o in ours]), np.array([r["max_rand_eval"] for r in ww]),
                      "max_rand_eval"),
             _compare(np.array([o.rand_distance for o in ours]), np.array([r["rand_distance"] for r in ww]),
                      "rand_distance")]
    print(f"\n{name}: " + "; ".join(lines))


# ---------------------------------------------------------------- reproducibility (no WW needed)


def _columns_for(names_and_seed) -> list[dict]:
    names, seed = names_and_seed
    sd, _ = _trap_model()
    return [_randomize(n, sd[n], seed).columns() for n in names]


def test_same_seed_same_numbers_in_any_order_and_any_worker_count():
    sd, _ = _trap_model()
    names = ["small.weight", "traps.weight", "conv.weight"]
    forward = {n: c for n, c in zip(names, _columns_for((names, 3)))}
    backward = {n: c for n, c in zip(names[::-1], _columns_for((names[::-1], 3)))}
    assert forward == backward
    with ProcessPoolExecutor(2) as pool:  # one layer per task, in whatever order the workers take them
        parallel = dict(zip(names, [c[0] for c in pool.map(_columns_for, [([n], 3) for n in names])]))
    assert parallel == forward
    again = _randomize("small.weight", sd["small.weight"], 3)
    first = _randomize("small.weight", sd["small.weight"], 3)
    assert np.array_equal(again.rand_evals, first.rand_evals) and again.traps == first.traps
    other = _randomize("small.weight", sd["small.weight"], 4)
    renamed = _randomize("other.weight", sd["small.weight"], 3)
    assert not np.array_equal(other.rand_evals, first.rand_evals)
    assert not np.array_equal(renamed.rand_evals, first.rand_evals)


def test_seed_derivation_does_not_use_python_hash(tmp_path):
    code = ("import numpy as np; from ww_spectral.randomize import shuffle_rng; "
            "print(shuffle_rng(7, 'model.layers.0.mlp.up_proj.weight', 0, 2).integers(0, 2**62, 4).tolist())")
    outs = set()
    for hashseed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hashseed)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                              cwd=str(tmp_path.parent))
        assert proc.returncode == 0, proc.stderr
        outs.add(proc.stdout)
    assert len(outs) == 1
    # the documented derivation: SeedSequence((seed, SHA-256 words of the name), spawn_key=(replica, slice))
    digest = hashlib.sha256(b"model.layers.0.mlp.up_proj.weight").digest()
    words = [int.from_bytes(digest[i:i + 4], "little") for i in range(0, 32, 4)]
    ref = np.random.Generator(np.random.PCG64(np.random.SeedSequence([7, *words], spawn_key=(0, 2))))
    assert outs == {str(ref.integers(0, 2**62, 4).tolist()) + "\n"}


def test_negative_seed_is_an_option_error():
    with pytest.raises(OptionError):
        shuffle_rng(-1, "x", 0, 0)


def test_float32_and_float64_runs_draw_the_same_permutation():
    sd, planted = _trap_model()
    W = sd["traps.weight"]
    a = randomize_layer([W], eigenvalues(W), N=400, M=200, seed=9, tensor_name="t")
    b = randomize_layer([W], eigenvalues(W, precision="float64"), N=400, M=200, seed=9, tensor_name="t",
                        precision="float64")
    np.testing.assert_allclose(a.rand_evals, b.rand_evals, rtol=1e-5, atol=1e-6 * b.rand_evals[-1])
    assert [(t.row, t.col) for t in a.traps] == [(t.row, t.col) for t in b.traps]
    assert {(t.row, t.col, t.slice) for t in b.traps} == planted["traps.weight"]


def test_kept_and_replayed_draws_locate_the_same_traps():
    # A layer of several draws (5 replicas of a small layer, 9 conv slices) keeps its shuffled matrices up to
    # keep_shuffled_bytes, else a draw with a trap is shuffled again from its seed: the same traps either way.
    sd, planted = _trap_model()
    for name in ("small.weight", "conv.weight"):
        kept = _randomize(name, sd[name], 3)
        replayed = _randomize(name, sd[name], 3, keep_shuffled_bytes=0)
        assert kept.traps and np.array_equal(kept.rand_evals, replayed.rand_evals)
        exact = [(t.trap, t.replica, t.slice, t.rand_eval, t.row, t.col, t.weight, t.weight_z) for t in kept.traps]
        assert exact == [(t.trap, t.replica, t.slice, t.rand_eval, t.row, t.col, t.weight, t.weight_z)
                         for t in replayed.traps]
        # the singular vectors: from the kept reduction, or from a new eigensolve (float32 round-off apart)
        np.testing.assert_allclose([t.localization for t in kept.traps], [t.localization for t in replayed.traps],
                                   rtol=1e-4)
        assert {(t.row, t.col, t.slice) for t in kept.traps} == planted[name]
    # Planted elements of one value: their bits do not tell them apart, so the permutation is replayed
    W = sd["traps.weight"].copy()
    for r, c, _ in planted["traps.weight"]:
        W[r, c] = 70.0
    cells = {(r, c) for r, c, _ in planted["traps.weight"]}
    for seed in range(4):
        traps = randomize_layer([W], eigenvalues(W), N=400, M=200, seed=seed, tensor_name="t").traps
        assert len(traps) == 3 and {(t.row, t.col) for t in traps} <= cells and all(t.weight == 70.0 for t in traps)


def test_the_reused_scratch_buffer_changes_no_number(monkeypatch):
    from ww_spectral import randomize

    sd, _ = _trap_model()
    runs = []
    for limit in (0, randomize.SCRATCH_MAX_BYTES):
        monkeypatch.setattr(randomize, "SCRATCH_MAX_BYTES", limit)
        runs.append([_randomize(name, sd[name], 4) for name in ("traps.weight", "gauss.weight", "conv.weight")])
    for fresh, reused in zip(*runs):
        assert np.array_equal(fresh.rand_evals, reused.rand_evals) and fresh.traps == reused.traps
    assert randomize._scratch(10, np.float32).base is randomize._scratch(20, np.float32).base  # one buffer


def test_trap_entry_pairs_the_row_and_column_of_one_element():
    # Two planted elements (1, 2) and (5, 7) whose spikes mixed: u weighs row 1 most, v weighs column 7 most,
    # but the entry (1, 7) is small; the largest term of u^T W v is a planted element's.
    W = np.full((8, 9), 0.01)
    W[1, 2], W[5, 7] = 3.0, 2.9
    u, v = np.zeros(8), np.zeros(9)
    u[1], u[5] = 0.72, 0.69
    v[2], v[7] = 0.69, 0.72
    assert _trap_entry(W, u, v) in {(1, 2), (5, 7)}
    assert _trap_entry(W, u, v, candidates=1) == (1, 7)  # what argmax |u|, argmax |v| alone would pick


def test_columns_replicas_and_norm():
    sd, _ = _trap_model()
    small = _randomize("small.weight", sd["small.weight"], 0)
    assert small.replicas == SMALL_LAYER_REPLICAS and small.rand_evals.size == SMALL_LAYER_REPLICAS * 40
    big = _randomize("gauss.weight", sd["gauss.weight"], 0)
    assert big.replicas == 1 and big.rand_evals.size == 200
    # a shuffle keeps every value: the randomized ESD has the same sum (squared Frobenius norm)
    W = sd["gauss.weight"].astype(np.float64)
    assert big.rand_evals.sum() == pytest.approx(np.sum(W * W), rel=1e-5)
    conv = _randomize("conv.weight", sd["conv.weight"], 0)
    assert conv.rand_evals.sum() == pytest.approx(0.5 * np.sum(sd["conv.weight"].astype(np.float64) ** 2), rel=1e-5)
    cols = big.columns()
    assert list(cols) == list(RAND_COLUMNS) and cols["num_traps"] == cols["rand_num_spikes"] == 0
    top = float(eigenvalues(sd["gauss.weight"])[-1])  # one replica: its draw is the whole randomized ESD
    assert cols["ww_softrank"] == pytest.approx(cols["max_rand_eval"] / top, rel=1e-12)
    assert cols["ww_maxdist"] == pytest.approx(top - cols["max_rand_eval"], rel=1e-12)
    rows = _randomize("traps.weight", sd["traps.weight"], 0).trap_rows(tensor_name="traps.weight", layer_id=1)
    assert len(rows) == 3 and rows[0]["tensor_name"] == "traps.weight" and rows[0]["trap"] == 0
    assert rows[0]["rand_eval"] >= rows[1]["rand_eval"] >= rows[2]["rand_eval"]


def test_jensen_shannon_distance_is_weightwatchers_formula():
    rng = np.random.default_rng(0)
    p, q = rng.gamma(2.0, size=300), 3.0 * rng.gamma(2.0, size=300)  # different sums, as WW allows
    m = (p + q) / 2
    ref = math.sqrt((scipy.stats.entropy(p, m) + scipy.stats.entropy(q, m)) / 2)
    assert jensen_shannon_distance(p, q) == pytest.approx(ref, rel=1e-12)
    assert jensen_shannon_distance(p, p) == 0.0
    with pytest.raises(ValueError):
        jensen_shannon_distance(p, q[:-1])


# ---------------------------------------------------------------- costs (opt-in: WW_SPECTRAL_COSTS=1)

COST_SHAPES = {  # (rows, cols): layers of that shape in MiniLM-L6 (0: LLM shapes, measured alone)
    (384, 384): 25, (1536, 384): 6, (384, 1536): 6, (512, 384): 1, (30522, 384): 1,
    (768, 768): 0, (3072, 768): 0, (4096, 4096): 0, (14336, 4096): 0,
}


@pytest.mark.skipif(os.environ.get("WW_SPECTRAL_COSTS") != "1", reason="set WW_SPECTRAL_COSTS=1 to measure")
def test_costs_against_the_default_analysis():
    """Per layer, one BLAS thread, CPU seconds of this process (robust on a shared machine), best of 5:
    default = Gram + eigensolve + power-law fit (the work of the default analysis per layer); mp_fit and
    randomize as extra work on top of it. Prints the ratios (default + option) / default per shape and
    summed over MiniLM-L6's matrices. Gaussian weights (no correlation traps); a last line per shape class
    with three planted large elements adds the cost of locating the traps."""
    import time

    from threadpoolctl import threadpool_limits

    from ww_spectral.fit import fit_power_law
    from ww_spectral.mp_fit import mp_fit

    def best(fn, reps=5):
        times = []
        for _ in range(reps):
            t = time.process_time()
            fn()
            times.append(time.process_time() - t)
        return min(times)

    rng = np.random.default_rng(0)
    totals = np.zeros(3)
    print("\nshape            default_s  mp_fit_s  x(default+mp)  randomize_s  x(default+rand)")
    with threadpool_limits(1):
        for (r, c), count in COST_SHAPES.items():
            W = (rng.standard_normal((r, c)) * 0.02).astype(np.float32)
            ev = eigenvalues(W)
            reps = 5 if r * c < 5e6 else 1
            t_def = best(lambda W=W: fit_power_law(eigenvalues(W)), reps)
            t_mp = best(lambda ev=ev, r=r, c=c: mp_fit(ev, N=max(r, c), M=min(r, c)), reps)
            t_rand = best(lambda W=W, ev=ev, r=r, c=c: randomize_layer([W], ev, N=max(r, c), M=min(r, c), seed=0,
                                                                      tensor_name="w"), reps)
            totals += count * np.array([t_def, t_mp, t_rand])
            print(f"{r:>6} x {c:<6} {t_def:10.4f} {t_mp:9.4f} {1 + t_mp / t_def:13.2f} {t_rand:12.4f} "
                  f"{1 + t_rand / t_def:15.2f}")
            if (r, c) in ((1536, 384), (3072, 768)):
                Wt = W.copy()
                Wt.flat[[5, W.size // 2, W.size - 7]] = 2.0  # 100 standard deviations
                evt = eigenvalues(Wt)
                t_traps = best(lambda Wt=Wt, evt=evt, r=r, c=c: randomize_layer(
                    [Wt], evt, N=max(r, c), M=min(r, c), seed=0, tensor_name="w"), reps)
                print(f"{'  with 3 traps':16} {'':10} {'':9} {'':13} {t_traps:12.4f} {1 + t_traps / t_def:15.2f}")
    d, m, z = totals
    print(f"MiniLM-L6 matrices: default {d:.3f} s, +mp_fit {1 + m / d:.2f}x, +randomize {1 + z / d:.2f}x")
