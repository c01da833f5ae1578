"""`ww-spectral` command line: one parser, subcommands registered by the modules that own them.

Subcommand modules are imported by name so the numerical library never imports Prefect, Ray or
DuckDB itself; each module keeps those imports inside its handlers (start-up stays fast).
Every module exposes `register(subparsers)`, which adds parsers whose `handler(args) -> int` runs them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import WWSpectralError

# (module, why it is separate): order is the order of `ww-spectral --help`.
SUBCOMMAND_MODULES = (
    "ww_spectral.cli_core",  # analyze, describe
    "catalogs.cli",  # catalog build, leaderboard, sql, show, compact
    "pipelines.cli",  # scan
    "pipelines.proof_cli",  # zoo, validate, plot, report, demo
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ww-spectral",
        description="Data-free model quality from weight spectra (WeightWatcher-compatible), at hub scale.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"ww-spectral {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that part is not installed in this build; its commands are absent
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except WWSpectralError as exc:
        # File-level faults: one line, no traceback, non-zero exit.
        print(f"ww-spectral: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ww-spectral: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `ww-spectral ... | head` must exit quietly
        return 0


if __name__ == "__main__":
    sys.exit(main())
