"""`ww-spectral scan`: the nightly hub scan, an explicit list of models, or a local folder.

    ww-spectral scan --folder DIR --data ROOT
    ww-spectral scan --hub [--author A] [--library L] [--pipeline-tag T] [--min-downloads N]
                     [--min-params N] [--max-params N] [--sort S] [--limit N] [--endpoint URL] --data ROOT
    ww-spectral scan --models ID[@REV] ... --data ROOT
    each with [--ray-address ADDR] [--workers N] [--options NAME|"FLAGS"] [--retry-failed]
    [analysis flags of analyze]

The analysis options: the flags of `ww-spectral analyze` (--randomize --mp-fit --fit ... --seed N), and/or
--options with an option set name (pipelines/settings.py OPTION_SETS) or flags in one string; a flag given
on its own wins over --options. Results are stored under the options' fingerprint (options_hash), so a
rescan with the same options skips and one with other options analyses again, beside the first. A rescan
also skips a revision whose last attempt with these options failed for good (no weights, a damaged or
unanalysable checkpoint, an unsupported dtype, a bad option: pipelines/faults.py skips_rescan), recorded by
this ww-spectral version; --retry-failed attempts those again. Gated, not-found and transient failures are
always attempted again.

Progress goes to stderr (one line per model: done / failed / skipped counts and models per minute),
then a closing summary; Prefect's and Ray's log lines only with the global --verbose. Exit 0 when the scan ran, even if some models failed (they are in `failures`).
No prefect/ray import at module top: `ww-spectral --help` stays fast.
"""

from __future__ import annotations

import argparse
import json

from ww_spectral.cli_core import add_analysis_flags, options_from_args
from ww_spectral.progress import safe_text

from .settings import OPTION_SETS, resolve_options


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not allowed; use a positive integer")
    return value


def _count(text: str) -> int:
    """Integers with an optional K/M/B suffix (parameter counts: 7B, 500M)."""
    t = text.strip().upper()
    mult = {"K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}.get(t[-1:], 1)
    try:
        return int(float(t[:-1] if mult > 1 else t) * mult)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count (e.g. 1000, 500M, 7B)") from None


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "scan",
        help="analyse many models: the hub (nightly scan), explicit ids, or a local folder (Prefect + Ray)",
        description="Analyse many models and write them to the store: --hub lists hub models with filters, "
        "--models takes explicit ids (org/name[@rev]), --folder a folder of model folders or a Hugging Face "
        "cache. Revisions already stored with the same analysis options are skipped. The embedded default "
        "needs no configuration (local Ray with all cores, Prefect without a separate server).",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--folder", metavar="DIR", help="a folder of model folders (or a Hugging Face cache)")
    which.add_argument("--hub", action="store_true", help="list models from the Hugging Face hub")
    which.add_argument("--models", nargs="+", metavar="ID[@REV]", help="explicit hub ids (or local paths)")
    p.add_argument("--data", default="ww-data", metavar="ROOT",
                   help="DATA root: local folder or s3:// / gs:// URI (default: ./ww-data)")
    hub = p.add_argument_group("hub filters (--hub)")
    hub.add_argument("--author", help="only models of this org/user")
    hub.add_argument("--library", help="library name, e.g. transformers")
    hub.add_argument("--pipeline-tag", help="e.g. text-generation")
    hub.add_argument("--min-downloads", type=int, metavar="N")
    hub.add_argument("--min-params", type=_count, metavar="N", help="e.g. 100M")
    hub.add_argument("--max-params", type=_count, metavar="N", help="e.g. 8B")
    hub.add_argument("--sort", default="downloads",
                     choices=["downloads", "likes", "last_modified", "created_at", "trending_score"],
                     help="order of the listing, descending (default: downloads)")
    hub.add_argument("--limit", type=_positive_int, default=100, help="models to consider (default: 100)")
    hub.add_argument("--endpoint", help="hub URL (default: HF_ENDPOINT or https://huggingface.co)")
    p.add_argument("--options", metavar='NAME|"FLAGS"',
                   help=f"analysis options: a named option set ({', '.join(OPTION_SETS)}) or analysis flags "
                   "in one string, e.g. \"--randomize --seed 3\" or --options=--mp-fit (one flag alone needs the = form; "
                   "default: the default analysis)")
    add_analysis_flags(p)
    ray = p.add_argument_group("execution")
    ray.add_argument("--ray-address", metavar="ADDR",
                     help="existing Ray cluster: auto, host:6379 or ray://host:10001 (default: RAY_ADDRESS, "
                     "else a local Ray started on demand). ray:// needs RAY_AUTH_MODE=token and the token "
                     "(RAY_AUTH_TOKEN or ~/.ray/auth_token)")
    ray.add_argument("--workers", type=_positive_int, metavar="N",
                     help="concurrent Ray tasks (default: all CPUs of the local machine / cluster)")
    ray.add_argument("--retry-failed", action="store_true",
                     help="also attempt revisions whose last attempt with these options failed for good (no "
                     "weights, damaged checkpoint, unsupported dtype, bad option); by default a rescan skips them "
                     "(env WW_SCAN_RETRY_FAILED=1)")
    ray.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    p.set_defaults(handler=run)


def run(args) -> int:
    import logging
    import os

    from .ray_runtime import quiet_output  # here, not at the top: it loads the analysis (pandas) and Ray

    # Prefect's and Ray's chatter only with --verbose (before Prefect is imported).
    quiet_output(verbose=bool(getattr(args, "verbose", False)))
    # Progress lines on: the flows read it with their other settings (pipelines/settings.py); it is not a
    # flow parameter, because the deployments' parameters are the flows' contract (infra/prefect/prefect.yaml).
    os.environ["WW_SCAN_PROGRESS"] = "1"
    if args.retry_failed:  # read with the other settings, like WW_SCAN_PROGRESS (not a flow parameter)
        os.environ["WW_SCAN_RETRY_FAILED"] = "1"
    from . import flows  # sets the quiet telemetry defaults before it imports prefect

    # Our progress lines report each failure once; Prefect's own task-failure tracebacks would repeat them.
    logging.getLogger("prefect.task_runs").setLevel(logging.CRITICAL)
    options = options_from_args(args, base=resolve_options(args.options))
    # A JSON-able flow parameter (deployments pass parameters as JSON): the identity the hash is made of.
    where = {"data_root": args.data, "ray_address": args.ray_address, "workers": args.workers,
             "options": options.identity()}
    if args.folder:
        summary = flows.scan_folder(folder=args.folder, **where)
    elif args.models:
        summary = flows.analyze_models(model_ids=list(args.models), endpoint=args.endpoint, **where)
    else:
        summary = flows.nightly_scan(
            author=args.author, library=args.library, pipeline_tag=args.pipeline_tag,
            min_downloads=args.min_downloads, min_params=args.min_params, max_params=args.max_params,
            sort=args.sort, limit=args.limit, endpoint=args.endpoint, **where)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(format_summary(summary))
    return 0


def format_summary(summary: dict) -> str:
    failed_before = summary.get("skipped_failed") or 0
    lines = [
        f"scan {summary['scan_id']} ({summary['source']}): {summary['requested']} model revision(s): "
        f"{summary['done']} analysed, {summary['skipped']} skipped (already stored), "
        + (f"{failed_before} skipped (failed for good before; --retry-failed tries them again), "
           if failed_before else "")
        + f"{summary['failed']} failed in {summary['seconds']:.1f} s ({summary['models_per_minute']:.1f} models/min)",
    ]
    for f in summary.get("failures", []):
        # Names and messages come from outside (folder names, hub ids, error texts): one line each.
        lines.append(f"  failed [{f['stage']}] {safe_text(f['repo_id'])}@{safe_text(str(f['revision'])[:12])}: "
                     f"{safe_text(f['error_type'])}: {safe_text(f['message'])}")
    if summary.get("catalog"):
        lines.append(f"catalog: {safe_text(summary['catalog'], limit=4000)}")
    return "\n".join(lines)
