"""Depth and role of a tensor, parsed from its name alone; and the natural order of names.

A checkpoint key such as ``model.layers.10.self_attn.q_proj.weight`` says where the matrix sits: block 10
of the decoder stack, the attention query projection. `tensor_role` turns a key into a `TensorRole`
(block index, role, expert index, stack) for the common families: Llama/Mistral/Qwen/Gemma/Phi
(``layers.N``), GPT-2/GPT-J/Falcon/BLOOM (``h.N``), GPT-NeoX (``gpt_neox.layers.N``), BERT/ViT
(``encoder.layer.N``), T5 (``encoder.block.N``), OPT/BART (``decoder.layers.N``), MoE experts
(``experts.E``), GGUF (``blk.N.attn_q``) and plain ``nn.Sequential`` / conv nets.

`natural_key` sorts names the way a person counts: ``layers.2`` before ``layers.10`` (an alphabetical
header order puts 10 first, which scrambles every depth profile of a model with more than 10 blocks).
`depth_key` is the order every model's tensors are numbered in (ww_spectral/model.py): natural order, with
the input embeddings first, the output head last and an encoder before its decoder.

Roles (`ROLES`): attn_q, attn_k, attn_v, attn_o, attn_qkv, mlp_up, mlp_gate, mlp_down, mlp_gate_up,
router, embedding, position_embedding, lm_head, conv, norm, other. `TensorRole.group` folds them into
attention / mlp / embedding / head / conv / norm / other.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

ROLES = ("attn_q", "attn_k", "attn_v", "attn_o", "attn_qkv", "mlp_up", "mlp_gate", "mlp_down", "mlp_gate_up",
         "router", "embedding", "position_embedding", "lm_head", "conv", "norm", "other")

_GROUP = {"attn_q": "attention", "attn_k": "attention", "attn_v": "attention", "attn_o": "attention",
          "attn_qkv": "attention", "mlp_up": "mlp", "mlp_gate": "mlp", "mlp_down": "mlp", "mlp_gate_up": "mlp",
          "router": "mlp", "embedding": "embedding", "position_embedding": "embedding", "lm_head": "head",
          "conv": "conv", "norm": "norm", "other": "other"}

# Path components that hold the per-block stack: the integer right after one is the block index.
_CONTAINERS = frozenset({"layers", "layer", "h", "blocks", "block", "blk", "encoderlayer", "decoderlayer",
                         "resblocks", "transformer_blocks", "down_blocks", "up_blocks", "stages"})
_EXPERTS = frozenset({"experts", "expert"})
# Trailing components that name a parameter, not the module (quantisation companions included).
_PARAMS = frozenset({"weight", "bias", "qweight", "qzeros", "scales", "g_idx", "scb", "absmax", "quant_map",
                     "weight_packed", "weight_scale", "weight_scale_inv", "weight_zero_point", "weight_shape",
                     "weight_g_idx", "lora_a", "lora_b", "lora_magnitude_vector", "default", "in_proj_weight",
                     "in_proj_bias"})

# Exact module names -> role (lower-cased). Ambiguous short names (wo, dense, output, gate, q) are
# resolved by context in `_context_role`.
_EXACT = {
    # attention
    "q_proj": "attn_q", "query": "attn_q", "wq": "attn_q", "attn_q": "attn_q", "q_lin": "attn_q", "to_q": "attn_q",
    "k_proj": "attn_k", "key": "attn_k", "wk": "attn_k", "attn_k": "attn_k", "k_lin": "attn_k", "to_k": "attn_k",
    "v_proj": "attn_v", "value": "attn_v", "wv": "attn_v", "attn_v": "attn_v", "v_lin": "attn_v", "to_v": "attn_v",
    "o_proj": "attn_o", "out_proj": "attn_o", "attn_output": "attn_o", "out_lin": "attn_o", "to_out": "attn_o",
    "qkv_proj": "attn_qkv", "query_key_value": "attn_qkv", "c_attn": "attn_qkv", "wqkv": "attn_qkv",
    "attn_qkv": "attn_qkv", "qkv": "attn_qkv", "in_proj": "attn_qkv",
    # mlp
    "up_proj": "mlp_up", "fc1": "mlp_up", "c_fc": "mlp_up", "dense_h_to_4h": "mlp_up", "ffn_up": "mlp_up",
    "lin1": "mlp_up", "fc_in": "mlp_up", "wi": "mlp_up", "wi_1": "mlp_up", "w3": "mlp_up", "ffn_up_exps": "mlp_up",
    "gate_proj": "mlp_gate", "ffn_gate": "mlp_gate", "wi_0": "mlp_gate", "w1": "mlp_gate",
    "ffn_gate_exps": "mlp_gate",
    "down_proj": "mlp_down", "fc2": "mlp_down", "dense_4h_to_h": "mlp_down", "ffn_down": "mlp_down",
    "lin2": "mlp_down", "fc_out": "mlp_down", "w2": "mlp_down", "ffn_down_exps": "mlp_down",
    "gate_up_proj": "mlp_gate_up", "ffn_gate_up": "mlp_gate_up", "ffn_gate_up_exps": "mlp_gate_up",
    "w13": "mlp_gate_up",
    "router": "router", "ffn_gate_inp": "router", "switch": "router",
    # embeddings / head
    "embed_tokens": "embedding", "wte": "embedding", "word_embeddings": "embedding", "token_embd": "embedding",
    "tok_embeddings": "embedding", "embed_in": "embedding", "shared": "embedding", "patch_embed": "embedding",
    "wpe": "position_embedding", "position_embeddings": "position_embedding", "embed_positions": "position_embedding",
    "lm_head": "lm_head", "embed_out": "lm_head", "output": "lm_head", "classifier": "lm_head", "head": "lm_head", "fc": "lm_head",
}
# Head names that are the head only at the top level (torchvision's ``fc``, GGUF's ``output``).
_TOP_LEVEL_HEADS = ("output", "head", "classifier", "fc")
_NORM = re.compile(r"(^|_)(norm|ln|layernorm|layer_norm|rmsnorm|ln_f|ln_\d+|ln_1|ln_2|norm\d*)($|_)|norm$|^ln")


@dataclass(frozen=True)
class TensorRole:
    """Where one tensor sits in the model, from its name.

    block: index of the repeated block (``layers.N``), None outside the stack (embeddings, head).
    role: one of `ROLES`.
    expert: expert index for per-expert tensors (``experts.E.w1``), None otherwise (a 3-D expert stack
        has no index in its name: ww_spectral.experts splits it and numbers the experts).
    stack: "encoder" / "decoder" for encoder-decoder models (T5, BART, Whisper), "" otherwise.
    """

    block: int | None
    role: str
    expert: int | None = None
    stack: str = ""

    @property
    def group(self) -> str:
        """attention / mlp / embedding / head / conv / norm / other."""
        return _GROUP[self.role]

    def as_dict(self) -> dict:
        """Columns for a layers table: block, role, role_group, expert, stack."""
        return {"block": self.block, "role": self.role, "role_group": self.group, "expert": self.expert,
                "stack": self.stack}


def _parts(name: str) -> list[str]:
    return [p for p in name.lower().split(".") if p]


def _module_parts(parts: list[str]) -> list[str]:
    """Drop trailing parameter names (weight, bias, qweight, lora_A, ...) and bare integers after them."""
    out = list(parts)
    while out and (out[-1] in _PARAMS or out[-1].startswith("quant_state") or out[-1].startswith("bitsandbytes")):
        out.pop()
    return out


# An index is ASCII digits, at most 18 of them (int() of a hostile 5000-digit run would raise; of "²" too).
_INDEX = re.compile(r"[0-9]{1,18}")


def _is_index(part: str) -> bool:
    return _INDEX.fullmatch(part) is not None


def _block_and_expert(parts: list[str]) -> tuple[int | None, int | None]:
    block = expert = None
    for i in range(1, len(parts)):
        if not _is_index(parts[i]):
            continue
        prev = parts[i - 1]
        if expert is None and prev in _EXPERTS:
            expert = int(parts[i])
        elif block is None and prev in _CONTAINERS:
            block = int(parts[i])
    if block is None:
        # nn.Sequential-style names ("0.weight", "features.3.weight", "net.2.0.weight"): first integer.
        for p in parts:
            if _is_index(p):
                block = int(p)
                break
    return block, expert


def _context_role(mod: list[str], shape: tuple[int, ...] | None) -> str:
    last = mod[-1] if mod else ""
    prev = mod[-2] if len(mod) > 1 else ""
    ctx = set(mod[:-1])
    in_attn = bool(ctx & {"attention", "attn", "self_attn", "self_attention", "selfattention",
                          "encdecattention", "crossattention", "cross_attn", "encoder_attn", "mixer"})
    if last in ("q", "k", "v", "o") and in_attn:
        return {"q": "attn_q", "k": "attn_k", "v": "attn_v", "o": "attn_o"}[last]
    if last == "wo":
        return "attn_o" if in_attn else "mlp_down"  # T5: SelfAttention.wo vs DenseReluDense.wo
    if last == "dense":
        if prev == "output" and "attention" in ctx:
            return "attn_o"      # BERT attention.output.dense
        if prev == "output":
            return "mlp_down"    # BERT layer.N.output.dense
        if prev == "intermediate":
            return "mlp_up"
        if in_attn:
            return "attn_o"      # GPT-NeoX attention.dense, Falcon self_attention.dense
        return "other"
    if last == "c_proj":
        return "attn_o" if in_attn else "mlp_down"  # GPT-2 attn.c_proj vs mlp.c_proj
    if last == "gate":
        # MoE router (Mixtral block_sparse_moe.gate, Qwen-MoE mlp.gate): a [experts, hidden] matrix.
        return "router"
    if last == "output" and len(mod) > 1:
        return "other"           # only a top-level "output" (GGUF) is the head
    return ""


def tensor_role(name: str, *, shape: tuple[int, ...] | None = None) -> TensorRole:
    """Block index, role, expert index and stack of the tensor called `name`.

    shape: the stored shape when known; a 4-D tensor (or 3-D conv1d kernel whose name says conv) is
    "conv" whatever its name. Unknown names give role "other" (never an error).
    """
    parts = _parts(name)
    stack = "encoder" if "encoder" in parts else "decoder" if "decoder" in parts else ""
    block, expert = _block_and_expert(parts)
    mod = _module_parts(parts)
    last = mod[-1] if mod else ""
    if (shape is not None and len(shape) == 4) or "conv" in last:
        return TensorRole(block, "conv", expert, stack)
    if parts and parts[-1] in ("in_proj_weight",):
        return TensorRole(block, "attn_qkv", expert, stack)  # nn.MultiheadAttention
    role = _context_role(mod, shape)
    if not role:
        role = _EXACT.get(last, "")
        if role == "lm_head" and last in _TOP_LEVEL_HEADS and len(mod) > 1:
            role = ""
    if not role and _is_index(last) and len(mod) > 1:
        role = _EXACT.get(mod[-2], "")  # diffusers to_out.0
    if not role and _NORM.search(last):
        role = "norm"
    return TensorRole(block, role or "other", expert, stack)


def is_expert_stack(info) -> bool:
    """True for a 3-D tensor whose name marks it as experts (``experts.`` or GGUF ``_exps``).

    info: anything with `.name` and `.shape` (records.TensorInfo). Here, not in experts.py, because
    layers.py needs it and experts.py plans through layers.py.
    """
    name = info.name.lower()
    return len(info.shape) == 3 and (".experts." in name or "_exps" in name or name.endswith(".experts"))


_DIGITS = re.compile(r"([0-9]+)")


def _number(digits: str) -> tuple[int, str, str]:
    """A digit run as a sort key comparing like its value, without int() (a name may hold thousands of
    digits): shorter significant part first, then the digits; equal values by their text ("02" < "2")."""
    significant = digits.lstrip("0")
    return len(significant), significant, digits


def natural_key(name: str) -> tuple:
    """Sort key: ASCII digit runs compare as numbers ("layers.2" < "layers.10"); the rest as text.

    re.split with a capturing group alternates text (even positions) and digits (odd positions), so keys
    of any two names compare position by position without mixing str and tuple.
    """
    return tuple(_number(p) if i % 2 else p for i, p in enumerate(_DIGITS.split(name)))


_STACK_RANK = {"encoder": 0, "": 1, "decoder": 2}


def depth_key(name: str, shape: tuple[int, ...] | None = None) -> tuple:
    """Sort key putting a model's tensors in depth order (input -> output), from the name alone.

    (phase, stack, natural_key(name)): phase 0 = embeddings outside any block (``embed_tokens``, ``wte``,
    ``shared``), 2 = the output head outside any block (``lm_head``, ``embed_out``, a top-level ``fc`` or
    ``classifier.N``), 1 = everything else;
    stack: encoder before un-stacked before decoder (T5/BART/Whisper name the decoder first alphabetically).
    Within a phase and stack the natural order decides (``layers.2`` < ``layers.10``, ``layer1.1`` <
    ``layer2.0``): a name's digits are compared as numbers, never as text.
    """
    role = tensor_role(name, shape=shape)
    # outside any block container: the block a bare integer gives (VGG's classifier.0) is no depth
    outside = role.block is None or not any(p in _CONTAINERS for p in _parts(name))
    phase = 1
    if outside and role.role in ("embedding", "position_embedding"):
        phase = 0
    elif outside and role.role == "lm_head":
        phase = 2
    return phase, _STACK_RANK.get(role.stack, 1), natural_key(name)


def natural_order(names: Iterable[str]) -> list[str]:
    """`names` sorted by `natural_key`."""
    return sorted(names, key=natural_key)
