"""progress.safe_text / ProgressReporter: a name never forges a line, writing never crashes."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest

from ww_spectral import analysis
from ww_spectral.progress import ProgressReporter, safe_text

HOSTILE = [
    "a\nb", "a\rb", "a\r\nb", "\x1b[2J\x1b[Hclear", "nul\x00byte", "bell\x07", "del\x7f", "c1\x85next",
    "ls\u2028ps\u2029", "rtl\u202eoverride", "zero\u200bwidth", "bom\ufeff", "tab\tbed",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_safe_text_is_one_printable_line(text):
    out = safe_text(text)
    assert out.isprintable() and len(out.splitlines()) == 1
    assert safe_text(out) == out  # escaping twice changes nothing: the reporter may escape again


def test_safe_text_keeps_plain_names_and_escapes_readably():
    assert safe_text("model.layers.0.mlp.up_proj.weight") == "model.layers.0.mlp.up_proj.weight"
    assert safe_text("naïve/模型") == "naïve/模型"
    assert safe_text("a\nb\x1bc\u2028") == "a\\nb\\x1bc\\u2028"
    assert safe_text(42) == "42"


def test_safe_text_limit():
    assert safe_text("x" * 500, limit=10) == "xxxxxxx..." and safe_text("short", limit=10) == "short"
    assert len(safe_text("\n" * 500)) == 200


def test_reporter_writes_prefixed_lines_only_when_enabled():
    buf = io.StringIO()
    ProgressReporter(enabled=False, stream=buf).line("hidden")
    rep = ProgressReporter(enabled=True, stream=buf)
    rep.line("evil\n[ww-spectral] forged")
    assert buf.getvalue() == "[ww-spectral] evil\\n[ww-spectral] forged\n"
    assert not rep.isatty()


def test_reporter_never_raises_on_a_closed_stream():
    buf = io.StringIO()
    rep = ProgressReporter(enabled=True, stream=buf)
    buf.close()
    rep.line("after close")  # no exception
    assert rep.enabled is False


def test_reporter_lines_from_many_threads_never_interleave():
    buf = io.StringIO()
    rep = ProgressReporter(enabled=True, stream=buf, prefix="t")
    text = "y" * 300

    def write(k):
        for _ in range(50):
            rep.line(f"{k} {text}")

    threads = [threading.Thread(target=write, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = buf.getvalue().splitlines()
    assert len(lines) == 400 and all(line.startswith("[t] ") and line.endswith(text) for line in lines)


def test_layer_progress_escapes_tensor_names(capsys):
    rng = np.random.default_rng(0)
    source = {
        "evil\n[ww-spectral] forged.weight": rng.standard_normal((40, 20)).astype(np.float32),
        "plain.weight": rng.standard_normal((30, 20)).astype(np.float32),
    }
    analysis.analyze_model(source, progress=True, threads=1)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and all(line.startswith("[ww-spectral] ") for line in lines)
    assert sum("forged" in line for line in lines) == 1 and "evil\\n[ww-spectral] forged.weight" in lines[0]
