"""A build lock that a killed compile left is removed (torch would wait on it forever); a fresh one is kept."""

from __future__ import annotations

import os
import time

from colbert_swap.colbert.extensions import STALE_AFTER, clear_stale_locks


def test_a_stale_build_lock_is_removed_and_a_fresh_one_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    for name in ("old_cpp", "new_cpp"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "lock").touch()
    hour_ago = time.time() - STALE_AFTER - 60
    os.utime(tmp_path / "old_cpp" / "lock", (hour_ago, hour_ago))
    said = []

    removed = clear_stale_locks(["old_cpp", "new_cpp", "never_built_cpp"], said.append)

    assert removed == [tmp_path / "old_cpp" / "lock"] and not removed[0].exists()
    assert (tmp_path / "new_cpp" / "lock").exists()  # a compile in progress elsewhere
    assert len(said) == 1 and "old_cpp" in said[0] and "16 min ago" in said[0]
