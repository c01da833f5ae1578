"""Builders of small model zoos for the pipeline tests (data only: no Ray or Prefect code lives here)."""

from __future__ import annotations

from pathlib import Path

from support.checkpoints import Raw, random_tensors, write_hf_model_folder, write_safetensors


def model_tensors(i: int, *, n_layers: int = 3, width: int = 48) -> dict:
    """A small model: n_layers dense matrices of different shapes plus a norm vector (seeded by i)."""
    shapes = {f"model.layers.{j}.mlp.up_proj.weight": (width * (1 + j % 2), width) for j in range(n_layers)}
    shapes["model.norm.weight"] = (width,)
    return random_tensors(shapes, seed=100 + i)


def make_zoo(root: Path, *, n_good: int = 6, broken: bool = True, quantized: bool = True) -> dict[str, Path]:
    """n_good HF model folders (every other one sharded in 2, one stored as BF16), plus
    'broken' (a truncated safetensors header) and 'quantized' (only int8 tensors: nothing analysable)."""
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for i in range(n_good):
        out[f"m{i}"] = write_hf_model_folder(root / f"m{i}", model_tensors(i), n_shards=2 if i % 2 else 1,
                                             dtype="BF16" if i == 2 else None)
    if broken:
        b = root / "broken"
        b.mkdir(exist_ok=True)
        (b / "model.safetensors").write_bytes(b"\x40\x00\x00\x00\x00\x00\x00\x00{\"w\": ")
        out["broken"] = b
    if quantized:
        q = root / "quantized"
        q.mkdir(exist_ok=True)
        write_safetensors(q / "model.safetensors", {"q.weight": Raw("I8", (32, 32), bytes(32 * 32))})
        out["quantized"] = q
    return out


def make_big_model(folder: Path, *, n_layers: int = 8, side: int = 512, seed: int = 7) -> Path:
    """One model whose layers take long enough to split over Ray tasks (and to kill a worker mid-run)."""
    shapes = {f"model.layers.{j}.self_attn.o_proj.weight": (side, side) for j in range(n_layers)}
    return write_hf_model_folder(folder, random_tensors(shapes, seed=seed))
