"""The one progress/logging mechanism: "[ww-spectral] ..." lines on stderr, never forged by a name.

Names that come from outside (tensor names, folder names, hub ids) may hold newlines, carriage returns
or terminal escape sequences; printed raw, one could fake a progress line or rewrite the terminal.
`safe_text` makes any text one printable line; callers pass every outside field through it, and
`ProgressReporter.line` applies it once more to the whole line (idempotent: escaped text holds no
control character), so no caller can forget.
"""

from __future__ import annotations

import sys
import threading
import unicodedata
from typing import TextIO

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Control (Cc), format (Cf: e.g. the right-to-left override), surrogate (Cs), private (Co), unassigned
# (Cn) code points and the Unicode line/paragraph separators (Zl, Zp) are escaped.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else (f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")


def safe_text(text: object, *, limit: int = 200) -> str:
    """`text` as one printable line: control and format characters escaped (newline -> \\n, ESC -> \\x1b,
    U+2028 -> \\u2028, ...), then cut to at most `limit` characters (ending in '...' when cut).

    Backslashes are kept as they are, so the result of safe_text is unchanged by a second safe_text.
    """
    s = text if isinstance(text, str) else str(text)
    out = "".join(_escape(ch) if (ch < " " or unicodedata.category(ch) in _UNSAFE_CATEGORIES) else ch
                  for ch in s)
    if limit >= 3 and len(out) > limit:
        out = out[: limit - 3] + "..."
    return out


class ProgressReporter:
    """Writes "[prefix] text" lines to `stream` (default: sys.stderr at the time of writing) when enabled.

    Thread-safe (one lock per reporter: lines of concurrent layers never interleave). Writing never
    raises: a closed or broken stream (a pipe whose reader went away) silences the reporter.
    """

    LINE_LIMIT = 4000  # characters of one line, after escaping

    def __init__(self, *, enabled: bool, stream: TextIO | None = None, prefix: str = "ww-spectral") -> None:
        self.enabled = bool(enabled)
        self._stream = stream
        self.prefix = safe_text(prefix, limit=80)
        self._lock = threading.Lock()

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    def isatty(self) -> bool:
        """True when enabled and writing to a terminal (where a progress bar may replace the lines)."""
        if not self.enabled:
            return False
        try:
            return bool(self.stream.isatty())
        except (AttributeError, ValueError, OSError):
            return False

    def line(self, text: str) -> None:
        """Write one line (control characters escaped, cut at LINE_LIMIT) when enabled."""
        if not self.enabled:
            return
        out = f"[{self.prefix}] {safe_text(text, limit=self.LINE_LIMIT)}\n"
        with self._lock:
            try:
                self.stream.write(out)
                self.stream.flush()
            except (ValueError, OSError):  # closed file / broken pipe: progress is never worth a crash
                self.enabled = False
