"""Hub faults map to typed errors naming the fix; transient ones are retried with back-off."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from support.checkpoints import tiny_model_tensors, write_hf_model_folder
from support.hub_server import HubServer

from ww_spectral import hub, hub_source
from ww_spectral.checkpoint import open_checkpoint
from ww_spectral.errors import GatedRepoError, HubError, SourceNotFoundError, TransientHubError

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
TOKEN = "hf_test_token"


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setenv("WW_HUB_BACKOFF_S", "0.05")
    monkeypatch.setenv("WW_HUB_MAX_ATTEMPTS", "4")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("faultrepos")
    folder = write_hf_model_folder(root / "m", tiny_model_tensors(seed=3))
    with HubServer(page_size=1, tokens=(TOKEN,)) as s:
        s.add_repo("org/open", folder, downloads=3)
        s.add_repo("org/gated", folder, gated="manual", downloads=2)
        s.add_repo("org/private", folder, private=True, downloads=1)
        yield s


def test_gated_repo_without_token(server, tmp_path):
    with pytest.raises(GatedRepoError, match="set HF_TOKEN") as info:
        open_checkpoint("org/gated", endpoint=server.endpoint, cache_dir=str(tmp_path))
    assert "gated" in str(info.value)
    assert server.requests_to("/org/gated/resolve/")[-1].headers.get("authorization") is None
    # With a token (argument or HF_TOKEN) it downloads.
    with open_checkpoint("org/gated", endpoint=server.endpoint, cache_dir=str(tmp_path), token=TOKEN) as ckpt:
        assert len(ckpt.tensors()) == 13
    assert server.requests_to("/org/gated/resolve/")[-1].headers["authorization"] == f"Bearer {TOKEN}"


def test_gated_repo_with_hf_token_env(server, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    ref = hub_source.download_weights("org/gated", endpoint=server.endpoint, cache_dir=str(tmp_path))
    assert ref.repo_id == "org/gated"


def test_private_repo_and_bad_token(server, tmp_path):
    with pytest.raises(GatedRepoError, match="private, gated or missing; if it exists, set HF_TOKEN"):
        hub.model_info("org/private", endpoint=server.endpoint)
    assert hub.model_info("org/private", endpoint=server.endpoint, token=TOKEN).repo_id == "org/private"
    with pytest.raises(GatedRepoError, match="HF_TOKEN"):
        hub.model_info("org/open", endpoint=server.endpoint, token="hf_wrong")
    assert "org/private" not in [m.repo_id for m in hub.list_models(endpoint=server.endpoint)]


def test_missing_repo_revision_and_file(server, tmp_path):
    with pytest.raises(SourceNotFoundError, match="check the repo id"):
        open_checkpoint("org/missing", endpoint=server.endpoint, cache_dir=str(tmp_path))
    with pytest.raises(SourceNotFoundError, match="revision not found.*pass an existing branch"):
        open_checkpoint("org/open@nope", endpoint=server.endpoint, cache_dir=str(tmp_path))


def test_500_burst_that_recovers(server, tmp_path):
    n = len(server.requests_to("/api/models/org/open"))
    server.inject("/api/models/org/open", status=500, times=2)  # model info: retried by us
    server.inject("/org/open/resolve/", status=503, times=1, method="HEAD")  # HEAD: retried by us
    with open_checkpoint("org/open", endpoint=server.endpoint, cache_dir=str(tmp_path)) as ckpt:
        assert ckpt.read("lm_head.bias").shape == (96,)
    assert len(server.requests_to("/api/models/org/open")) - n == 3


def test_listing_429_is_retried_by_the_client(server):
    server.inject("/api/models", status=429, times=1, retry_after=0)
    t0 = time.monotonic()
    models = hub.list_models(endpoint=server.endpoint, limit=None)
    assert [m.repo_id for m in models] == ["org/open", "org/gated"]
    assert time.monotonic() - t0 < 10


def test_500_burst_that_does_not_recover(server, tmp_path, monkeypatch):
    monkeypatch.setenv("WW_HUB_MAX_ATTEMPTS", "3")
    n = len(server.requests_to("/api/models/org/open"))
    server.inject("/api/models/org/open", status=500, times=100)
    try:
        with pytest.raises(TransientHubError, match="answered 500 after retries; retry later"):
            open_checkpoint("org/open", endpoint=server.endpoint, cache_dir=str(tmp_path / "empty"))
        assert len(server.requests_to("/api/models/org/open")) - n == 3  # bounded: 3 attempts
    finally:
        server.clear_faults()


def test_unreachable_hub_falls_back_to_cached_snapshot(server, tmp_path, monkeypatch):
    cache = str(tmp_path / "cache")
    first = hub_source.download_weights("org/open", endpoint=server.endpoint, cache_dir=cache)
    monkeypatch.setenv("WW_HUB_MAX_ATTEMPTS", "1")
    server.inject("/api/models/org/open", status=502, times=100)
    try:
        again = hub_source.download_weights("org/open", endpoint=server.endpoint, cache_dir=cache)
        assert (again.repo_id, again.revision, again.files) == (first.repo_id, first.revision, first.files)
    finally:
        server.clear_faults()


def test_connection_refused_is_transient(tmp_path, monkeypatch):
    monkeypatch.setenv("WW_HUB_MAX_ATTEMPTS", "2")
    with HubServer() as dead:
        endpoint = dead.endpoint
    with pytest.raises(TransientHubError, match="network error.*retry later"):
        hub.model_info("org/open", endpoint=endpoint)


def test_stalled_api_call_times_out_as_transient(server, monkeypatch):
    monkeypatch.setenv("WW_HUB_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("WW_HUB_TIMEOUT_S", "0.3")
    n = len(server.requests_to("/api/models/org/open"))
    server.inject("/api/models/org/open", status=None, delay=1.5, times=10)
    try:
        # A ReadTimeout: each attempt gave up at 0.3 s (a client that waited 1.5 s would have had the answer).
        with pytest.raises(TransientHubError, match="network error.*ReadTimeout.*retry later"):
            hub.model_info("org/open", endpoint=server.endpoint)
    finally:
        server.clear_faults()
    assert len(server.requests_to("/api/models/org/open")) - n == 2  # bounded: WW_HUB_MAX_ATTEMPTS tries


def test_bad_sort_is_an_error(server):
    with pytest.raises(HubError, match="use one of downloads"):
        hub.list_models(endpoint=server.endpoint, sort="stars")


def test_server_sees_one_listing_call_per_page(server):
    before = [r for r in server.requests if r.path == "/api/models"]
    hub.list_models(endpoint=server.endpoint, limit=None)
    after = [r for r in server.requests if r.path == "/api/models"]
    assert len(after) - len(before) == 2  # two public repos, page size 1
    assert np.all([("cursor" in r.query) for r in after[len(before) + 1:]])


def test_offline_mode_uses_the_cache(server, tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = str(tmp_path / "cache")
    first = hub_source.download_weights("org/open", endpoint=server.endpoint, cache_dir=cache)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets at import
    n = len(server.requests)
    with open_checkpoint("org/open", endpoint=server.endpoint, cache_dir=cache) as ckpt:
        assert ckpt.ref.revision == first.revision
    assert len(server.requests) == n  # no request at all
    with pytest.raises(HubError, match="not in the HF cache and HF_HUB_OFFLINE is set; unset it"):
        hub_source.download_weights("org/gated", endpoint=server.endpoint, cache_dir=cache)


def test_typo_local_path_that_looks_like_a_hub_id(server, tmp_path):
    with pytest.raises(SourceNotFoundError, match="no such local file or folder, and on the hub: .*404"):
        open_checkpoint("mymodels/typo", endpoint=server.endpoint, cache_dir=str(tmp_path))


def test_listing_500_that_does_not_recover(server):
    server.inject("/api/models", status=500, times=100, retry_after=0)  # the client retries 5 times, 1 s apart
    t0 = time.monotonic()
    try:
        with pytest.raises(TransientHubError, match="listing models: .* answered 500 after retries; retry later"):
            hub.list_models(endpoint=server.endpoint)
    finally:
        server.clear_faults()
    assert time.monotonic() - t0 < 60  # ~5 s of back-off: only a client that never gives up fails this
    assert len([r for r in server.requests if r.path == "/api/models"]) >= 6
