"""The README's quick start, run as written: each line of its block, in a fresh `bash` with a bare
environment, in a folder holding a `ww-data` store (built here with the library and the store, as the demo
would leave it), must exit 0 and print what it promises."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from support.catalog_data import random_init, trained, write_analysed

from catalogs.store import ResultStore

ROOT = Path(__file__).resolve().parents[1]


def quickstart_lines() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"### Quick start.*?```bash\n(.*?)```", text, re.S)
    assert block, "README.md has no '### Quick start' bash block"
    return [line.split("  #")[0].strip() for line in block.group(1).splitlines() if line.strip()]


@pytest.mark.slow
def test_readme_quick_start_runs_as_written(tmp_path):
    store = ResultStore(str(tmp_path / "ww-data"))
    for i in range(2):
        write_analysed(store, f"trained-{i}", trained(i), minutes=i)
        write_analysed(store, f"random-{i}", random_init(10 + i), minutes=2 + i)
    lines = quickstart_lines()
    assert lines[0] == "source .venv/bin/activate"
    outputs = []
    for line in lines[1:]:
        script = f"source {ROOT}/.venv/bin/activate && {line}"
        done = subprocess.run(["bash", "--noprofile", "--norc", "-c", script], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
        assert done.returncode == 0, (line, done.stderr[-2000:])
        outputs.append(done.stdout)
    leaderboard, sql, report = outputs
    assert "tier" in leaderboard and leaderboard.index("trained-") < leaderboard.index("random-")
    assert "alpha_weighted" in sql and len([ln for ln in sql.splitlines() if "trained-" in ln or "random-" in ln]) == 3
    assert (tmp_path / "ww-report" / "index.html").is_file(), report
