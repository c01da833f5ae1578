"""A Llama-2-7B-shaped model on CPU: time and peak memory of the whole model, extrapolated per block and the
extrapolation checked against a run on more blocks.

    nice -n 10 .venv/bin/python -u benchmarks/bench_big_model.py [--blocks 2,6] [--threads 2] [--dir DIR] [--code DIR]
    .venv/bin/python -u benchmarks/bench_big_model.py --eigensolvers

Real Llama-2-7B shapes (hidden 4096, MLP 11008, vocab 32000, 32 blocks): per block q/k/v/o 4096 x 4096,
gate/up 11008 x 4096, down 4096 x 11008 and two RMS norms; embed_tokens and lm_head 32000 x 4096. Synthetic
heavy-tailed bf16 weights (Gaussian with the smaller side scaled by sqrt(Pareto), tail exponents 2.5-4, as
benchmarks/bench_core.py builds them), written as a sharded HF folder (one shard per block, one for the
embedding and lm_head, an index), never all in memory at once.

Runs, each in a fresh process (benchmarks/bench_core.py's child runner: `analyze_model` with --threads
forked layer workers of one BLAS thread; peak PSS of the process tree sampled every 20 ms):
  fixed     embed_tokens + lm_head alone
  B blocks  the same plus B blocks, for each B in --blocks
Per block = (T(B1) - T(fixed)) / B1; predicted T(B2) = T(fixed) + B2 * per block, checked against the
measured T(B2); the whole model = T(fixed) + 32 * per block (per block from the largest B). Targets: the
whole 7B model <= 10 minutes on 2 cores; peak memory <= 3 x the largest float64 matrix + 300 MB (issue 2).

--code DIR analyses with the ww_spectral package of another checkout (the children run in DIR with DIR on
PYTHONPATH), e.g. the commit before a change for a before/after table in one session:
    mkdir -p /tmp/ww-before && git archive <commit> ww_spectral | tar -x -C /tmp/ww-before
--eigensolvers times the CPU eigensolvers of ww_spectral/spectrum.py side by side instead (one BLAS thread,
CPU seconds of one solve, best of --repeat, interleaved): ?syevd, the two-stage reduction
(ww_spectral/lapack2stage.py) and torch.linalg.eigvalsh, on Gram matrices of heavy-tailed weights (Llama-7B
q_proj-like, float32 and float64) of the sizes around the rule's threshold, and their largest difference
relative to lambda_max.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_core import _OURS  # noqa: E402 - the same analysis child as the core benchmark

HIDDEN, MLP, VOCAB, BLOCKS_7B = 4096, 11008, 32000, 32


def block_shapes(b: int) -> dict[str, tuple[int, ...]]:
    pre = f"model.layers.{b}"
    out = {f"{pre}.self_attn.{p}.weight": (HIDDEN, HIDDEN) for p in ("q_proj", "k_proj", "v_proj", "o_proj")}
    out |= {f"{pre}.mlp.gate_proj.weight": (MLP, HIDDEN), f"{pre}.mlp.up_proj.weight": (MLP, HIDDEN),
            f"{pre}.mlp.down_proj.weight": (HIDDEN, MLP)}
    out |= {f"{pre}.input_layernorm.weight": (HIDDEN,), f"{pre}.post_attention_layernorm.weight": (HIDDEN,)}
    return out


FIXED = {"model.embed_tokens.weight": (VOCAB, HIDDEN), "lm_head.weight": (VOCAB, HIDDEN), "model.norm.weight": (HIDDEN,)}


def heavy_tailed(shape: tuple[int, ...], seed: int):
    """bf16 weights whose Gram has a power-law tail (tail exponent 2.5-4 by seed); norms are ones."""
    import torch

    if len(shape) == 1:
        return torch.ones(shape, dtype=torch.bfloat16)
    g = torch.Generator().manual_seed(seed)
    tail = 2.5 + 1.5 * (seed % 4) / 3
    small = min(shape)
    factor = (torch.rand(small, generator=g, dtype=torch.float64) ** (-1.0 / (tail - 1.0))).sqrt().float()
    w = torch.randn(*shape, generator=g).mul_(0.02)
    w.mul_(factor[None, :] if shape[1] == small else factor[:, None])
    return w.to(torch.bfloat16)


def write_shard(path: Path, shapes: dict[str, tuple[int, ...]], seed: int) -> None:
    from safetensors.torch import save_file

    if path.exists():
        return
    tensors = {name: heavy_tailed(shape, seed + i) for i, (name, shape) in enumerate(shapes.items())}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    tmp.rename(path)


def model_folder(root: Path, shards: Path, n_blocks: int) -> Path:
    """An HF folder of the fixed part + n_blocks blocks: hard links to the shared shard files, its index."""
    folder = root / f"llama2-7b-shapes-{n_blocks}-blocks"
    folder.mkdir(parents=True, exist_ok=True)
    files = {"fixed": FIXED, **{f"block{b:02d}": block_shapes(b) for b in range(n_blocks)}}
    weight_map = {}
    for i, (stem, shapes) in enumerate(files.items()):
        name = f"model-{stem}.safetensors"
        write_shard(shards / name, shapes, seed=1000 * i)
        if not (folder / name).exists():
            os.link(shards / name, folder / name)
        weight_map.update(dict.fromkeys(shapes, name))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
                                                    "hidden_size": HIDDEN, "intermediate_size": MLP,
                                                    "num_hidden_layers": BLOCKS_7B, "vocab_size": VOCAB}))
    return folder


def tree_memory(pid: int) -> tuple[int, int]:
    """(PSS, anonymous PSS) in bytes of `pid` and its descendants. The difference is file-backed: pages of
    the memory-mapped checkpoint that the readers touched, which the kernel drops under pressure."""
    import psutil

    pss = anon = 0
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    for p in procs:
        try:
            fields = dict(line.split(":", 1) for line in Path(f"/proc/{p.pid}/smaps_rollup").read_text().splitlines()[1:])
        except (OSError, ValueError):
            continue
        pss += int(fields.get("Pss", "0 kB").split()[0]) * 1024
        anon += int(fields.get("Pss_Anon", "0 kB").split()[0]) * 1024
    return pss, anon


def child_env(code: Path | None) -> dict:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(code), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def package_path(code: Path | None) -> str:
    """Where the children import ww_spectral from (the check that --code took effect)."""
    import subprocess

    return subprocess.run([sys.executable, "-c", "import ww_spectral; print(ww_spectral.__file__)"],
                          env=child_env(code), cwd=code, capture_output=True, text=True, check=True).stdout.strip()


def run(folder: Path, threads: int, backend: str, code: Path | None = None) -> dict:
    """`analyze_model` in a fresh process (one BLAS thread per layer worker), its tree's memory sampled."""
    import subprocess

    out = folder.parent / f"{folder.name}.result.json"
    child = subprocess.Popen([sys.executable, "-c", _OURS, str(folder), str(threads), backend, str(out)],
                             env=child_env(code), cwd=code, stderr=subprocess.PIPE, text=True)
    peak = peak_anon = 0
    while child.poll() is None:
        pss, anon = tree_memory(child.pid)
        peak, peak_anon = max(peak, pss), max(peak_anon, anon)
        time.sleep(0.02)
    if child.returncode:
        raise SystemExit(f"analysis of {folder} failed:\n{child.stderr.read()[-3000:]}")
    result = json.loads(out.read_text())
    return {"seconds": result["seconds"], "cpu": result["cpu"], "peak_pss": peak, "peak_anon": peak_anon,
            "analysed": result["n"]}


EIGEN_SIZES = {"float32": (2048, 3072, 3328, 3584, 4096), "float64": (1536, 2048, 2304, 2560, 4096)}


def eigensolver_table(repeat: int) -> str:
    """CPU seconds of one eigensolve per path and size, one BLAS thread (see the module docstring)."""
    import numpy as np
    import torch
    from threadpoolctl import threadpool_limits

    from ww_spectral import spectrum

    torch.set_num_threads(1)
    paths = {"evd": lambda G, lower: spectrum._eigvalsh_numpy(G, lower=lower, two_stage_min_bytes=None),
             "2-stage": lambda G, lower: spectrum._eigvalsh_numpy(G, lower=lower, two_stage_min_bytes=0),
             "torch": lambda G, lower: spectrum._eigvalsh_torch(G)}
    lines = ["| precision | m | ?syevd (evd) CPU s | two-stage CPU s | torch CPU s | max diff / lambda_max |",
             "|---|---|---|---|---|---|"]
    with threadpool_limits(1):
        for precision, sizes in EIGEN_SIZES.items():
            for m in sizes:
                W = heavy_tailed((HIDDEN, m), seed=m).float().numpy()
                grams = {lower: spectrum.gram(W, precision=precision, lower=lower) for lower in (False, True)}
                best, evs = dict.fromkeys(paths, float("inf")), {}
                for _ in range(repeat):
                    for name, solve in paths.items():
                        lower = name == "2-stage"  # each path on the triangle spectrum.eigenvalues gives it
                        G = grams[lower].copy(order="F")
                        t = time.process_time()
                        evs[name] = np.sort(solve(G, lower).astype(np.float64))
                        best[name] = min(best[name], time.process_time() - t)
                diff = max(float(np.abs(ev - evs["evd"]).max()) for ev in evs.values()) / evs["evd"][-1]
                lines.append(f"| {precision} | {m} | {best['evd']:.3f} | {best['2-stage']:.3f} | "
                             f"{best['torch']:.3f} | {diff:.1e} |")
                print(lines[-1], flush=True)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blocks", default="2,6", help="two block counts: extrapolate from the first, check on the second")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--backend", choices=["numpy", "torch"], default="numpy")
    ap.add_argument("--dir", help="where the shards go (default: a temp folder, deleted afterwards)")
    ap.add_argument("--out", help="also append the table (markdown) to this file")
    ap.add_argument("--code", type=Path, help="analyse with the ww_spectral package in this folder (default: this one)")
    ap.add_argument("--eigensolvers", action="store_true", help="only time the CPU eigensolvers side by side")
    ap.add_argument("--repeat", type=int, default=2, help="--eigensolvers: best of this many solves")
    args = ap.parse_args(argv)
    if args.eigensolvers:
        text = eigensolver_table(args.repeat)
        if args.out:
            with open(args.out, "a") as fh:
                fh.write(text + "\n")
        return 0
    code = args.code.resolve() if args.code else None
    print(f"ww_spectral: {package_path(code)}", flush=True)
    b1, b2 = (int(x) for x in args.blocks.split(","))

    tmp = tempfile.TemporaryDirectory(prefix="ww-bench-7b-") if args.dir is None else None
    root = Path(args.dir or tmp.name)
    shards = root / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    folders = {n: model_folder(root, shards, n) for n in (0, b1, b2)}
    size = sum(f.stat().st_size for f in folders[b2].glob("*.safetensors")) / 1e9
    print(f"checkpoints written in {time.perf_counter() - t:.0f} s ({size:.1f} GB for {b2} blocks)", flush=True)
    runs = {}
    for n, folder in folders.items():
        runs[n] = run(folder, args.threads, args.backend, code)
        print(f"  {n} blocks: {runs[n]['seconds']:.1f} s wall, {runs[n]['cpu']:.1f} s CPU, "
              f"peak PSS {runs[n]['peak_pss'] / 2**20:.0f} MB", flush=True)
    if tmp is not None:
        tmp.cleanup()

    fixed = runs[0]["seconds"]
    per_block = (runs[b1]["seconds"] - fixed) / b1
    predicted = fixed + b2 * per_block
    error = (runs[b2]["seconds"] - predicted) / runs[b2]["seconds"]
    per_block2 = (runs[b2]["seconds"] - fixed) / b2
    whole = fixed + BLOCKS_7B * per_block2
    cpu_block = (runs[b2]["cpu"] - runs[0]["cpu"]) / b2
    # The same check in CPU seconds: on a machine shared with other jobs the wall times follow their load,
    # the CPU the analysis needs does not.
    cpu_predicted = runs[0]["cpu"] + b2 * (runs[b1]["cpu"] - runs[0]["cpu"]) / b1
    cpu_error = (runs[b2]["cpu"] - cpu_predicted) / runs[b2]["cpu"]
    whole_cpu = runs[0]["cpu"] + BLOCKS_7B * cpu_block
    largest64 = VOCAB * HIDDEN * 8
    bound = 3 * largest64 + 300 * 2**20
    peak = max(r["peak_pss"] for r in runs.values())
    peak_anon = max(r["peak_anon"] for r in runs.values())
    params = sum(math.prod(s) for s in FIXED.values()) + BLOCKS_7B * sum(math.prod(s) for s in block_shapes(0).values())
    lines = [
        f"### bench_big_model: Llama-2-7B shapes ({params / 1e9:.2f}B parameters), bf16, {args.backend} backend, "
        f"{args.threads} layer workers",
        "",
        f"- ww_spectral: {package_path(code)}",
        f"- machine: {platform.machine()}, {os.cpu_count()} cores, load average at end "
        f"{' / '.join(f'{x:.1f}' for x in os.getloadavg())}",
        "",
        "| run | wall s | CPU s | peak PSS (MB) | of which anonymous (MB) |",
        "|---|---|---|---|---|",
        *(f"| embedding + lm_head + {n} blocks | {r['seconds']:.1f} | {r['cpu']:.1f} | {r['peak_pss'] / 2**20:.0f} | "
          f"{r['peak_anon'] / 2**20:.0f} |" for n, r in runs.items()),
        "",
        f"- per block: {per_block:.1f} s (from {b1} blocks), {per_block2:.1f} s (from {b2}); "
        f"embedding + lm_head: {fixed:.1f} s",
        f"- extrapolation check: {b2} blocks predicted {predicted:.1f} s from the {b1}-block run, measured "
        f"{runs[b2]['seconds']:.1f} s (**{100 * error:+.1f} %**); in CPU seconds: predicted {cpu_predicted:.1f}, "
        f"measured {runs[b2]['cpu']:.1f} (**{100 * cpu_error:+.1f} %**)",
        f"- **whole 7B model (32 blocks): {whole:.0f} s = {whole / 60:.1f} min** wall on {args.threads} workers "
        f"(target <= 10 min); {whole_cpu / 60:.1f} CPU-min",
        f"- peak memory of the process tree: **{peak_anon / 2**20:.0f} MB anonymous** (the working memory), "
        f"{peak / 2**20:.0f} MB PSS with the touched pages of the memory-mapped checkpoint (file-backed, dropped "
        f"by the kernel under pressure); bound: 3 x {largest64 / 2**20:.0f} MB float64 lm_head + 300 MB = "
        f"{bound / 2**20:.0f} MB",
        f"- CPU-bound estimate with both cores free: {whole_cpu / args.threads / 60:.1f} min "
        f"(CPU per block {cpu_block:.1f} s; the wall figure above includes the other jobs on the machine)",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
