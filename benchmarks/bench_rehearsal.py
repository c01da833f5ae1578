"""Hub-scale rehearsal: a hub-compatible server on 127.0.0.1 serving thousands of repos, a full nightly
`scan --hub` through the real Prefect flow and Ray, then a rescan; what every stage costs.

    nice -n 10 .venv/bin/python -u benchmarks/bench_rehearsal.py [--repos 10000] [--sizes 2000,10000]
                                                                 [--large 3] [--workers 2] [--out FILE.md]

The server (tests/support/hub_server.py, its own process) serves `--repos` small repos (2-6 float32
matrices of 32-128 per side, config.json, tokenizer and README files, listing pages of 1000 with the fields
the scan expands; each repo with weights of its own, see own_copy) and `--large` large ones (6 bf16 matrices of 2048 x 2048, 25M parameters, two shards:
analysed by a model task of their own, layers spread over Ray). A share of the small ones is hostile:
1 % gated (401 without a token), 1 % broken (a truncated safetensors header), 0.5 % without weights,
0.5 % .bin-only (no safetensors metadata, so not batched), 0.3 % slow (each weight request waits 0.5 s),
0.5 % rate-limited once (429 on model info; the hub client retries).

Each size in --sizes (the listing `limit`; default: --repos alone) runs, in a fresh process each (the flow
process's peak memory is measured from its start):
  scan     flows.nightly_scan over the listing (Prefect's embedded API, a private local Ray, --workers)
  rescan   the same again: everything stored is skipped from the listing alone, and so is every revision whose
           last attempt failed for good (pipelines/faults.py skips_rescan); gated and transient ones are retried
then the catalog's default leaderboard over the store (p50 of 5, warm connection).
Printed per size: models/min, orchestration overhead per model, flow-process peak RSS (and Prefect's
server and Ray's processes beside it), bytes downloaded, per-stage costs, the CPU of every process, and
where the flow process spent its CPU during the fan-out (a sampling profiler over all its threads, which
cProfile cannot see; --tracemalloc adds the top allocation sites).

Ray workers run at --worker-niceness (default 0, the flow's priority; Ray's own default is 15, which on a
machine shared with other jobs leaves the workers only the CPU nobody else wants: benchmarks/bench_scan.py).

Orchestration overhead per model = (fan-out wall - per-model work / slots) / models analysed, where the
per-model work is what the workers (and for large models the flow process) spent planning, downloading,
analysing, assembling and writing each model: the wall time the scan adds beyond that work spread evenly
over the slots (Prefect tasks, Ray dispatch, idle slots, contention of the flow process with the workers).
"Beyond the analysis" = the same with only the spectral analysis counted as work (the issue's definition).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))  # support.hub_server, support.checkpoints

SLOW_DELAY_S = 0.5


# ------------------------------------------------------------------------------------------------ the repos


def _tensors(seed: int, n_layers: int, width: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    out = {}
    for j in range(n_layers):
        rows = width * (1 + j % 2)
        # Heavy-tailed entries (Student t, 3 degrees of freedom): spectra with a power-law tail to fit.
        out[f"model.layers.{j}.mlp.up_proj.weight"] = (rng.standard_t(3, size=(rows, width)) / width).astype(np.float32)
    out["model.norm.weight"] = np.ones(width, np.float32)
    return out


def _extras(folder: Path) -> None:
    (folder / "README.md").write_text("---\nlicense: apache-2.0\n---\n# a rehearsal model\n")
    (folder / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"vocab": {"a": 0, "b": 1}}}))
    (folder / "generation_config.json").write_text(json.dumps({"max_length": 32}))


def build_sources(root: Path, *, variants: int = 48, large: int = 3) -> dict[str, list[Path]]:
    """Folders the server serves (each shared by many repos: files are served from disk, not copied)."""
    from support.checkpoints import write_hf_model_folder, write_torch_bin

    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, list[Path]] = {"small": [], "large": [], "broken": [], "noweights": [], "bin": []}
    for v in range(variants):
        folder = root / f"small{v:03d}"
        if not (folder / "config.json").exists():
            write_hf_model_folder(folder, _tensors(v, 2 + v % 5, (32, 48, 64, 96, 128)[v % 5]))
            _extras(folder)
        out["small"].append(folder)
    for k in range(large):
        folder = root / f"large{k}"
        if not (folder / "config.json").exists():
            import numpy as np

            rng = np.random.default_rng(1000 + k)
            tensors = {f"model.layers.{j}.self_attn.o_proj.weight": (rng.standard_t(3, size=(2048, 2048)) / 2048)
                       .astype(np.float32) for j in range(6)}
            write_hf_model_folder(folder, tensors, n_shards=2, dtype="BF16")
            _extras(folder)
        out["large"].append(folder)
    broken = root / "broken"
    if not broken.exists():
        broken.mkdir()
        (broken / "model.safetensors").write_bytes(b"\x40\x00\x00\x00\x00\x00\x00\x00{\"w\": ")
        (broken / "config.json").write_text(json.dumps({"model_type": "llama"}))
    out["broken"].append(broken)
    empty = root / "noweights"
    if not empty.exists():
        empty.mkdir()
        _extras(empty)
    out["noweights"].append(empty)
    binf = root / "binonly"
    if not binf.exists():
        binf.mkdir()
        write_torch_bin(binf / "pytorch_model.bin", _tensors(7, 3, 48))
        (binf / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))
    out["bin"].append(binf)
    return out


def own_copy(variant: Path, dest: Path, i: int) -> Path:
    """`variant`'s folder as repo i's own: model.safetensors with model.norm.weight[0] set to 1 + i * 2^-20
    (a 1-D tensor, not analysed: the same analysis work, other bytes), the other files hard links.

    Byte-identical repos would be linked to the first one stored instead of analysed (pipelines/duplicates.py
    compares the weights' sha256 from the hub's file metadata), so every repo gets weights of its own."""
    import struct

    if (dest / "model.safetensors").exists():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    data = bytearray((variant / "model.safetensors").read_bytes())
    (header_len,) = struct.unpack_from("<Q", data, 0)
    start = 8 + header_len + json.loads(data[8:8 + header_len])["model.norm.weight"]["data_offsets"][0]
    struct.pack_into("<f", data, start, 1.0 + i * 2.0**-20)
    tmp = dest / "model.safetensors.tmp"
    tmp.write_bytes(bytes(data))
    for f in variant.iterdir():
        if f.name != "model.safetensors" and not (dest / f.name).exists():
            os.link(f, dest / f.name)
    tmp.rename(dest / "model.safetensors")
    return dest


def repo_kinds(n: int) -> list[str]:
    """The kind of each of n small repos, spread evenly (deterministic)."""
    shares = [("gated", 100), ("broken", 100), ("noweights", 200), ("bin", 200), ("slow", 333), ("flaky", 200)]
    kinds = ["small"] * n
    for offset, (kind, every) in enumerate(shares):
        for i in range(offset * 7 + 3, n, every):
            if kinds[i] == "small":
                kinds[i] = kind
    return kinds


def own_folders(sources: dict[str, list[Path]], root: Path, n: int) -> list[Path | None]:
    """Per small repo of a kind with weights (small, gated, slow, flaky): its own copy of a variant
    (own_copy); None for the kinds that share one folder (broken, noweights, bin)."""
    out: list[Path | None] = []
    for i, kind in enumerate(repo_kinds(n)):
        if kind in ("small", "gated", "slow", "flaky"):
            small = sources["small"]
            out.append(own_copy(small[i % len(small)], root / f"r{i // 1000:02d}" / f"r{i:05d}", i))
        else:
            out.append(None)
    return out


def serve(sources: dict[str, list[Path]], n: int, conn, own: list[Path | None]) -> None:
    """The server process: N small repos + the large ones; sends its endpoint, serves until terminated."""
    from support.hub_server import HubServer

    server = HubServer(page_size=1000, log_requests=False).start()
    kinds = repo_kinds(n)
    for i, kind in enumerate(kinds):
        repo = f"org{i % 50:02d}/model-{i:05d}"
        folder = own[i] or sources[kind][0]
        sha = server.add_repo(repo, folder, downloads=10**6 - i, likes=i % 97,
                              gated="manual" if kind == "gated" else False)
        if kind == "slow":
            server.inject(f"/{repo}/resolve/{sha}/model.safetensors", status=None, delay=SLOW_DELAY_S, times=10**9)
        elif kind == "flaky":
            server.inject(f"/api/models/{repo}", status=429, times=1)
    for k, folder in enumerate(sources["large"]):
        server.add_repo(f"big/large-{k}", folder, downloads=10**7 - k)
    conn.send(server.endpoint)
    threading.Event().wait()  # until terminated


def _cpu(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def server_stats(endpoint: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(endpoint + "/_stats", timeout=30) as r:
        return json.loads(r.read())


# ------------------------------------------------------------------------------------------------ measuring


class FlowSampler:
    """Every `period` s: this process's RSS, its descendants' RSS and CPU by role, and - during the fan-out
    (`profiling` set) - which code each thread of this process was in when it used CPU (thread CPU ticks
    from /proc/self/task/<tid>/stat, attributed to the thread's current stack)."""

    ROLES = (("prefect", "prefect"), ("raylet", "ray-core"), ("gcs_server", "ray-core"), ("ray::", "ray-worker"),
             ("default_worker", "ray-worker"), ("ray", "ray-core"))

    def __init__(self, period: float = 0.02) -> None:
        import psutil

        self.psutil = psutil
        self.me = psutil.Process()
        self.period = period
        self.peak_rss = 0
        self.peak_by_role: Counter = Counter()
        self.cpu_by_pid: dict[int, tuple[str, float]] = {}
        self.where: Counter = Counter()
        self.groups: Counter = Counter()
        self.profiling = threading.Event()
        self._stop = threading.Event()
        self._ticks: dict[int, int] = {}
        self._base: dict[int, float] = {}
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self._last_tree = 0.0

    def start(self) -> FlowSampler:
        # CPU already spent by processes that exist now (a Prefect server kept from an earlier scan) is
        # not this run's: counted from here.
        for p in self.me.children(recursive=True):
            try:
                t = p.cpu_times()
            except Exception:  # noqa: BLE001 - gone
                continue
            self._base[p.pid] = t.user + t.system
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _role(self, p) -> str:
        try:
            cmd = " ".join(p.cmdline())[:300]
        except Exception:  # noqa: BLE001 - gone
            return "other"
        for needle, role in self.ROLES:
            if needle in cmd:
                return role
        return "other"

    def _tree(self) -> None:
        by_role: Counter = Counter()
        for p in self.me.children(recursive=True):
            try:
                with p.oneshot():
                    rss = p.memory_info().rss
                    t = p.cpu_times()
                role = self._role(p)
            except Exception:  # noqa: BLE001 - a process that ended meanwhile
                continue
            by_role[role] += rss
            self.cpu_by_pid[p.pid] = (role, t.user + t.system - self._base.get(p.pid, 0.0))
        for role, rss in by_role.items():
            self.peak_by_role[role] = max(self.peak_by_role[role], rss)

    def _run(self) -> None:
        tid_of = {}
        while not self._stop.wait(self.period):
            self.peak_rss = max(self.peak_rss, self.me.memory_info().rss)
            now = time.monotonic()
            if now - self._last_tree > 0.5:
                self._last_tree = now
                self._tree()
            if not self.profiling.is_set():
                continue
            frames = sys._current_frames()
            for t in threading.enumerate():
                tid_of[t.ident] = t.native_id
            for ident, frame in frames.items():
                tid = tid_of.get(ident)
                if tid is None or ident == threading.get_ident():
                    continue
                try:
                    with open(f"/proc/self/task/{tid}/stat") as fh:
                        fields = fh.read().rsplit(")", 1)[1].split()
                    ticks = int(fields[11]) + int(fields[12])
                except (OSError, IndexError, ValueError):
                    continue
                used = ticks - self._ticks.get(tid, ticks)
                self._ticks[tid] = ticks
                if used <= 0:
                    continue
                self.where[_site(frame)] += used
                self.groups[_group(frame)] += used


def _group(frame) -> str:
    """The package a thread was in: its innermost frame's, or the first of ours above a third-party one."""
    f = frame
    inner = None
    while f is not None:
        name = f.f_code.co_filename
        for pkg in ("pipelines", "catalogs", "ww_spectral"):
            if f"/{pkg}/" in name and "site-packages" not in name:
                if inner is None:
                    return pkg
                return f"{inner} (from {pkg})"
        if inner is None:
            for pkg in ("prefect", "ray", "pyarrow", "pandas", "huggingface_hub", "httpx", "pydantic", "anyio",
                        "websockets", "sqlalchemy", "threading", "concurrent", "asyncio", "queue", "json", "uuid"):
                if f"/{pkg}/" in name or name.endswith(f"/{pkg}.py"):
                    inner = pkg
                    break
        f = f.f_back
    return inner or "other"


def _site(frame) -> str:
    code = frame.f_code
    return f"{Path(code.co_filename).name}:{code.co_name}"


def _process_cpu(sampler: FlowSampler) -> dict:
    out: Counter = Counter()
    for role, seconds in sampler.cpu_by_pid.values():
        out[role] += seconds
    return {k: round(v, 1) for k, v in out.items()}


# ------------------------------------------------------------------------------------------------ one run


def child(args) -> int:
    """One scan (or rescan) in this fresh process; writes its measurements as JSON to args.result."""
    from pipelines.ray_runtime import quiet_environment

    quiet_environment()
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")
    os.environ["HF_HUB_DISABLE_XET"] = "1"
    os.environ["HF_HUB_DISABLE_IMPLICIT_TOKEN"] = "1"
    os.environ.pop("HF_TOKEN", None)
    import logging

    sampler = FlowSampler().start()
    t0 = time.perf_counter()
    c0 = time.process_time()
    from pipelines import flows  # Prefect and our modules: counted in the start-up

    logging.getLogger("prefect.task_runs").setLevel(logging.CRITICAL)
    logging.getLogger("prefect.flow_runs").setLevel(logging.CRITICAL)
    tracing = args.tracemalloc
    if tracing:
        import tracemalloc

        tracemalloc.start(8)
    import pipelines.scan as scan_mod

    real_fan_out = scan_mod._fan_out

    def profiled_fan_out(state, todo):
        sampler.profiling.set()
        try:
            return real_fan_out(state, todo)
        finally:
            sampler.profiling.clear()

    scan_mod._fan_out = profiled_fan_out  # the benchmark's probe around the fan-out only
    summary = flows.nightly_scan(data_root=args.data, limit=args.limit, sort="downloads", workers=args.workers,
                                 endpoint=args.endpoint)
    wall = time.perf_counter() - t0
    flow_cpu = time.process_time() - c0
    top_alloc = []
    if tracing:
        snap = tracemalloc.take_snapshot()
        top_alloc = [f"{s.traceback[0].filename.split('site-packages/')[-1]}:{s.traceback[0].lineno} "
                     f"{s.size / 1e6:.1f} MB" for s in snap.statistics("traceback")[:12]]
    sampler.stop()
    import resource

    result = {
        "wall": wall, "flow_cpu": flow_cpu, "summary": {k: v for k, v in summary.items() if k != "models"},
        "flow_peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "peak_by_role": dict(sampler.peak_by_role), "cpu_by_role": _process_cpu(sampler),
        "flow_cpu_where": sampler.where.most_common(25), "flow_cpu_groups": sampler.groups.most_common(20),
        "tick_s": 1.0 / os.sysconf("SC_CLK_TCK"), "top_alloc": top_alloc,
        "per_model": [m for m in summary["models"]][:20],
    }
    Path(args.result).write_text(json.dumps(result, default=str))
    return 0


def leaderboard_p50(data: str, reps: int = 5) -> dict:
    import statistics

    from catalogs import catalog

    t0 = time.perf_counter()
    catalog.build_catalog(data)
    build = time.perf_counter() - t0
    con = catalog.connect(data)
    try:
        times, rows = [], []
        for _ in range(reps):
            t = time.perf_counter()
            _, rows = catalog.leaderboard(con)
            times.append(time.perf_counter() - t)
    finally:
        con.close()
    return {"build_s": build, "p50_s": statistics.median(times), "rows": len(rows)}


def run_child(kind: str, endpoint: str, data: Path, limit: int, workers: int, work: Path, tracemalloc: bool) -> dict:
    result = work / f"{kind}-{limit}.json"
    cmd = [sys.executable, "-u", __file__, "--child", "--endpoint", endpoint, "--data", str(data), "--limit",
           str(limit), "--workers", str(workers), "--result", str(result)] + (["--tracemalloc"] if tracemalloc else [])
    log = work / f"{kind}-{limit}.log"
    with open(log, "wb") as fh:
        done = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"{kind} of {limit} failed (exit {done.returncode}); log: {log}\n"
                         + log.read_text(errors="replace")[-4000:])
    return json.loads(result.read_text())


# ------------------------------------------------------------------------------------------------ report


def figures(scan: dict, rescan: dict, server: tuple[dict, dict], lb: dict | None) -> dict:
    s = scan["summary"]
    st = s["stages"]
    n_done = s["done"]
    n_work = max(1, s["requested"] - s["skipped"] - s.get("skipped_failed", 0))
    slots = max(1, s["slots"])
    # Work per model where it ran: every stage's seconds, except that the "analyze" stage of a model task is
    # the flow's wait for its chunks (running in parallel on the slots): the chunks' own seconds count.
    # "prefetch" is download time spent ahead in background threads, overlapped with other models' work.
    stage_work = dict(st["stage_seconds"], analyze=st["analysis_seconds"])
    work = sum(v for k, v in stage_work.items() if k != "prefetch")
    fan = s["fanout_seconds"]
    return {
        "requested": s["requested"], "done": s["done"], "failed": s["failed"], "skipped": s["skipped"],
        "retried": st["retried_attempts"], "batches": st["batches"], "batched": st["batched_models"],
        "wall": scan["wall"], "scan_s": s["seconds"], "fanout_s": fan, "slots": slots,
        "models_per_min_fanout": 60.0 * n_done / fan if fan else 0.0,
        "models_per_min_e2e": 60.0 * n_done / scan["wall"],
        "overhead_ms": 1000.0 * (fan - work / slots) / n_work,
        "overhead_beyond_analysis_ms": 1000.0 * (fan - st["analysis_seconds"] / slots) / n_work,
        "stage_ms": {k: 1000.0 * v / n_work for k, v in stage_work.items()},
        "analysis_ms": 1000.0 * st["analysis_seconds"] / n_work,
        "bytes": st["bytes_downloaded"], "server_bytes": server[1]["bytes_sent"] - server[0]["bytes_sent"],
        "server_requests": server[1]["requests"] - server[0]["requests"],
        "server_cpu_s": server[1]["cpu"] - server[0]["cpu"],
        "flow_peak_mb": scan["flow_peak_rss"] / 2**20, "rescan_flow_peak_mb": rescan["flow_peak_rss"] / 2**20,
        "peak_by_role_mb": {k: v / 2**20 for k, v in scan["peak_by_role"].items()},
        "flow_cpu_s": scan["flow_cpu"], "cpu_by_role": scan["cpu_by_role"],
        "timings": s["timings"], "rescan_timings": rescan["summary"]["timings"],
        "rescan_wall": rescan["wall"], "rescan_scan_s": rescan["summary"]["seconds"],
        "rescan_skipped": rescan["summary"]["skipped"], "rescan_done": rescan["summary"]["done"],
        "rescan_failed": rescan["summary"]["failed"],
        "rescan_skipped_failed": rescan["summary"].get("skipped_failed", 0),
        "leaderboard": lb, "flow_cpu_groups": scan["flow_cpu_groups"], "flow_cpu_where": scan["flow_cpu_where"],
        "tick_s": scan["tick_s"], "top_alloc": scan["top_alloc"],
        "failures_by_type": dict(Counter(f["error_type"] for f in s["failures"])),
    }


def report(runs: dict[int, dict], args) -> str:
    sizes = sorted(runs)
    head = "| | " + " | ".join(f"{n:,} repos" for n in sizes) + " | target |"
    lines = [f"### bench_rehearsal: {', '.join(f'{n:,}' for n in sizes)} hub repos (+{args.large} large), "
             f"{args.workers} Ray worker(s)", "",
             f"- machine: {platform.machine()}, {os.cpu_count()} cores, load average at end "
             f"{' / '.join(f'{x:.1f}' for x in os.getloadavg())}; the hub server runs on the same cores; Ray workers "
             f"at nice {args.worker_niceness}", "",
             head, "|---" * (len(sizes) + 2) + "|"]

    def row(label, fmt, target=""):
        lines.append(f"| {label} | " + " | ".join(fmt(runs[n]) for n in sizes) + f" | {target} |")

    row("analysed / failed / retried attempts", lambda r: f"{r['done']:,} / {r['failed']} / {r['retried']}")
    row("batches (models in them)", lambda r: f"{r['batches']} ({r['batched']:,})")
    row("scan wall, end to end (s)", lambda r: f"{r['wall']:.1f}")
    row("fan-out (s)", lambda r: f"{r['fanout_s']:.1f}")
    row("models/min (fan-out / end to end)", lambda r: f"{r['models_per_min_fanout']:.0f} / {r['models_per_min_e2e']:.0f}")
    row("**orchestration overhead per model** (ms)", lambda r: f"**{r['overhead_ms']:.1f}**", "<= 10")
    row("overhead beyond the spectral analysis alone (ms)", lambda r: f"{r['overhead_beyond_analysis_ms']:.1f}")
    for stage, what in (("prefetch", "download ahead, overlapped"), ("download", "download, not overlapped"),
                        ("plan", "plan"), ("analyze", "spectral analysis"), ("assemble", "assemble"),
                        ("write", "write (Parquet + marker)")):
        row(f"per model: {what} (ms)", lambda r, s=stage: f"{r['stage_ms'].get(s, 0.0):.1f}")
    row("bytes downloaded (weights+config / all HTTP bodies)",
        lambda r: f"{r['bytes'] / 1e6:.0f} MB / {r['server_bytes'] / 1e6:.0f} MB")
    row("HTTP requests to the hub", lambda r: f"{r['server_requests']:,}")
    row("**flow-process peak RSS** (MB)", lambda r: f"**{r['flow_peak_mb']:.0f}**", "<= 1024, flat")
    row("Prefect API server / Ray workers peak RSS (MB)",
        lambda r: f"{r['peak_by_role_mb'].get('prefect', 0):.0f} / {r['peak_by_role_mb'].get('ray-worker', 0):.0f}")
    row("CPU s: flow / Prefect server / Ray workers / Ray core / hub server",
        lambda r: f"{r['flow_cpu_s']:.0f} / {r['cpu_by_role'].get('prefect', 0):.0f} / "
                  f"{r['cpu_by_role'].get('ray-worker', 0):.0f} / {r['cpu_by_role'].get('ray-core', 0):.0f} / "
                  f"{r['server_cpu_s']:.0f}")
    row("fixed: Ray start / listing / catalog (s)",
        lambda r: f"{r['timings'].get('ray_start', 0):.1f} / {r['timings'].get('list', 0):.1f} / "
                  f"{r['timings'].get('catalog', 0):.1f}")
    row("**rescan** wall / scan (s): skipped (stored, failed for good), retried failures",
        lambda r: f"**{r['rescan_wall']:.1f}** / {r['rescan_scan_s']:.1f}: {r['rescan_skipped']:,} + "
                  f"{r['rescan_skipped_failed']:,} skipped, {r['rescan_failed']} failed again", "<= 60")
    row("rescan: listing / select / Ray start / fan-out / catalog (s)",
        lambda r: " / ".join(f"{r['rescan_timings'].get(k, 0):.1f}" for k in ("list", "select", "ray_start", "fanout",
                                                                               "catalog")))
    row("rescan flow peak RSS (MB)", lambda r: f"{r['rescan_flow_peak_mb']:.0f}")
    row("leaderboard p50 (s) over the store",
        lambda r: f"{r['leaderboard']['p50_s']:.2f} ({r['leaderboard']['rows']:,} rows)" if r["leaderboard"] else "n/a",
        "<= 1")
    if len(sizes) >= 2:
        a, b = runs[sizes[0]], runs[sizes[-1]]
        slope = (b["flow_peak_mb"] - a["flow_peak_mb"]) / (sizes[-1] - sizes[0]) * 1000
        lines += ["", f"- flow-process peak RSS grows by **{slope:+.1f} MB per 1,000 models** between "
                      f"{sizes[0]:,} and {sizes[-1]:,} (issue 12 baseline: +250 MB per 1,000)"]
    big = runs[sizes[-1]]
    lines += ["", f"- failures by type ({sizes[-1]:,}): {big['failures_by_type']}",
              "- flow-process CPU during the fan-out, by package (CPU s, sampled): "
              + ", ".join(f"{g} {t * big['tick_s']:.1f}" for g, t in big["flow_cpu_groups"][:10]),
              "- hottest frames: " + ", ".join(f"{w} {t * big['tick_s']:.1f}" for w, t in big["flow_cpu_where"][:10])]
    if big["top_alloc"]:
        lines.append("- top allocation sites of the flow process: " + "; ".join(big["top_alloc"][:8]))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repos", type=int, default=10_000, help="small repos the server holds")
    ap.add_argument("--sizes", help="comma-separated listing limits to scan (default: --repos + --large)")
    ap.add_argument("--large", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--work", help="working folder (default: a temp folder, deleted afterwards)")
    ap.add_argument("--out", help="also append the table (markdown) to this file")
    ap.add_argument("--json", help="write every measurement as JSON here")
    ap.add_argument("--tracemalloc", action="store_true", help="record the flow's top allocation sites (slower)")
    ap.add_argument("--worker-niceness", type=int, default=0,
                    help="nice value of the Ray workers (default: 0, the flow's; Ray's own default is 15)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--endpoint", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--limit", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args)

    import multiprocessing as mp

    # Read by the local Ray each scan child starts (children inherit the environment).
    os.environ["RAY_worker_niceness"] = str(args.worker_niceness)  # noqa: SIM112 - Ray spells it so

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="ww-rehearsal-"))
    work.mkdir(parents=True, exist_ok=True)
    sizes = sorted({int(x) for x in args.sizes.split(",")}) if args.sizes else [args.repos + args.large]
    t0 = time.perf_counter()
    sources = build_sources(work / "sources", large=args.large)
    own = own_folders(sources, work / "sources" / "repos", args.repos)
    # Fork the server before this process starts any thread (nothing heavy is imported yet).
    parent, conn = mp.get_context("fork").Pipe()
    server = mp.get_context("fork").Process(target=serve, args=(sources, args.repos, conn, own), daemon=True)
    server.start()
    endpoint = parent.recv()
    print(f"hub server {endpoint}: {args.repos:,} + {args.large} repos ready in {time.perf_counter() - t0:.1f} s",
          flush=True)
    runs: dict[int, dict] = {}
    try:
        for n in sizes:
            data = work / f"data-{n}"
            shutil.rmtree(data, ignore_errors=True)
            before = dict(server_stats(endpoint), cpu=_cpu(server.pid))
            scan = run_child("scan", endpoint, data, n, args.workers, work, args.tracemalloc)
            after = dict(server_stats(endpoint), cpu=_cpu(server.pid))
            print(f"  {n:,}: scan {scan['wall']:.1f} s", flush=True)
            rescan = run_child("rescan", endpoint, data, n, args.workers, work, False)
            print(f"  {n:,}: rescan {rescan['wall']:.1f} s", flush=True)
            try:
                lb = leaderboard_p50(str(data))
            except Exception as exc:  # noqa: BLE001 - the catalog API is another package's; report, go on
                print(f"  leaderboard not measured: {type(exc).__name__}: {exc}", flush=True)
                lb = None
            runs[n] = figures(scan, rescan, (before, after), lb)
    finally:
        server.terminate()
        server.join(10)
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    text = report(runs, args)
    print(text)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write(text + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
