"""Node-local shard copies (multi-node hub scans) are pruned once stale, so worker disks stay bounded."""

from __future__ import annotations

import os
import time

from pipelines.work import prune_stale_shards


def _shard(root, repo, commit, age_s):
    folder = root / repo / commit
    folder.mkdir(parents=True)
    f = folder / "model.safetensors"
    f.write_bytes(b"x" * 16)
    past = time.time() - age_s
    for p in (f, folder):
        os.utime(p, (past, past))
    return folder


def test_only_stale_shards_other_than_the_one_in_use_are_removed(tmp_path):
    old = _shard(tmp_path, "org--a", "c1", age_s=7200)
    fresh = _shard(tmp_path, "org--b", "c2", age_s=10)
    in_use_but_old = _shard(tmp_path, "org--c", "c3", age_s=7200)

    removed = prune_stale_shards(str(tmp_path), keep=str(in_use_but_old), max_age_s=3600)

    assert removed == [str(old)]
    assert not old.exists()
    assert fresh.exists() and in_use_but_old.exists()


def test_missing_root_is_nothing_to_prune(tmp_path):
    assert prune_stale_shards(str(tmp_path / "absent"), keep="") == []
