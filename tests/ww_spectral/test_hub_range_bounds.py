"""A hostile hub cannot make a Range read cost more memory than it asked for: a server that ignores Range
and streams a huge file, one that answers 206 with more bytes than asked, and one whose error page is huge
are all read only as far as needed (the real huggingface_hub client over HTTP on 127.0.0.1)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ww_spectral.errors import HubError, WWSpectralError
from ww_spectral.hub import HubSettings, range_fetcher

HUGE = 2**30  # what the hostile server claims (and would send, 1 MiB at a time, until the client hangs up)
SHA = "a" * 40


class _Hostile(BaseHTTPRequestHandler):
    mode = "ignore_range"
    sent = 0

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        status, headers = {"ignore_range": (200, {"Content-Length": str(HUGE)}),
                           "overlong_206": (206, {"Content-Range": f"bytes 0-99/{HUGE}"}),
                           "huge_error": (500, {"Content-Length": str(HUGE)})}[self.mode]
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        chunk = b"x" * 2**20
        try:
            for _ in range(HUGE // len(chunk)):
                self.wfile.write(chunk)
                type(self).sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture
def hostile():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _fetch(server, mode: str):
    _Hostile.mode, _Hostile.sent = mode, 0
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    return range_fetcher("org/model", "model.safetensors", revision=SHA, endpoint=endpoint,
                         settings=HubSettings(timeout_s=10.0, max_attempts=2, backoff_s=0.0))(0, 100)


def test_a_server_ignoring_range_is_read_only_as_far_as_asked(hostile):
    body, total = _fetch(hostile, "ignore_range")
    assert (body, total) == (b"x" * 100, HUGE)
    assert _Hostile.sent < 64 * 2**20  # it stopped sending when the client hung up, not at 1 GiB


def test_a_206_with_more_bytes_than_asked_is_refused(hostile):
    with pytest.raises(HubError, match="asked for bytes 0-99, the server sent more"):
        _fetch(hostile, "overlong_206")
    assert _Hostile.sent < 64 * 2**20


def test_a_huge_error_page_is_read_only_in_part(hostile):
    with pytest.raises(WWSpectralError):
        _fetch(hostile, "huge_error")
    assert _Hostile.sent < 64 * 2**20
