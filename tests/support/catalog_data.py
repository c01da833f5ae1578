"""Synthetic store data for the catalog/store tests: layer rows with every LAYER_COLUMNS column, model
and failure writes, and a writer process killed at a chosen point."""

from __future__ import annotations

import datetime as dt
import math
import signal
import subprocess
import sys
from pathlib import Path

from catalogs.schema import Provenance
from pipelines.cli import main
from ww_spectral.columns import LAYER_COLUMNS

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def layer_rows(alphas, *, lambda_max=10.0, norm=None, num_fingers=0, N=64, M=32, statuses=None) -> list[dict]:
    """One row per alpha (None = skipped tensor). Every LAYER_COLUMNS column is present and typed."""
    rows = []
    for i, a in enumerate(alphas):
        status = statuses[i] if statuses else ("skipped" if a is None else "success")
        ok = status == "success"
        nrm = norm if norm is not None else 4.0 * M
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
