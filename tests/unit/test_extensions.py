"""colbert-ai's C++ extensions: a build lock that a killed compile left is removed (torch would wait on it forever),
a fresh one kept; a build is compiled once per torch build, Python and compiler and then loaded by every venv
that has the same three; a compile is announced with its reason."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from colbert_swap.colbert.extensions import STALE_AFTER, announce_compile, build_key, clear_stale_locks


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

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    names = ("here_cpp", "elsewhere_cpp")
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / f"{name}.so").touch()
        (tmp_path / name / "build.ninja").write_text(f"cflags = -isystem {include_paths()[0]} -O3\n")
    other = "/elsewhere/venv/lib/python3.11/site-packages/torch"
    (tmp_path / "elsewhere_cpp" / "build.ninja").write_text(f"cflags = -isystem {other}/include -O3\n")
    said = []

    for name in names + ("never_built_cpp",):
        announce_compile(name, tmp_path / "shared" / name / "key", tmp_path / "log", said.append)

    assert len(said) == 2 and said[0].startswith("compiling colbert-ai's C++ extension elsewhere_cpp")
    assert f"another torch installation ({other};" in said[0]
    assert said[1].startswith("compiling colbert-ai's C++ extension never_built_cpp") and "none is shared" in said[1]


def test_the_shared_build_key_names_what_the_library_depends_on_and_not_where_the_venv_is(tmp_path):
    """Two copies of one source in two folders (two venvs' colbert-ai) share a key; another source or flag does not."""
    a, b, c = (tmp_path / d for d in "abc")
    for folder, text in ((a, "int f() { return 1; }"), (b, "int f() { return 1; }"), (c, "int f() { return 2; }")):
        folder.mkdir()
        (folder / "x.cpp").write_text(text)

    key = build_key([str(a / "x.cpp")], {"extra_cflags": ["-O3"], "verbose": False})

    assert key == build_key([str(b / "x.cpp")], {"extra_cflags": ["-O3"], "verbose": True})
    assert key != build_key([str(c / "x.cpp")], {"extra_cflags": ["-O3"]})
    assert key != build_key([str(a / "x.cpp")], {"extra_cflags": ["-O2"]})
    import torch

    assert key.startswith(f"torch-{torch.__version__}-") and f"-{sys.implementation.cache_tag}" in key


LOAD = """
import hashlib, sys
from pathlib import Path
import torch
from colbert_swap.colbert.extensions import share_builds
share_builds(Path(sys.argv[1]), lambda line: print("SAID", line))
from colbert.modeling.colbert import ColBERT
ColBERT.try_load_torch_extensions(False)
scores = torch.randn(10, 4, generator=torch.Generator().manual_seed(0))
out = ColBERT.segmented_maxsim(scores, torch.tensor([3, 7]))
print("OUT", hashlib.sha256(out.numpy().tobytes()).hexdigest(), out.shape[0])
"""


def test_a_venv_with_an_empty_extension_folder_loads_the_shared_build_without_compiling(tmp_path):
    """The first process builds (or finds its own torch folder's build of) segmented_maxsim_cpp and keeps it in the
    shared folder; a second one whose TORCH_EXTENSIONS_DIR is empty, as a new venv's is, loads that library:
    nothing compiled, nothing announced, the same scores."""
    shared = tmp_path / "shared"
    env = dict(os.environ, COLBERT_SWAP_SHARED_EXTENSIONS=str(shared))

    def load(extensions_dir=None):
        run_env = dict(env, **({"TORCH_EXTENSIONS_DIR": str(extensions_dir)} if extensions_dir else {}))
        done = subprocess.run([sys.executable, "-c", LOAD, str(tmp_path / "log")], env=run_env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        return [line for line in done.stdout.splitlines() if line.startswith(("SAID", "OUT"))]

    first = load()
    kept = list(shared.glob("segmented_maxsim_cpp/*/segmented_maxsim_cpp.so"))
    assert len(kept) == 1 and (kept[0].parent / "build.json").is_file()

    empty = tmp_path / "new-venv-extensions"
    second = load(empty)

    assert second == [first[-1]] and first[-1].endswith(" 2")  # no announcement, the same two scores
    assert not list(empty.rglob("*.so")) and not list(empty.rglob("build.ninja"))  # torch compiled nothing there


def test_the_extensions_a_search_needs_are_built_side_by_side_into_the_shared_folder(tmp_path, monkeypatch):
    """A capture that searches needs four extensions, which colbert-ai compiles one after another as it reaches them;
    the ones not shared yet are built first, one process per colbert-ai loader, and kept in the shared folder.
    Once they are there, nothing is built again."""
    from colbert_swap.colbert.extensions import LOADERS, prebuild

    monkeypatch.setenv("COLBERT_SWAP_SHARED_EXTENSIONS", str(tmp_path / "shared"))
    said = []

    built = prebuild(tmp_path / "log", said.append)

    names = [name for _, _, name in LOADERS]
    assert sorted(built) == sorted(names) and len(names) == 4
    assert all(len(list((tmp_path / "shared" / n).glob("*/*.so"))) == 1 for n in names)
    assert len(said) == 1 and f"side by side ({len(LOADERS)} processes" in said[0]
    assert prebuild(tmp_path / "log", said.append) == [] and len(said) == 1
