"""Run WeightWatcher 0.7.7 (the reference) in a subprocess and return its per-layer tables.

Its global logging/warnings/print side effects stay in the child. The child loads each safetensors
file into a torch state dict (bf16 stays bf16; WW upcasts with .float()) and runs WW's default
`analyze()` (plus the given keyword options) with CUDA hidden, so results are deterministic on CPU.
One subprocess serves a whole batch of files (one per model family keeps the suite fast).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

_CHILD = r"""
import json, sys, warnings, io, contextlib, logging
warnings.simplefilter("ignore")
logging.disable(logging.CRITICAL)
jobs = json.load(open(sys.argv[1]))
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    import weightwatcher as ww
    from safetensors.torch import load_file
    from weightwatcher.WW_powerlaw import WWFit
    from weightwatcher.RMT_Util import fit_clipped_powerlaw
    import numpy as np
    for job in jobs:
        if "samples" in job:  # the fitter alone: WWFit / fit_clipped_powerlaw on each sample
            out = []
            for x in job["samples"]:
                x = np.sort(np.asarray(x, dtype=np.float64))
                x = x[x > 1e-5]
                if job.get("clip"):
                    f, nf, raw = fit_clipped_powerlaw(x)
                else:
                    f, nf, raw = WWFit(x), 0, None
                out.append({"alpha": float(f.alpha), "D": float(f.D), "xmin": float(f.xmin),
                            "xmax": float(f.xmax), "sigma": float(f.sigma), "num_fingers": int(nf),
                            "raw_alpha": float(raw.alpha) if raw is not None else float(f.alpha)})
            json.dump(out, open(job["out"], "w"))
            continue
        sd = load_file(job["path"])
        watcher = ww.WeightWatcher(model=sd)
        df = watcher.analyze(**job["options"])
        df.to_json(job["out"], orient="records", double_precision=15)
"""


def run_weightwatcher(jobs: list, *, timeout: float = 300) -> list:
    """Run a batch in one WeightWatcher subprocess.

    Each job is either (safetensors path, analyze() keyword options) -> WW's details DataFrame (column
    'name' is the layer's longname), or {"samples": [array, ...], "clip": bool} -> a list of dicts
    (alpha, D, xmin, xmax, sigma, num_fingers, raw_alpha) from WW's WWFit / fit_clipped_powerlaw.
    Results in job order. Raises RuntimeError with WW's stderr on failure.
    """
    with tempfile.TemporaryDirectory(prefix="ww-oracle-") as tmp:
        spec = []
        for i, job in enumerate(jobs):
            out = str(Path(tmp) / f"{i}.json")
            if isinstance(job, dict):
                samples = [[float(v) for v in x] for x in job["samples"]]
                spec.append({"samples": samples, "clip": bool(job.get("clip")), "out": out})
            else:
                path, options = job
                spec.append({"path": str(path), "options": dict(options), "out": out})
        jobfile = Path(tmp) / "jobs.json"
        jobfile.write_text(json.dumps(spec))
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
                   MKL_NUM_THREADS="1", MPLBACKEND="Agg")
        proc = subprocess.run([sys.executable, "-c", _CHILD, str(jobfile)], capture_output=True, text=True,
                              timeout=timeout, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"weightwatcher subprocess failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        results: list = []
        for s in spec:
            if "samples" in s:
                results.append(json.loads(Path(s["out"]).read_text()))
            else:
                results.append(pd.read_json(Path(s["out"]), orient="records"))
        return results
