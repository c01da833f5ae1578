"""The house rules, checked over the source tree with `ast` and plain text (no imports of the packages).

1. Layers: ww_spectral < catalogs < pipelines. A module never imports one of a higher layer, not even
   inside a function or by a module-name string (importlib), and the modules of the packages form no
   import cycle.
2. No repeated block of logic: no run of RUN_LINES substantive lines (code lines, whitespace, comments
   and docstring lines aside) stands twice in the packages' Python and SQL files or the benchmarks.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"ww_spectral": 0, "catalogs": 1, "pipelines": 2}
RUN_LINES = 6
MODULE_STRING = re.compile(r"(ww_spectral|catalogs|pipelines)(\.\w+)+")


def package_modules(root: Path = ROOT) -> dict[str, Path]:
    """{dotted module name: file} of every module of the three packages."""
    mods = {}
    for pkg in LAYERS:
        for path in sorted((root / pkg).rglob("*.py")):
            name = ".".join(path.relative_to(root).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = path
    return mods


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    if level == 0:
        return name or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def import_edges(mods: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the package modules it imports (anywhere in its body, or names as a string)."""
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(mod, is_package, node.level, node.module)
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and MODULE_STRING.fullmatch(node.value):
                targets = [node.value]
            else:
                continue
            for target in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target and target != mod:
                    edges[mod].add(target)
    return edges


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} -> {t}" for m, ts in edges.items() for t in ts
                  if LAYERS[t.split(".")[0]] > LAYERS[m.split(".")[0]])


def cycles(edges: dict[str, set[str]], mods: dict[str, Path]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan). Edges into a package's
    __init__ (re-exports of its face) are left out: importing a package runs it, but a submodule that
    imports its package's face is the usual Python idiom, not a design cycle."""
    graph = {m: [t for t in ts if mods[t].name != "__init__.py"] for m, ts in edges.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_upward_import():
    assert upward_imports(import_edges(package_modules())) == []


def test_no_import_cycle():
    mods = package_modules()
    assert cycles(import_edges(mods), mods) == []


def test_the_checker_sees_cycles_and_upward_imports(tmp_path):
    """The checks above can fail: a planted cycle and a planted upward import are both found."""
    for pkg, body in {"ww_spectral": {"a.py": "from . import b\n", "b.py": "from .a import x\n",
                                      "c.py": "import importlib\nimportlib.import_module('pipelines.p')\n"},
                      "catalogs": {}, "pipelines": {"p.py": "import ww_spectral.a\n"}}.items():
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
        for name, text in body.items():
            (tmp_path / pkg / name).write_text(text)
    mods = package_modules(tmp_path)
    edges = import_edges(mods)
    assert upward_imports(edges) == ["ww_spectral.c -> pipelines.p"]
    assert cycles(edges, mods) == [["ww_spectral.a", "ww_spectral.b"]]


# ---------------------------------------------------------------------------------------------- duplicates

DUPLICATE_SCOPE = ("ww_spectral", "catalogs", "pipelines", "benchmarks")
# Lines too common to mean anything: punctuation, bare keywords, closing brackets.
TRIVIAL = re.compile(r"^[\s\)\]\}\(\[\{,:;]*$|^(else|try|finally|pass|return|break|continue)\s*:?$")


def substantive_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, normalised text) of the lines that carry logic: comments, blank lines and
    docstrings dropped (for Python), SQL comments dropped, whitespace collapsed."""
    text = path.read_text()
    skip: set[int] = set()
    if path.suffix == ".py":
        for node in ast.walk(ast.parse(text)):
            body = getattr(node, "body", None)
            if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                    and isinstance(getattr(body[0], "value", None), ast.Constant) \
                    and isinstance(body[0].value.value, str):
                skip.update(range(body[0].lineno, body[0].end_lineno + 1))
    comment = "#" if path.suffix == ".py" else "--"
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = " ".join(line.split("  " + comment)[0].split())
        if number in skip or not stripped or stripped.startswith(comment) or TRIVIAL.match(stripped) \
                or stripped.startswith(("import ", "from ")):
            continue
        out.append((number, stripped))
    return out


def repeated_blocks(files: list[Path], run: int = RUN_LINES) -> list[str]:
    """Every run of `run` substantive lines that stands in two places (pairs of file:line)."""
    seen: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for path in files:
        lines = substantive_lines(path)
        for i in range(len(lines) - run + 1):
            window = tuple(text for _, text in lines[i:i + run])
            seen[window].append(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{lines[i][0]}")
    return sorted(" ~ ".join(places) for places in seen.values() if len(places) > 1)


def scope_files(root: Path = ROOT) -> list[Path]:
    return sorted(p for pkg in DUPLICATE_SCOPE for p in (root / pkg).rglob("*")
                  if p.suffix in (".py", ".sql") and p.is_file())


def test_no_repeated_block_of_logic():
    assert repeated_blocks(scope_files()) == []


def test_the_duplicate_check_finds_a_copied_block(tmp_path):
    block = "".join(f"value_{i} = compute(value_{i - 1}, factor={i})\n" for i in range(1, RUN_LINES + 1))
    (tmp_path / "a.py").write_text('"""doc"""\n' + block)
    (tmp_path / "b.py").write_text("# another module\n\n" + block.replace("\n", "  # copied\n"))
    (tmp_path / "c.py").write_text("".join(block.splitlines(keepends=True)[: RUN_LINES - 1]))  # one line short
    found = repeated_blocks(sorted(tmp_path.glob("*.py")))
    assert len(found) == 1 and "a.py:2" in found[0] and "b.py:3" in found[0]
