"""The numerical library never imports Prefect, Ray or DuckDB (ARCHITECTURE.md), and the CLI's start-up
(building the parser of every subcommand) does not pull them in either."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import ww_spectral

HEAVY = ("prefect", "ray", "duckdb")


def test_library_and_cli_startup_import_no_orchestration_or_sql_engine():
    modules = sorted(m.name for m in pkgutil.walk_packages(ww_spectral.__path__, "ww_spectral."))
    assert "ww_spectral.analysis" in modules and "ww_spectral.hub" in modules  # the walk found the package
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "from pipelines.cli import build_parser\n"
        "build_parser()\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr
