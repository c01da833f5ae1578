"""The report's output folder: written whole into a temp sibling, then swapped in; nothing else deleted.

`report --out OUT` accepts OUT when it
- does not exist, or is an empty folder, or is a folder a previous report wrote: it holds the marker
  file MARKER (JSON: tool, version, and the list of files that report wrote) and nothing else than
  those files - a file the user added makes it someone else's folder;
- is not a symbolic link, not a file, not the working folder (or above it);
- is not the data root, not inside it and not above it (the store's own `models/` table must not be
  replaced by a report's `models/` pages).
Anything else is an OutputFolderError (one line, exit 2) and nothing is touched.

The report is written into a fresh temp sibling `.OUT.tmp-*` (next to OUT: same file system, so the
swap is two renames), the marker last; then the previous report is renamed aside, the new one renamed
to OUT, and the old one removed. An interrupted report leaves OUT as it was (its temp sibling is removed
on any exception; only a killed process can leave one behind, named `.OUT.tmp-*`).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ww_spectral import __version__
from ww_spectral.errors import WWSpectralError
from ww_spectral.progress import safe_text
from ww_spectral.untrusted import loads_json_bounded, read_bytes_bounded

MARKER = ".ww-spectral-report"
MARKER_TOOL = "ww-spectral report"
MARKER_VERSION = 1
MARKER_MAX_BYTES = 4 << 20  # a listing of ~50k file names; a real report's marker is a few kB


class OutputFolderError(WWSpectralError):
    """--out names a folder the report must not write into (not its own, or the data root's)."""


@dataclass(frozen=True)
class ReportFolder:
    """final: the absolute folder the user named (--out); work: the temp sibling the report is written to."""

    final: Path
    work: Path


def _show(path: Path) -> str:
    return safe_text(str(path), limit=300)


def _read_marker(folder: Path) -> set[str]:
    """The relative file names a previous report listed in folder's marker (validated), or raise."""
    bad = OutputFolderError(f"{_show(folder)} holds a {MARKER} file that is not a report marker; pass a new "
                            "folder to --out (nothing was changed)")
    try:
        data = loads_json_bounded(read_bytes_bounded(folder / MARKER, max_bytes=MARKER_MAX_BYTES, what="marker"),
                                  max_depth=4, what="report marker")
    except (WWSpectralError, OSError) as exc:
        raise bad from exc
    if not isinstance(data, dict) or data.get("tool") != MARKER_TOOL or not isinstance(data.get("files"), list) \
            or not all(isinstance(f, str) for f in data["files"]):
        raise bad
    return set(data["files"])


def _entries(folder: Path) -> list[str]:
    """Every file, link and folder under `folder` as relative POSIX names (links are not followed)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        rel = Path(dirpath).relative_to(folder)
        out += [(rel / n).as_posix() for n in filenames]
        out += [(rel / n).as_posix() for n in dirnames if os.path.islink(os.path.join(dirpath, n))]
    return sorted(out)


def _check_owned(target: Path) -> None:
    """target is empty, or holds only a previous report's files and its marker; else raise."""
    if not any(target.iterdir()):
        return
    if not (target / MARKER).is_file():
        raise OutputFolderError(f"--out {_show(target)} is not empty and was not written by `ww-spectral "
                                f"report` (no {MARKER} marker); pass a new folder (nothing was changed)")
    listed = _read_marker(target) | {MARKER}
    foreign = [e for e in _entries(target) if e not in listed]
    if foreign:
        raise OutputFolderError(f"--out {_show(target)} holds {len(foreign)} file(s) the report did not write, "
                                f"e.g. {safe_text(foreign[0], limit=120)}; move them or pass a new folder "
                                "(nothing was changed)")


def _within(a: Path, b: Path) -> bool:
    """a is b or inside b (resolved paths)."""
    return a == b or b in a.parents


def check_output_folder(out: str | os.PathLike, *, data_root: str | os.PathLike | None) -> Path:
    """The absolute report folder for --out OUT, after every check of the module docstring; raises
    OutputFolderError (nothing touched) when OUT must not be written."""
    target = Path(os.path.abspath(Path(out).expanduser()))
    if target.is_symlink():
        raise OutputFolderError(f"--out {_show(target)} is a symbolic link; pass the real folder or a new one")
    if target.exists() and not target.is_dir():
        raise OutputFolderError(f"--out {_show(target)} is a file; pass a folder (it is created if missing)")
    real = target.resolve()
    if data_root is not None and "://" not in str(data_root):
        root = Path(data_root).expanduser().resolve()
        if _within(real, root) or _within(root, real):
            raise OutputFolderError(f"--out {_show(target)} is the data root {_show(root)}, inside it or above "
                                    "it; pass a folder outside the store, e.g. --out ww-report")
    if _within(Path.cwd().resolve(), real) or real.parent == real:
        raise OutputFolderError(f"--out {_show(target)} is the working folder or above it; pass a new folder, "
                                "e.g. --out ww-report")
    if target.is_dir():
        _check_owned(target)
    return target


def _write_marker(work: Path) -> None:
    files = _entries(work)
    body = {"tool": MARKER_TOOL, "version": MARKER_VERSION, "ww_spectral_version": __version__, "files": files}
    (work / MARKER).write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")


def _swap(work: Path, target: Path) -> None:
    """Put the finished `work` folder at `target`; the replaced one (checked again: still ours) is removed."""
    if not target.exists():
        os.rename(work, target)
        return
    _check_owned(target)  # again: a file may have been added while the report was written
    old = target.with_name(f".{target.name}.old-{secrets.token_hex(4)}")
    os.rename(target, old)
    os.rename(work, target)
    shutil.rmtree(old)


@contextmanager
def report_folder(out: str | os.PathLike, *, data_root: str | os.PathLike | None) -> Iterator[ReportFolder]:
    """Check OUT (check_output_folder), yield a ReportFolder whose `work` is a fresh temp sibling to write
    the report into, then mark it and swap it in as OUT. On any exception the temp folder is removed and
    OUT stays as it was."""
    target = check_output_folder(out, data_root=data_root)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield ReportFolder(final=target, work=work)
        _write_marker(work)
        os.chmod(work, 0o755)  # mkdtemp makes it 0700; a report is meant to be opened and shared
        _swap(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise

