"""`ww-spectral`: the console-script dispatcher, on the top floor of the packages.

It imports every command module plainly (the library never imports the applications, not even by name).
Each command module keeps Prefect, Ray, DuckDB, torch, pandas and matplotlib imports inside its handlers,
so `ww-spectral --help` stays fast (measured by tests/test_cli_dispatch.py). Every module exposes
`register(subparsers)`, which adds parsers whose `handler(args) -> int` runs them.

Failures: every exception a command raises ends as ONE line on stderr and exit 2 - the project's typed
errors as `ww-spectral: error: <message>` (their messages name the fix), anything else (what hostile
input can make a third-party parser raise) as `ww-spectral: error: <Type>: <message>`; control
characters escaped, no traceback unless `--debug` is given before the command. Ctrl-C exits 130; a
closed output pipe (`ww-spectral ... | head`) exits 0.

Output: by default a command prints its results on stdout and only ww-spectral's own progress lines on
stderr; the global `--verbose` (args.verbose, read by the commands that run Prefect and Ray) lets
Prefect's and Ray's log lines and notices through as well.
"""

from __future__ import annotations

import argparse
import sys
import traceback

from catalogs import cli as catalog_cli
from ww_spectral import __version__, cli_core
from ww_spectral.errors import WWSpectralError
from ww_spectral.progress import safe_text

from . import scan_cli
from .proof import cli as proof_cli

# Order is the order of `ww-spectral --help`.
COMMAND_MODULES = (
    cli_core,  # analyze, describe
    catalog_cli,  # catalog build|compact, leaderboard, sql, show
    scan_cli,  # scan
    proof_cli,  # zoo, validate, plot, report, demo
)

MESSAGE_LIMIT = 2000  # characters of an error line, after escaping (a message may quote a whole header)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ww-spectral",
        description="Data-free model quality from weight spectra (WeightWatcher-compatible), at hub scale.",
    )
    parser.add_argument("--version", action="version", version=f"ww-spectral {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="on an error, print the full traceback before the one-line message (default: one line)")
    parser.add_argument("--verbose", action="store_true",
                        help="also show the log lines and notices of Prefect and Ray (default: only ww-spectral's "
                        "own progress lines)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def error_line(exc: BaseException) -> str:
    """The one line the user sees for `exc`: our typed errors by their message, anything else prefixed
    with its type (a bare 'list index out of range' says nothing); control characters escaped."""
    text = str(exc)
    if not isinstance(exc, WWSpectralError):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return f"ww-spectral: error: {safe_text(text, limit=MESSAGE_LIMIT)}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("ww-spectral: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `ww-spectral ... | head` must exit quietly
        return 0
    except Exception as exc:  # noqa: BLE001 - the catch-all of untrusted input: one line, exit 2
        if args.debug:
            traceback.print_exc()
        print(error_line(exc), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
