"""colbert-ai's C++ extensions: torch compiles each the first time it is needed.

Two things go wrong with that and are mended here. (1) torch compiles under a lock file in its build folder
(`<TORCH_EXTENSIONS_DIR>/<name>/lock`, torch.utils.file_baton). A process killed while it held that lock (Ctrl-C
in a compile, a test's timeout, a session's end) leaves the file behind, and every later process that loads the
extension waits on it forever, silently: the one wait measured here lasted until a test's 900 s timeout. The lock
holds no process id, so its age decides: no compile of these extensions takes `STALE_AFTER`, even on two loaded
cores (about 30-90 s each measured), so an older lock is removed, and said so. (2) Every venv compiled its own
copy, silently, though venvs of one torch, Python and compiler make the same library: `share_builds`.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

from colbert_swap.env.venvs import shared_extensions_here

STALE_AFTER = 15 * 60  # seconds


def clear_stale_locks(names: Iterable[str], progress: Callable[[str], None], now: float | None = None) -> list[Path]:
    """Remove the build locks of extensions `names` older than STALE_AFTER; the locks removed."""
    from torch.utils.cpp_extension import _get_build_directory

    removed = []
    for name in names:
        lock = Path(_get_build_directory(name, verbose=False)) / "lock"
        try:
            seen = lock.stat()
        except FileNotFoundError:
            continue
        age = (now or time.time()) - seen.st_mtime
        if age <= STALE_AFTER:
            continue
        try:
            again = lock.stat()
            if (again.st_ino, again.st_mtime) == (seen.st_ino, seen.st_mtime):  # not a new compile's lock
                lock.unlink()
        except FileNotFoundError:  # another process removed it first
            continue
        progress(f"removed {lock}: left {age / 60:.0f} min ago by a process that stopped while compiling {name} "
                 "(torch would wait on it forever)")
        removed.append(lock)
    return removed


# colbert-ai's modules that compile an extension (each does `from torch.utils.cpp_extension import load`): the model,
# the codec (on a GPU), the search's scorer and its strided tensors. A capture that searches loads all of them
# (the modeling module imports the search ones already).
MODULES = ("colbert.modeling.colbert", "colbert.indexing.codecs.residual", "colbert.search.index_storage",
           "colbert.search.strided_tensor")


def share_builds(log: Path, progress: Callable[[str], None], searching: bool = False) -> None:
    """Make colbert-ai's extensions compile once per torch build, Python and compiler, and load from `shared_extensions_here()` in every venv that has the same three (issue 33).

    torch compiles an extension in a folder of its own and compiles again whenever the build command changes,
    and the command holds the venv's own paths (its torch include folder, colbert-ai's source): a venv of the
    same torch recompiled, ~30-60 s per extension. The library it makes depends on the torch build (headers,
    ABI), the Python ABI, the compiler, the sources and flags, not on those paths: `build_key` names them all.
    colbert-ai's `load` calls go through `SharedLoad`, which imports the shared library when there is one and
    otherwise lets torch build it (said so, with the reason), then keeps a copy. Only colbert-ai's module globals
    named `load` are replaced; what the extensions compute is colbert-ai's C++ code, unchanged. For a run that
    `searching` on the CPU, the missing ones are compiled side by side first (`prebuild`)."""
    import importlib

    _ANNOUNCE[:] = [progress, log]
    for name in MODULES:
        module = importlib.import_module(name)
        if not isinstance(module.load, SharedLoad):
            module.load = SharedLoad(module.load)
    if searching:
        prebuild(log, progress)


# The extensions colbert-ai compiles on the CPU, each with the class whose `try_load_torch_extensions(use_gpu)`
# compiles it (IndexScorer compiles two, one after the other)
LOADERS = (("colbert.modeling.colbert", "ColBERT", "segmented_maxsim_cpp"),
           ("colbert.search.index_storage", "IndexScorer", "filter_pids_cpp"),
           ("colbert.search.index_storage", "IndexScorer", "decompress_residuals_cpp"),
           ("colbert.search.strided_tensor", "StridedTensor", "segmented_lookup_cpp"))
ONLY = "COLBERT_SWAP_BUILD_ONLY"  # in a `prebuild` process: the one extension it builds (the others are skipped)
PREBUILD = """import importlib, sys
from pathlib import Path
from colbert_swap.colbert.extensions import share_builds
share_builds(Path(sys.argv[3]), lambda line: None)
getattr(importlib.import_module(sys.argv[1]), sys.argv[2]).try_load_torch_extensions(False)
"""


class _Skipped:
    """What `SharedLoad` gives a `prebuild` process for an extension another process builds: colbert-ai only
    takes an attribute of it, and the process ends."""

    def __getattr__(self, name):
        return None


def prebuild(log: Path, progress: Callable[[str], None]) -> list[str]:
    """Compile the CPU extensions that a capture and its search load and that are not shared yet, side by side:
    one process per extension (LOADERS; each calls colbert-ai's loader, and `SharedLoad` skips the extensions
    the others build), where colbert-ai would compile them one after another as it reaches them (4 x ~20-30 s
    on 2 cores for a new torch). The libraries land in the shared folder, and this process then only loads them;
    one that fails leaves its extension to be compiled (and announced) when colbert-ai loads it. The extensions
    compiled."""
    import subprocess

    prefix = build_prefix()
    missing = [(module, cls, name) for module, cls, name in LOADERS
               if not any(shared_extensions_here().glob(f"{name}/{prefix}-*/*.so"))]
    if len(missing) < 2:  # nothing to overlap: colbert-ai's own load compiles it, announced
        return []
    names = [name for _, _, name in missing]
    progress(f"compiling colbert-ai's C++ extensions {', '.join(names)} side by side ({len(missing)} processes, "
             f"~30-60 s): none is shared yet for this torch, Python and compiler in {shared_extensions_here()}; "
             f"every venv with the same three will use them; compiler output: {log}")
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        jobs = [subprocess.Popen([sys.executable, "-c", PREBUILD, module, cls, str(log)], stdout=out,
                                 stderr=subprocess.STDOUT, env={**env, ONLY: name}) for module, cls, name in missing]
        try:
            for job in jobs:
                job.wait()
        finally:
            for job in jobs:
                if job.poll() is None:
                    job.kill()
    return names


_ANNOUNCE: list = [lambda line: None, Path(os.devnull)]  # (progress, log) of the run that loads next


class SharedLoad:
    """torch.utils.cpp_extension.load, with the library looked up in, and kept to, `shared_extensions_here()`."""

    def __init__(self, torch_load):
        self.torch_load = torch_load

    def __call__(self, name: str, sources, **kwargs):
        if os.environ.get(ONLY, name) != name:
            return _Skipped()
        folder = shared_extensions_here() / name / build_key(sources, kwargs)
        built = sorted(folder.glob("*.so"))
        if built:
            return import_library(built[0])
        progress, log = _ANNOUNCE
        clear_stale_locks([name], progress)
        announce_compile(name, folder, log, progress)
        module = self.torch_load(name=name, sources=sources, **kwargs)
        keep(Path(module.__file__), folder, name, sources, kwargs)
        return module


def build_key(sources, kwargs: dict) -> str:
    """What the library depends on, as a folder name: `torch-<version>-<git>-<python ABI>-<compiler>-<sources
    and flags>`, the last two hashed (the compiler's `--version` line; with .cu sources, nvcc's too)."""
    import hashlib

    digest = hashlib.sha256()
    for source in sources:
        digest.update(Path(source).read_bytes())
    digest.update(repr(sorted((k, v) for k, v in kwargs.items() if k != "verbose")).encode())
    return f"{build_prefix(any(str(s).endswith('.cu') for s in sources))}-{digest.hexdigest()[:12]}"


def build_prefix(cuda: bool = False) -> str:
    """`build_key` but the sources and flags: the torch build, the Python ABI and the compiler."""
    import hashlib
    import torch

    python = f"{sys.implementation.cache_tag}{getattr(sys, 'abiflags', '')}"
    git = (getattr(torch.version, "git_version", None) or "nogit")[:8]
    return f"torch-{torch.__version__}-{git}-{python}-cc{hashlib.sha256(compiler(cuda).encode()).hexdigest()[:8]}"


_COMPILERS: dict[bool, str] = {}


def compiler(cuda: bool = False) -> str:
    """The C++ compiler's first `--version` line, as torch calls it ($CXX, else c++), and with `cuda` nvcc's last."""
    if cuda not in _COMPILERS:
        lines = [_version_line([os.environ.get("CXX", "c++"), "--version"], first=True)]
        if cuda:
            from torch.utils.cpp_extension import CUDA_HOME

            lines.append(_version_line([os.path.join(CUDA_HOME or "", "bin", "nvcc"), "--version"], first=False))
        _COMPILERS[cuda] = " | ".join(lines)
    return _COMPILERS[cuda]


def _version_line(command: list[str], first: bool) -> str:
    import subprocess

    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=60).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError) as e:
        return f"{command[0]}: {type(e).__name__}"
    return (out[0] if first else out[-1]) if out else f"{command[0]}: no version"


def import_library(path: Path):
    """Import an extension library as torch's load does (its module name is the file's stem: torch names a rebuilt
    extension `<name>_v1`, and the library's init function follows)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def keep(library: Path, folder: Path, name: str, sources, kwargs: dict) -> None:
    """Copy a library torch built into the shared `folder` (a temporary name, then renamed: a process that looks
    meanwhile sees the whole file or none), with what it was built from in `build.json`."""
    import json
    import shutil
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    info = {"extension": name, "torch": torch.__version__, "torch_git": getattr(torch.version, "git_version", None),
            "python": sys.version.split()[0], "compiler": compiler(any(str(s).endswith(".cu") for s in sources)),
            "sources": [str(s) for s in sources], "options": {k: repr(v) for k, v in kwargs.items()},
            "built_in": str(library.parent), "kept": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (folder / "build.json").write_text(json.dumps(info, indent=1) + "\n")
    part = folder / f".{library.name}.{os.getpid()}.part"
    shutil.copyfile(library, part)
    os.replace(part, folder / library.name)


def announce_compile(name: str, folder: Path, log: Path, progress) -> None:
    """Say so before torch compiles extension `name`, with the reason: none is shared for this torch, Python and
    compiler (the first venv of them), and, where torch's own folder holds a build, that it was made by another
    torch installation (`stale_build`). Nothing is said when torch's folder holds this installation's build:
    torch only loads it, and it is kept for the others."""
    from torch.utils.cpp_extension import _get_build_directory

    try:
        own = Path(_get_build_directory(name, verbose=False))
    except Exception:  # an API that moved: announce the compile anyway
        own = None
    why = stale_build(own) if own is not None and any(own.glob("*.so")) else "missing"
    if why is None:
        return
    reason = "" if why == "missing" else f"; the build in {own} was made by {why}"
    progress(f"compiling colbert-ai's C++ extension {name} (~30-60 s): none is shared yet for this torch, Python and "
             f"compiler in {folder.parent}{reason}; every venv with the same three will use it; compiler output: {log}")


def stale_build(folder: Path) -> str | None:
    """Why torch will compile extension `folder` again although its library is there: its build.ninja was
    written for another torch installation (torch's include path differs, and ninja then rebuilds); None when it
    was not."""
    import re

    from torch.utils.cpp_extension import include_paths

    try:
        text = (folder / "build.ninja").read_text(errors="replace")
    except OSError:
        return None
    here = include_paths()[0]
    if here in text:
        return None
    found = re.search(r"-isystem (\S+?)/include\b", text)
    return f"another torch installation ({found.group(1) if found else 'another include path'}; this one: " \
           f"{here.removesuffix('/include')})"
