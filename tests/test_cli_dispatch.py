"""The `ww-spectral` dispatcher (pipelines/cli.py): a fast start-up, and one line + exit 2 for any failure.

Start-up: `ww-spectral --help` builds the parser of every command; run as the installed console script
under `python -X importtime`, it must load none of the heavy libraries (they load inside the handlers).
Failures: a fake command module raises what hostile input can make a third-party library raise (any
Exception, with newlines and terminal escapes in its message); the user sees one line and exit 2, the
traceback only with the global --debug flag.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import cli

HEAVY = ("prefect", "ray", "duckdb", "torch", "pandas", "matplotlib", "sklearn", "pyarrow", "scipy")


def _console_script() -> str:
    exe = Path(sys.executable).with_name("ww-spectral")
    found = str(exe) if exe.is_file() else shutil.which("ww-spectral")
    if not found:
        pytest.skip("the ww-spectral console script is not installed (pip install -e .)")
    return found


def _imported(stderr: str) -> set[str]:
    """Top-level package names of every module `python -X importtime` reports."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name and name != "imported package":
                names.add(name.split(".")[0])
    return names


@pytest.mark.parametrize("argv", [["--help"], ["report", "--help"], ["scan", "--help"], ["demo", "--help"],
                                  ["zoo", "build", "--help"], ["validate", "--help"], ["--version"]])
def test_help_imports_no_heavy_library(argv):
    r = subprocess.run([sys.executable, "-X", "importtime", _console_script(), *argv],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    loaded = _imported(r.stderr)
    assert {"pipelines", "catalogs", "ww_spectral", "argparse"} <= loaded  # the parsing worked
    assert sorted(loaded & set(HEAVY)) == []


def test_the_checker_sees_a_heavy_import():
    r = subprocess.run([sys.executable, "-X", "importtime", "-c", "import json, pandas"],
                       capture_output=True, text=True, timeout=120)
    assert "pandas" in _imported(r.stderr) and "json" in _imported(r.stderr)


# ---------------------------------------------------------------------------------------------- failures
class _Boom:
    """A command module whose `boom` command raises what it is told to."""

    def __init__(self, exc: BaseException):
        self.exc = exc

    def register(self, subparsers) -> None:
        p = subparsers.add_parser("boom")
        p.set_defaults(handler=self._run)

    def _run(self, args) -> int:
        raise self.exc


def _with(monkeypatch, exc: BaseException) -> None:
    monkeypatch.setattr(cli, "COMMAND_MODULES", (*cli.COMMAND_MODULES, _Boom(exc)))


HOSTILE = "bad header\nww-spectral: done, all fine\x1b[2K\r"


@pytest.mark.parametrize("exc", [ValueError(HOSTILE), RecursionError("maximum recursion depth exceeded"),
                                 OverflowError(HOSTILE), KeyError(HOSTILE), MemoryError(),
                                 UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
                                 OSError(22, HOSTILE)])
def test_any_exception_is_one_line_and_exit_2(monkeypatch, capsys, exc):
    _with(monkeypatch, exc)
    assert cli.main(["boom"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"ww-spectral: error: {type(exc).__name__}")
    assert "\x1b" not in err and "\r" not in err
    if HOSTILE in str(exc):
        assert "bad header\\nww-spectral: done" in err  # the forged line is shown, escaped, on our line


def test_project_errors_keep_their_message(monkeypatch, capsys):
    from ww_spectral.errors import CheckpointError

    _with(monkeypatch, CheckpointError("x.safetensors: header too big; pass a smaller file\nforged"))
    assert cli.main(["boom"]) == 2
    assert capsys.readouterr().err == ("ww-spectral: error: x.safetensors: header too big; pass a smaller "
                                       "file\\nforged\n")


def test_debug_shows_the_traceback(monkeypatch, capsys):
    _with(monkeypatch, ValueError("deep inside"))
    assert cli.main(["--debug", "boom"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "_run" in err
    assert err.rstrip("\n").splitlines()[-1] == "ww-spectral: error: ValueError: deep inside"


def test_interrupt_and_broken_pipe(monkeypatch, capsys):
    _with(monkeypatch, KeyboardInterrupt())
    assert cli.main(["boom"]) == 130
    assert capsys.readouterr().err == "ww-spectral: interrupted\n"
    monkeypatch.setattr(cli, "COMMAND_MODULES", cli.COMMAND_MODULES[:-1])
    _with(monkeypatch, BrokenPipeError(32, "Broken pipe"))
    assert cli.main(["boom"]) == 0
    assert capsys.readouterr().err == ""


def test_a_failure_in_a_real_process_is_one_line(tmp_path):
    """Through the console script: the hostile error a third-party parser raises, exit 2, one line."""
    code = (
        "import sys\n"
        "from pipelines import cli\n"
        "class Boom:\n"
        "    def register(self, sub):\n"
        "        sub.add_parser('boom').set_defaults(handler=lambda a: int('x\\n\\x1b[31mforged'))\n"
        "cli.COMMAND_MODULES = (*cli.COMMAND_MODULES, Boom())\n"
        "sys.exit(cli.main(sys.argv[1:]))\n"
    )
    r = subprocess.run([sys.executable, "-c", code, "boom"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == "ww-spectral: error: ValueError: invalid literal for int() with base 10: " \
                       "'x\\n\\x1b[31mforged'\n"
    r = subprocess.run([sys.executable, "-c", code, "--debug", "boom"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" in r.stderr


def test_verbose_is_a_global_flag_the_commands_read(monkeypatch):
    """--verbose (before the command) reaches the handler as args.verbose; without it, False."""
    seen = []

    class Probe:
        def register(self, subparsers) -> None:
            subparsers.add_parser("probe").set_defaults(handler=lambda args: seen.append(args.verbose) or 0)

    monkeypatch.setattr(cli, "COMMAND_MODULES", (*cli.COMMAND_MODULES, Probe()))
    assert cli.main(["--verbose", "probe"]) == 0 and cli.main(["probe"]) == 0
    assert seen == [True, False]
    assert "--verbose" in cli.build_parser().format_help()
