"""Which files of a model folder or hub repo hold its weights, and which names from outside are safe.

One rule for local folders (ww_spectral/sources.py) and hub repos (ww_spectral/hub.py,
ww_spectral/hub_source.py) alike:

    select_weight_files(names) -> WeightFiles(files, kind, index)
        model.safetensors.index.json  > model.safetensors > every *.safetensors
        > pytorch_model.bin.index.json > every *.bin/*.pt/*.pth/*.ckpt (Trainer files such as optimizer.pt ignored)
        > ONE *.gguf model (see choose_gguf: the highest precision its name states, then the first by name;
          a llama.cpp split model "-00001-of-00003.gguf" is all its parts; mmproj*/imatrix* files are not
          models); select_weight_files(names, weight_file="x.Q8_0.gguf") picks one file by name instead
    parse_index(data, index_name=...) -> the shard names an index lists (validated, sorted)

Names and revisions come from untrusted places (a downloaded index, a hub listing, a cache's refs/ file,
the command line) and end up in file paths, so they are checked here before any path is built:

    check_member_name(name)  a file inside a repo/folder: relative, no '..' or '.' component, no '//',
                             no backslash, no control character
    check_revision(rev)      a 40-hex commit sha or a safe branch/tag name (see SAFE_REF)
    check_inside(path, root) the real path (links followed) stays under root's real path, unless the caller
                             allows external links

config.json is informative only: read_config / config_from_bytes give {} and one warning for a config
that cannot be read safely (FIFO, device, too big, too deep, not an object, outside the folder).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import CheckpointError, OptionError
from .progress import safe_text
from .untrusted import (
    CONFIG_MAX_BYTES,
    INDEX_MAX_BYTES,
    JSON_MAX_DEPTH,
    loads_json_bounded,
    read_bytes_bounded,
)

log = logging.getLogger("ww_spectral")

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
GGUF_SUFFIXES = (".gguf",)
WEIGHT_SUFFIXES = SAFETENSORS_SUFFIXES + TORCH_SUFFIXES + GGUF_SUFFIXES
ST_INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"
CONFIG = "config.json"
# Files with weight-like suffixes that are not model weights (HF Trainer checkpoint folders).
NOT_WEIGHTS = re.compile(r"^(training_args\.bin|optimizer\.(pt|bin)|scheduler\.pt|scaler\.pt|rng_state.*\.pth)$")

# Git's ref-name rules, narrowed to what hub branches/tags use: these characters only, no component that
# starts with '.', no '..' anywhere, no empty component ('//', leading or trailing '/').
SAFE_REF = re.compile(r"(?!.*\.\.)(?!/)(?!.*//)(?!.*/\Z)(?!\.)(?!.*/\.)[A-Za-z0-9._/-]+")  # use fullmatch
REF_MAX_CHARS = 256
COMMIT_SHA = re.compile(r"[0-9a-f]{40}")  # use fullmatch
NAME_MAX_CHARS = 1024


@dataclass(frozen=True)
class WeightFiles:
    """The weight files chosen among a folder's or repo's root file names.

    files: names in load order. With an index, its shards are the exact list: read the index
        (`parse_index`) and use those; until then `files` holds the root safetensors files other than
        consolidated* (the hub's model_info shows them without downloading the index).
    kind: "safetensors" | "torch" | "gguf" | "none" (no weight file at all).
    index: the index file's name when the chosen files come from one, else None.
    """

    files: tuple[str, ...]
    kind: str
    index: str | None = None


# GGUF files that are not a language model's weights: vision projectors, importance matrices.
GGUF_NOT_MODELS = re.compile(r"^(mmproj|imatrix)", re.IGNORECASE)
_GGUF_SPLIT = re.compile(r"^(?P<stem>.+)-(?P<part>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)
# Precision a GGUF file name states (llama.cpp's naming: model-Q4_K_M.gguf, model.f16.gguf): bits per weight.
_GGUF_PRECISION = re.compile(r"(?:^|[-._])(f32|bf16|f16|i?q\d|tq\d)(?=[-._]|$)", re.IGNORECASE)


def gguf_bits(name: str) -> float:
    """Bits per weight a GGUF file's name states (f32 32, bf16/f16 16, Q8_0 8, IQ4_XS 3.5, ...); 0 when
    it states none. Only an ordering: the file itself says what each tensor holds."""
    found = _GGUF_PRECISION.findall(name)
    if not found:
        return 0.0
    token = found[-1].lower()
    if token in ("f32", "bf16", "f16"):
        return 32.0 if token == "f32" else 16.0
    bits = float(token[-1])
    return bits - 0.5 if token.startswith(("iq", "tq")) else bits


def _gguf_models(root: set[str]) -> dict[str, tuple[str, ...]]:
    """GGUF models among root names: key (a file, or a split model's first part) -> its files in order.
    A split model missing a part is left out (it cannot be read)."""
    models: dict[str, tuple[str, ...]] = {}
    splits: dict[tuple[str, int], list[tuple[int, str]]] = {}
    for n in sorted(root):
        if not n.lower().endswith(GGUF_SUFFIXES) or GGUF_NOT_MODELS.match(n):
            continue
        m = _GGUF_SPLIT.match(n)
        if m is None:
            models[n] = (n,)
        else:
            splits.setdefault((m["stem"], int(m["count"])), []).append((int(m["part"]), n))
    for (_, count), parts in splits.items():
        if sorted(p for p, _ in parts) == list(range(1, count + 1)):
            ordered = tuple(n for _, n in sorted(parts))
            models[ordered[0]] = ordered
    return models


def choose_gguf(names: Iterable[str]) -> tuple[str, ...]:
    """The files of THE GGUF model among root `names` (empty when none): highest stated precision, then the
    first by name - deterministic, and the closest to the original weights."""
    models = _gguf_models({n for n in names if "/" not in n})
    if not models:
        return ()
    key = min(models, key=lambda k: (-gguf_bits(k), k))
    return models[key]


def file_kind(name: str) -> str:
    """The reader kind of one weight file, by its name: "safetensors" | "torch" | "gguf" | "none"."""
    low = name.lower()
    if low.endswith(SAFETENSORS_SUFFIXES):
        return "safetensors"
    if low.endswith(GGUF_SUFFIXES):
        return "gguf"
    return "torch" if low.endswith(TORCH_SUFFIXES) else "none"


def _chosen_file(root: set[str], weight_file: str) -> WeightFiles:
    """The user's choice of one weight file (a GGUF split model: all its parts)."""
    check_member_name(weight_file, where="weight_file", what="weight file name")
    if weight_file not in root or file_kind(weight_file) == "none":
        have = sorted(n for n in root if file_kind(n) != "none")
        raise OptionError(f"weight file {_shown(weight_file)} is not among the model's weight files "
                          f"({safe_text(', '.join(have[:20]) or 'none', limit=600)}); pass one of those names")
    for files in _gguf_models(root).values():
        if weight_file in files:
            return WeightFiles(files, "gguf")
    return WeightFiles((weight_file,), file_kind(weight_file))


def select_weight_files(names: Iterable[str], *, weight_file: str | None = None) -> WeightFiles:
    """THE rule: which of a model's root file names (no '/' in them) are its weights; see the module doc.

    weight_file: one root file name the user chose (e.g. one quantisation of a GGUF repo); OptionError
    when it is not one of the weight files."""
    root = {n for n in names if "/" not in n}
    if weight_file is not None:
        return _chosen_file(root, weight_file)
    st = sorted(n for n in root if n.endswith(SAFETENSORS_SUFFIXES))
    if ST_INDEX in root:
        return WeightFiles(tuple(n for n in st if not n.startswith("consolidated")), "safetensors", ST_INDEX)
    if "model.safetensors" in root:
        return WeightFiles(("model.safetensors",), "safetensors")
    if st:
        return WeightFiles(tuple(st), "safetensors")
    pt = tuple(sorted(n for n in root if n.endswith(TORCH_SUFFIXES) and not NOT_WEIGHTS.match(n)))
    if BIN_INDEX in root:
        return WeightFiles(pt, "torch", BIN_INDEX)
    if pt:
        return WeightFiles(pt, "torch")
    gguf = choose_gguf(root)
    return WeightFiles(gguf, "gguf") if gguf else WeightFiles((), "none")


def name_problem(name: object, *, allow_external_links: bool = False) -> str | None:
    """Why `name` is not a safe relative file name inside a folder or repo (None: it is).

    allow_external_links: '..' components and absolute paths pass (a local folder whose user allows links
    outside it); control characters, backslashes and empty components never do."""
    if not isinstance(name, str) or not name:
        return "not a non-empty string"
    if len(name) > NAME_MAX_CHARS:
        return f"longer than {NAME_MAX_CHARS} characters"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return "holds a control character"
    if "\\" in name:
        return "holds a backslash"
    if allow_external_links:
        parts = name.removeprefix("/").split("/")
        return "has an empty or '.' path component" if any(p in ("", ".") for p in parts) else None
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "is an absolute path"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "has an empty, '.' or '..' path component"
    return None


def _shown(text: object) -> str:
    """An outside value in a message: repr (control characters escaped), cut short."""
    s = repr(text)
    return s if len(s) <= 120 else s[:117] + "..."


def check_member_name(name: object, *, where: str, what: str = "file name", allow_external_links: bool = False) -> str:
    """`name` if it is a safe relative name (see name_problem); CheckpointError naming `where` otherwise."""
    problem = name_problem(name, allow_external_links=allow_external_links)
    if problem is not None:
        raise CheckpointError(f"{where}: {what} {_shown(name)} {problem} and is refused (it could lead outside the "
                              "model); the file is damaged or hostile - get it again from a trusted source")
    return name  # type: ignore[return-value]


def parse_index(data: bytes, *, index_name: str, where: str | os.PathLike | None = None,
                allow_external_links: bool = False) -> tuple[str, ...]:
    """The shard file names an index (model.safetensors.index.json / pytorch_model.bin.index.json) lists.

    data: the index bytes (at most INDEX_MAX_BYTES of ww_spectral/untrusted.py). where: named in messages
    (default: index_name). Returns the names sorted (the load order), each checked with check_member_name
    and ending in the suffix of its kind. CheckpointError, one line, for anything else.
    allow_external_links: '..' and absolute shard names pass (local folders only; never for hub repos).
    """
    at = os.fspath(where) if where is not None else index_name

    def bad(problem: str) -> CheckpointError:
        return CheckpointError(f"{at}: not a valid index ({problem}); re-download it (or the whole model)")

    if len(data) > INDEX_MAX_BYTES:
        raise bad(f"{len(data)} bytes, over the {INDEX_MAX_BYTES}-byte limit for index files")
    try:
        obj = loads_json_bounded(data, max_depth=JSON_MAX_DEPTH, what="index", path=at)
    except CheckpointError as exc:
        raise bad(str(exc).removeprefix(f"{at}: ").partition(";")[0]) from None
    weight_map = obj.get("weight_map") if isinstance(obj, dict) else None
    if not isinstance(weight_map, dict):
        raise bad("no 'weight_map' object")
    suffixes = SAFETENSORS_SUFFIXES if index_name == ST_INDEX else TORCH_SUFFIXES
    names = set()
    for value in weight_map.values():
        problem = name_problem(value, allow_external_links=allow_external_links)
        if problem is not None:
            raise CheckpointError(f"{at}: not a valid index (shard name {_shown(value)} {problem}: it could lead "
                                  "outside the model); re-download it from a trusted source (a local folder that "
                                  "links elsewhere on purpose needs --allow-external-links)")
        name = str(value)
        if not name.endswith(suffixes):
            raise bad(f"shard {_shown(name)} is not a {'/'.join(suffixes)} file")
        names.add(name)
    if not names:
        raise bad("'weight_map' lists no shard")
    return tuple(sorted(names))


def read_index(path: str | os.PathLike, *, index_name: str, allow_external_links: bool = False) -> tuple[str, ...]:
    """parse_index of the index file at `path` (a regular file, at most INDEX_MAX_BYTES, read bounded)."""
    try:
        data = read_bytes_bounded(path, max_bytes=INDEX_MAX_BYTES, what="index file")
    except CheckpointError as exc:
        raise CheckpointError(f"{os.fspath(path)}: not a valid index ("
                              f"{str(exc).removeprefix(os.fspath(path) + ': ').partition(';')[0]}); "
                              "re-download it (or the whole model)") from None
    return parse_index(data, index_name=index_name, where=path, allow_external_links=allow_external_links)


def is_commit_sha(rev: object) -> bool:
    """True for a full 40-hex (lower-case) commit id, as the hub and its cache use."""
    return isinstance(rev, str) and bool(COMMIT_SHA.fullmatch(rev))


def is_safe_revision(rev: object) -> bool:
    """True for a commit sha or a safe branch/tag name (SAFE_REF, at most REF_MAX_CHARS characters)."""
    return isinstance(rev, str) and 0 < len(rev) <= REF_MAX_CHARS and bool(SAFE_REF.fullmatch(rev))


def check_revision(rev: str | None, *, what: str = "revision") -> str | None:
    """`rev` (None passes) if is_safe_revision; OptionError otherwise (it would become a cache path)."""
    if rev is None or is_safe_revision(rev):
        return rev
    raise OptionError(f"{what} {_shown(rev)} is not a commit sha or a safe branch/tag name (letters, digits, "
                      f"'.', '_', '-', '/'; no '..', no leading '/' or '.', at most {REF_MAX_CHARS} characters); "
                      "pass an existing branch, tag or 40-hex commit")


def is_inside(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """True when `path`'s real location (every link followed) is `root`'s real location or below it."""
    return Path(os.path.realpath(path)).is_relative_to(Path(os.path.realpath(root)))


def check_inside(path: str | os.PathLike, root: str | os.PathLike, *, allow_external_links: bool = False,
                 what: str = "file") -> Path:
    """`path` if is_inside(path, root) or links are allowed; CheckpointError naming both otherwise."""
    if allow_external_links or is_inside(path, root):
        return Path(path)
    raise CheckpointError(f"{os.fspath(path)}: this {what} leads outside {os.fspath(root)} (to "
                          f"{os.path.realpath(path)}); refused - pass --allow-external-links "
                          "(allow_external_links=True) to read files a model folder links to elsewhere")


# --------------------------------------------------------------------------------------------------------------
# config.json: informative only (model_type, architectures): a config that cannot be read safely is
# ignored with one warning, never a reason to refuse the weights.


def ignore_config(problem: str) -> dict:
    """{} and one warning on the "ww_spectral" logger naming `problem` (the config is informative only)."""
    log.warning("%s; config.json ignored (it is informative only)", safe_text(problem, limit=400))
    return {}


def config_from_bytes(data: bytes, *, where: str) -> dict:
    """config.json bytes parsed as a dict (at most CONFIG_MAX_BYTES, JSON depth capped); {} + one warning
    on the "ww_spectral" logger when they are not one."""
    if len(data) > CONFIG_MAX_BYTES:
        return ignore_config(f"{where}: {len(data)} bytes, over the {CONFIG_MAX_BYTES}-byte limit for configs")
    try:
        cfg = loads_json_bounded(data, max_depth=JSON_MAX_DEPTH, what="config.json", path=where)
    except CheckpointError as exc:
        return ignore_config(str(exc).partition(";")[0])
    return cfg if isinstance(cfg, dict) else ignore_config(f"{where}: not a JSON object")


def read_config(path: str | os.PathLike, *, root: str | os.PathLike | None = None,
                allow_external_links: bool = False) -> dict:
    """The config.json at `path`: {} when there is none; {} + one warning when it is not a regular file
    (FIFO, device), is too big or too deep, is not a JSON object, or leads outside `root` (unless links
    are allowed). Never blocks, never reads more than CONFIG_MAX_BYTES + 1 bytes."""
    if not os.path.lexists(path):
        return {}
    try:
        if root is not None:
            check_inside(path, root, allow_external_links=allow_external_links, what="config.json")
        data = read_bytes_bounded(path, max_bytes=CONFIG_MAX_BYTES, what="config.json")
    except CheckpointError as exc:
        return ignore_config(str(exc).partition(";")[0])
    return config_from_bytes(data, where=os.fspath(path))
