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


def test_a_build_made_by_another_torch_installation_is_announced_before_it_is_compiled_again(tmp_path, monkeypatch):
    """A library is there, but its build.ninja names another torch's include path: ninja compiles it again, and the
    console says so with the reason (it used to check only that a library exists, and said nothing)."""
    from torch.utils.cpp_extension import include_paths

    from colbert_swap.colbert.infra import EXTENSIONS, announce_extensions

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    names = EXTENSIONS["search-cpu"]
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / f"{name}.so").touch()
        (tmp_path / name / "build.ninja").write_text(f"cflags = -isystem {include_paths()[0]} -O3\n")
    other = "/elsewhere/venv/lib/python3.11/site-packages/torch"
    (tmp_path / names[1] / "build.ninja").write_text(f"cflags = -isystem {other}/include -O3\n")
    said = []

    announce_extensions("search", "cpu", tmp_path / "log", said.append)

    assert len(said) == 1 and said[0].startswith(f"compiling colbert-ai's C++ extension {names[1]} again")
    assert f"another torch installation ({other};" in said[0]
