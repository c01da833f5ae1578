"""Run WeightWatcher 0.7.7 with any options and API calls in ONE subprocess (tests of issue 10's options).

Like tests/support/ww_oracle.py (CUDA hidden, one BLAS thread, WW's prints and logs kept in the child),
but a job is a model plus a list of WeightWatcher method calls:

    {"model": {"safetensors": path} | {"module": path of a torch.save'd nn.Module},
     "base_model": (same form, optional), "np_seed": int (np.random.seed before the calls; WW's randomize
     draws from numpy's global generator), "calls": [[method, kwargs], ...]}

kwargs values {"safetensors": path} / {"module": path} are loaded as models (for distances(model_1, ...)).
Each call's result comes back as JSON: DataFrames as {"columns", "index", "records"}, numpy arrays as
lists, tuples as lists, dicts of numbers as dicts; an exception as {"error": "Type: message"}.
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
    import numpy as np
    import pandas as pd
    import torch
    import weightwatcher as ww
    from safetensors.torch import load_file

    def load(spec):
        if isinstance(spec, dict) and "safetensors" in spec:
            return load_file(spec["safetensors"])
        if isinstance(spec, dict) and "module" in spec:
            return torch.load(spec["module"], weights_only=False)
        return spec

    def enc(value):
        if isinstance(value, pd.DataFrame):
            return {"columns": [str(c) for c in value.columns], "index": [str(i) for i in value.index],
                    "records": json.loads(value.to_json(orient="values", double_precision=15, default_handler=str))}
        if isinstance(value, np.ndarray):
            return [float(v) for v in value.ravel()]
        if isinstance(value, (tuple, list)):
            return [enc(v) for v in value]
        if isinstance(value, dict):
            return {str(k): enc(v) for k, v in value.items()}
        if isinstance(value, (np.floating, np.integer)):
            return value.item()
        return value

    for job in jobs:
        results = []
        model = load(job["model"])
        base = load(job["base_model"]) if job.get("base_model") else None
        watcher = ww.WeightWatcher(model=model, base_model=base)
        for method, kwargs in job["calls"]:
            if job.get("np_seed") is not None:
                np.random.seed(job["np_seed"])
            kwargs = {k: load(v) for k, v in kwargs.items()}
            try:
                results.append(enc(getattr(watcher, method)(**kwargs)))
            except Exception as exc:  # the test decides whether WW failing is expected
                results.append({"error": f"{type(exc).__name__}: {exc}"})
        json.dump(results, open(job["out"], "w"))
"""


def frame(result: dict) -> pd.DataFrame:
    """A DataFrame result of run_calls back as a DataFrame (index as strings)."""
    return pd.DataFrame(result["records"], columns=result["columns"], index=result["index"])


def run_calls(jobs: list[dict], *, timeout: float = 600) -> list[list]:
    """Run every job (see the module docstring) in one WeightWatcher subprocess; a list of call results per
    job. Raises RuntimeError with WW's stderr when the child itself fails."""
    with tempfile.TemporaryDirectory(prefix="ww-oracle-options-") as tmp:
        spec = []
        for i, job in enumerate(jobs):
            spec.append({**job, "out": str(Path(tmp) / f"{i}.json")})
        jobfile = Path(tmp) / "jobs.json"
        jobfile.write_text(json.dumps(spec, default=str))
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
                   MKL_NUM_THREADS="1", MPLBACKEND="Agg")
        proc = subprocess.run([sys.executable, "-c", _CHILD, str(jobfile)], capture_output=True, text=True,
                              timeout=timeout, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"weightwatcher subprocess failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        return [json.loads(Path(s["out"]).read_text()) for s in spec]
