"""Synthetic store data for the catalog/store tests: layer rows with every LAYER_COLUMNS column, model
and failure writes, a writer process killed at a chosen point, and weights of one shape that look
randomly initialised, barely trained or trained, analysed by the library and written into a real store."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
from support.planted_models import heavy_tailed, orthonormal, pareto_eigenvalues

from catalogs.schema import Provenance
from pipelines.cli import main
from ww_spectral.analysis import analyze_model
from ww_spectral.columns import LAYER_COLUMNS

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def layer_rows(alphas, *, lambda_max=10.0, norm=None, num_fingers=0, N=64, M=32, statuses=None,
               rand_distance=None) -> list[dict]:  # fmt: skip
    """One row per alpha (None = skipped tensor). Every LAYER_COLUMNS column is present and typed.
    Default norm = M (mean eigenvalue 1): lambda_max 10 is then 3.4 x the Marchenko-Pastur edge of a
    random matrix of that norm, a spectrum that does not look random (catalogs/sql/05_layer_flags.sql)."""
    rows = []
    for i, a in enumerate(alphas):
        status = statuses[i] if statuses else ("skipped" if a is None else "success")
        ok = status == "success"
        nrm = norm if norm is not None else float(M)
        row = {}
        for c in LAYER_COLUMNS:
            row[c.name] = {"str": "", "int": 0, "float": math.nan, "bool": False}[c.kind]
        row.update(
            layer_id=i,
            tensor_name=f"model.layers.{i}.mlp.weight",
            longname=f"model.layers.{i}.mlp",
            layer_type="dense",
            shape=f"{N}x{M}",
            dtype="F32",
            N=N,
            M=M,
            Q=N / M,
            rf=1,
            num_evals=M,
            alpha=float(a) if ok else math.nan,
            alpha_weighted=float(a) * math.log10(lambda_max) if ok else math.nan,
            D=0.05 if ok else math.nan,
            num_pl_spikes=8 if ok else 0,
            num_fingers=num_fingers,
            status=status,
            fit_status="ok" if ok else "size_filter",
            norm=nrm,
            log_norm=math.log10(nrm),
            spectral_norm=lambda_max,
            log_spectral_norm=math.log10(lambda_max),
            lambda_max=lambda_max,
            stable_rank=nrm / lambda_max,
            hill_alpha=float(a) if ok else math.nan,
        )
        if rand_distance is not None:
            row["rand_distance"] = rand_distance
        rows.append(row)
    return rows


def summary(alphas, **facts) -> dict:
    ok = [a for a in alphas if a is not None]
    s = sorted(ok)
    med = (s[(len(s) - 1) // 2] + s[len(s) // 2]) / 2
    return {
        "alpha": sum(ok) / len(ok),
        "alpha_median": med,
        "alpha_weighted": sum(ok) / len(ok),  # lambda_max = 10 -> log10 = 1
        "log_norm": facts.pop("log_norm", 2.0),
        "log_spectral_norm": 1.0,
        "share_alpha_2_6": sum(2 <= a <= 6 for a in ok) / len(ok),
        **facts,
    }


def prov(repo_id, revision="r1", options_hash="opt0", *, minutes=0) -> Provenance:
    return Provenance(
        repo_id=repo_id,
        revision=revision,
        options_hash=options_hash,
        analysed_at=T0 + dt.timedelta(minutes=minutes),
    )


def write(store, repo_id, alphas, *, revision="r1", options_hash="opt0", minutes=0, **facts) -> bool:
    return store.write_model(
        model=summary(alphas, **facts),
        layers=layer_rows(alphas),
        provenance=prov(repo_id, revision, options_hash, minutes=minutes),
    )


def fail(store, repo_id, *, revision="r", stage="read", error_type="CheckpointError", message="x",
         attempt=1) -> str:  # fmt: skip
    """One failed attempt written through ResultStore.write_failure; returns its relative path."""
    return store.write_failure(repo_id=repo_id, revision=revision, stage=stage, error_type=error_type,
                               message=message, attempt=attempt)  # fmt: skip


def killed_after(code: str, *, lines: int = 1, check=None) -> list[str]:
    """Run `code` in a fresh Python (repo root as cwd, tests/ importable), read `lines` lines of its
    stdout, call check() (the child still alive and blocked), then SIGKILL it; returns the lines read."""
    tests = Path(__file__).parents[1]
    preamble = f"import sys; sys.path.insert(0, {str(tests)!r})\n"
    proc = subprocess.Popen([sys.executable, "-c", preamble + code], stdout=subprocess.PIPE, text=True,
                            cwd=tests.parent)  # fmt: skip
    try:
        got = [proc.stdout.readline() for _ in range(lines)]
        if check is not None:
            check()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, got)
    return got


def run_cli(argv: list[str]) -> int:
    """Run a `ww-spectral` command in-process through the real dispatcher (errors: one line, exit 2)."""
    return main(argv)


# ---------------------------------------------------------------------------- weights of one shape
SHAPES = ((512, 256), (512, 512), (256, 512), (384, 256))  # (out, in) of each layer


def random_init(seed: int, *, std: float = 0.02) -> dict[str, np.ndarray]:
    """A freshly initialised model: i.i.d. Gaussian entries (std 0.02, Hugging Face's default init)."""
    rng = np.random.default_rng(seed)
    return {f"layers.{i}.weight": (std * rng.standard_normal(s)).astype(np.float32) for i, s in enumerate(SHAPES)}


def barely_trained(seed: int, *, std: float = 0.02, strength: float = 2.0, rank: int = 3) -> dict[str, np.ndarray]:
    """Mostly random: the random init plus a weak low-rank update with a heavy tail (`rank` directions
    whose singular values reach `strength` x the random bulk edge), as after a few steps of training."""
    rng = np.random.default_rng(seed)
    out = {}
    for i, (r, c) in enumerate(SHAPES):
        w = std * rng.standard_normal((r, c))
        edge = std * (math.sqrt(r) + math.sqrt(c))  # largest singular value of the random part
        s = edge * strength * np.sqrt(pareto_eigenvalues(rng, rank, 3.0) / 2)
        w += (orthonormal(rng, r, rank) * s) @ orthonormal(rng, c, rank).T
        out[f"layers.{i}.weight"] = w.astype(np.float32)
    return out


def trained(seed: int, *, alpha: float = 3.0) -> dict[str, np.ndarray]:
    """A trained-looking model: every layer heavy-tailed with a planted power-law exponent near `alpha`."""
    rng = np.random.default_rng(seed)
    return {f"layers.{i}.weight": heavy_tailed(rng, r, c, alpha + 0.25 * i) for i, (r, c) in enumerate(SHAPES)}


def write_analysed(store, repo_id: str, weights: dict[str, np.ndarray], *, minutes: int = 0, **options) -> None:
    """Analyse `weights` with the library (ww_spectral.analysis.analyze_model) and store the model as a
    scan does: its model_record() and every layer row under its options' fingerprint."""
    result = analyze_model(weights, workers=1, **options)
    p = Provenance(repo_id=repo_id, revision=hashlib.sha1(repo_id.encode()).hexdigest(),
                   options_hash=result.options.fingerprint(), analysed_at=T0 + dt.timedelta(minutes=minutes))
    assert store.write_model(model=result.model_record(source_kind="mapping"), layers=result.layers, provenance=p)
