"""`ww-spectral`: the console-script dispatcher, on the top floor of the packages.

It imports every command module plainly (the library never imports the applications, not even by name).
Each command module keeps Prefect, Ray and DuckDB imports inside its handlers, so `ww-spectral --help`
stays fast. Every module exposes `register(subparsers)`, which adds parsers whose `handler(args) -> int`
runs them.
"""

from __future__ import annotations

import argparse
import sys

from catalogs import cli as catalog_cli
from ww_spectral import __version__, cli_core
from ww_spectral.errors import WWSpectralError

from . import scan_cli
from .proof import cli as proof_cli

# Order is the order of `ww-spectral --help`.
COMMAND_MODULES = (
    cli_core,  # analyze, describe
    catalog_cli,  # catalog build|compact, leaderboard, sql, show
    scan_cli,  # scan
    proof_cli,  # zoo, validate, plot, report, demo
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ww-spectral",
        description="Data-free model quality from weight spectra (WeightWatcher-compatible), at hub scale.",
    )
    parser.add_argument("--version", action="version", version=f"ww-spectral {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
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
