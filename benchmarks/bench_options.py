"""Benchmark: the cost of each analysis option (issue 10), ours against our default and WeightWatcher 0.7.7's
time for the same option, side by side in one run.

    .venv/bin/python benchmarks/bench_options.py [--reps 5] [--ww-timeout 300] [--skip-ww] [--dir DIR]

Builds a MiniLM-L6-shaped float32 checkpoint (seed 0; 6 blocks of q/k/v/o 384x384, intermediate 1536x384 and
output 384x1536, word embeddings 30522x384, position embeddings 512x384, token types 2x384; heavy-tailed
weights as in bench_core.py), then:
  1. ww-spectral, ONE process, one BLAS thread, one layer at a time (threads=1, workers=1): each option's
     `analyze_model` on the whole checkpoint, once as a warm-up (its CPU time is the "first call" column:
     numba's kernels loaded for each array layout, the allocator's memory touched the first time), then
     --reps rounds with the options interleaved round by round (a busy spell on a shared machine hits them
     alike); medians of wall time and of this process's CPU time
     (CPU time is what the option costs; wall time also counts other processes' load); ratio = option /
     default;
  2. per layer shape (one tensor of each distinct shape, interleaved the same way, medians of CPU time): the
     per-layer work of the default analysis (eigenvalues + power-law fit, spectrum.py / fit.py) and, timed
     alone, the extra work of each option on the same ESD (mp_fit.mp_fit; randomize.randomize_layer: the
     randomized ESD, its MP fit and its traps); ratio = 1 + extra / default per shape, and summed over the
     model's tensors (each shape weighted by its count; without analyze_model's fixed costs, so these
     ratios are the upper end);
  3. WeightWatcher 0.7.7 `analyze(**the same option)` on the loaded state dict (loading not timed), CUDA
     hidden, one BLAS thread, each option in its own subprocess (cut at --ww-timeout seconds).
Prints the load average before and after. Targets (issue 10): randomize <= 2.2x and mp_fit <= 1.1x our
default.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HIDDEN, INTERMEDIATE, BLOCKS, VOCAB = 384, 1536, 6, 30522
# (label, our keyword options, WeightWatcher's keyword options)
OPTIONS = (
    ("default", {}, {}),
    ("mp_fit", {"mp_fit": True}, {"mp_fit": True}),
    ("randomize", {"randomize": True}, {"randomize": True}),
    ("randomize+mp_fit", {"randomize": True, "mp_fit": True}, {"randomize": True, "mp_fit": True}),
    ("fix_fingers=clip_xmax", {"fix_fingers": "clip_xmax"}, {"fix_fingers": "clip_xmax"}),
    ("fix_fingers=xmin_peak", {"fix_fingers": "xmin_peak"}, {"fix_fingers": "xmin_peak", "pl_package": "powerlaw"}),
    ("fit=TPL", {"fit": "TPL"}, {"fit": "TPL", "pl_package": "powerlaw"}),
    ("fit=E_TPL", {"fit": "E_TPL"}, {"fit": "E_TPL", "pl_package": "powerlaw"}),
)


def shapes() -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {
        "embeddings.word_embeddings.weight": (VOCAB, HIDDEN),
        "embeddings.position_embeddings.weight": (512, HIDDEN),
        "embeddings.token_type_embeddings.weight": (2, HIDDEN),
        "embeddings.LayerNorm.weight": (HIDDEN,),
    }
    for b in range(BLOCKS):
        p = f"encoder.layer.{b}"
        for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            out[f"{p}.{name}.weight"] = (HIDDEN, HIDDEN)
            out[f"{p}.{name}.bias"] = (HIDDEN,)
        out[f"{p}.intermediate.dense.weight"] = (INTERMEDIATE, HIDDEN)
        out[f"{p}.output.dense.weight"] = (HIDDEN, INTERMEDIATE)
        out[f"{p}.output.LayerNorm.weight"] = (HIDDEN,)
    return out


def build_checkpoint(path: Path) -> None:
    """float32, seed 0: Gaussian weights with the smaller side scaled by sqrt(Pareto) factors (tail 2.5-4)."""
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    sd = {}
    for i, (name, shape) in enumerate(shapes().items()):
        if len(shape) == 1:
            sd[name] = np.ones(shape, dtype=np.float32)
            continue
        alpha = 2.5 + 1.5 * (i % 4) / 3
        w = 0.02 * rng.standard_normal(shape, dtype=np.float32)
        m = min(shape)
        scale = np.sqrt(rng.random(m) ** (-1.0 / (alpha - 1.0))).astype(np.float32)
        sd[name] = w * (scale[None, :] if shape[1] == m else scale[:, None])
    save_file(sd, str(path))


_OURS = r"""
import json, statistics, sys, time
import numpy as np
from safetensors.numpy import load_file
from ww_spectral.analysis import analyze_model
from ww_spectral.fit import fit_power_law
from ww_spectral.mp_fit import mp_fit
from ww_spectral.randomize import randomize_layer
from ww_spectral.spectrum import eigenvalues
path, reps, options = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
shape_options = [[label, kw] for label, kw in options if label in ("default", "mp_fit", "randomize")]
analyze_model({"warm.weight": np.ones((16, 8), np.float32)}, threads=1, randomize=True, mp_fit=True, fit="TPL")
by_shape, count = {}, {}
for name, array in load_file(path).items():
    if array.ndim == 2:
        key = "x".join(map(str, array.shape))
        by_shape.setdefault(key, {name: array})
        count[key] = count.get(key, 0) + 1
for key, sd in list(by_shape.items()):
    W = next(iter(sd.values()))
    if min(W.shape) < 50:  # not analysed alone (e.g. 2 x 384: below the size filter)
        del by_shape[key], count[key]
def layer_work(label, name, W, ev):  # the per-layer work of analyze_model: ESD + power-law fit, or the option's
    N, M = max(W.shape), min(W.shape)
    if label == "default":
        fit_power_law(eigenvalues(W))
    elif label == "mp_fit":
        mp_fit(ev, N=N, M=M)
    elif label == "randomize":
        randomize_layer([W], ev, N=N, M=M, seed=0, tensor_name=name)
def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c
wall = {label: [] for label, _ in options}
cpu = {label: [] for label, _ in options}
first = {}  # one untimed-for-the-medians warm-up call per option: what a fresh process pays on its first model
for label, kw in options:
    first[label] = timed(lambda: analyze_model(path, threads=1, workers=1, **kw))[1]
shape_cpu = {key: {label: [] for label, _ in shape_options} for key in by_shape}
for _ in range(reps):  # interleaved rounds: a busy spell on a shared machine hits every option alike
    for label, kw in options:
        w, c = timed(lambda: analyze_model(path, threads=1, workers=1, **kw))
        wall[label].append(w)
        cpu[label].append(c)
    for key, sd in by_shape.items():
        inner = max(1, min(20, int(2e6 // next(iter(sd.values())).size)))  # small shapes: several calls a sample
        (name, W), = sd.items()
        ev = eigenvalues(W)
        for label, _ in shape_options:
            c = timed(lambda: [layer_work(label, name, W, ev) for _ in range(inner)])[1]
            shape_cpu[key][label].append(c / inner)
med = statistics.median
print(json.dumps({"wall": {k: med(v) for k, v in wall.items()}, "cpu": {k: med(v) for k, v in cpu.items()}, "first": first,
                  "shapes": {k: {label: med(v) for label, v in d.items()} for k, d in shape_cpu.items()},
                  "count": count}))
"""

_WW = r"""
import json, sys, time, warnings, logging, io, contextlib
warnings.simplefilter("ignore"); logging.disable(logging.CRITICAL)
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    import weightwatcher as ww
    from safetensors.torch import load_file
    sd = load_file(sys.argv[1])
    kw = json.loads(sys.argv[2])
    watcher = ww.WeightWatcher(model=sd)
    t0 = time.perf_counter()
    try:
        df = watcher.analyze(**kw)
        out = {"seconds": time.perf_counter() - t0, "rows": len(df)}
    except Exception as exc:
        out = {"seconds": time.perf_counter() - t0, "error": f"{type(exc).__name__}: {exc}"[:120]}
print(json.dumps(out))
"""

_ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
               "MPLBACKEND": "Agg"}


def run_ours(path: Path, reps: int) -> dict:
    opts = json.dumps([[label, kw] for label, kw, _ in OPTIONS])
    proc = subprocess.run([sys.executable, "-c", _OURS, str(path), str(reps), opts], capture_output=True, text=True,
                          env=dict(os.environ, **_ONE_THREAD), check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_ww(path: Path, kw: dict, timeout: float) -> dict:
    try:
        proc = subprocess.run([sys.executable, "-c", _WW, str(path), json.dumps(kw)], capture_output=True, text=True,
                              env=dict(os.environ, **_ONE_THREAD), timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"seconds": float("inf"), "error": f"cut at {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"seconds": float("nan"), "error": proc.stderr.strip().splitlines()[-1][:120] if proc.stderr else "?"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5, help="rounds of our options; medians of them (default: 5)")
    ap.add_argument("--ww-timeout", type=float, default=300.0, help="seconds per WW option (default: 300)")
    ap.add_argument("--skip-ww", action="store_true", help="do not run WeightWatcher")
    ap.add_argument("--dir", default=None, help="where to build the checkpoint (default: a temporary folder)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-options-") as tmp:
        path = Path(args.dir or tmp) / "minilm_l6_shaped.safetensors"
        if not path.exists():
            build_checkpoint(path)
        load_before = _load()
        t0 = time.perf_counter()
        ours = run_ours(path, args.reps)
        ww = {} if args.skip_ww else {label: run_ww(path, kw, args.ww_timeout) for label, _, kw in OPTIONS}
        wall, cpu = ours["wall"], ours["cpu"]
        print(f"MiniLM-L6-shaped float32 checkpoint ({len(shapes())} tensors); one BLAS thread each; ours: medians "
              f"of {args.reps} interleaved rounds; total {time.perf_counter() - t0:.0f} s; load average (1/5/15 min) "
              f"{load_before} before, {_load()} after, {os.cpu_count()} CPUs")
        print(f"{'option':<24}{'ours wall s':>12}{'/ default':>11}{'ours CPU s':>12}{'/ default':>11}"
              f"{'first call':>11}{'WW 0.7.7 s':>12}{'WW / ours':>11}  note")
        for label, _, _ in OPTIONS:
            w = ww.get(label, {})
            ws = w.get("seconds", float("nan"))
            note = w.get("error", "")
            target = {"randomize": " (target <= 2.2)", "mp_fit": " (target <= 1.1)"}.get(label, "")
            print(f"{label:<24}{wall[label]:>12.2f}{wall[label] / wall['default']:>10.2f}x{cpu[label]:>12.2f}"
                  f"{cpu[label] / cpu['default']:>10.2f}x{ours['first'][label]:>11.2f}{ws:>12.2f}"
                  f"{ws / wall[label]:>10.1f}x  {note}{target}")
        print("per layer shape (the per-layer work alone; CPU time, medians; 1 + option's extra work / default):")
        print(f"{'shape':<12}{'tensors':>8}{'default ms':>12}{'mp_fit/def':>12}{'randomize/def':>15}")
        totals = {"default": 0.0, "mp_fit": 0.0, "randomize": 0.0}
        for key, t in ours["shapes"].items():
            n = ours["count"][key]
            for label in totals:
                totals[label] += n * t[label]
            print(f"{key:<12}{n:>8}{1e3 * t['default']:>12.2f}{1 + t['mp_fit'] / t['default']:>11.2f}x"
                  f"{1 + t['randomize'] / t['default']:>14.2f}x")
        print(f"{'sum':<12}{sum(ours['count'].values()):>8}{1e3 * totals['default']:>12.2f}"
              f"{1 + totals['mp_fit'] / totals['default']:>11.2f}x{1 + totals['randomize'] / totals['default']:>14.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
