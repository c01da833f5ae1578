"""The numerical library never imports Prefect, Ray or DuckDB: importing every module of ww_spectral
leaves them unloaded. (The dispatcher's start-up, `ww-spectral --help` as the installed console script,
is checked by tests/test_cli_dispatch.py; the package layering by tests/test_architecture.py.)"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import ww_spectral

HEAVY = ("prefect", "ray", "duckdb")


def _loaded_after(code: str) -> list[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_library_imports_no_orchestration_or_sql_engine():
    modules = sorted(m.name for m in pkgutil.walk_packages(ww_spectral.__path__, "ww_spectral."))
    assert "ww_spectral.analysis" in modules and "ww_spectral.hub" in modules  # the walk found the package
    assert _loaded_after(f"import importlib\nfor name in {modules!r}: importlib.import_module(name)") == []


def test_the_probe_sees_an_orchestration_import():
    assert _loaded_after("import duckdb") == ["duckdb"]
