"""What a run's process actually loaded: its shared libraries and modules, mapped to their packages.

    here = snapshot()                    # {"packages": {"torch": "2.13.0", ...}, "libraries": {"torch":
                                         #  ["libtorch_cpu.so", ...], "(system)": ["libc.so.6", ...]},
                                         #  "cuda_initialized": False}
    classify("nvidia-cudnn-cu12", run_a.loaded, run_b.loaded, gpu_used(run_a) or gpu_used(run_b))
                                         # "loaded, not used": torch's CUDA wheel maps it at import

Two environments differ in many installed packages; only those a process loaded can have computed
anything. A capture records `snapshot()` at its end (store/run.py: `RunManifest.loaded`), after its stages
ran, so every library the computation mapped is there. Shared libraries come from /proc/self/maps (Linux;
elsewhere none), modules from `sys.modules` (a pure-Python package such as transformers is loaded when
imported); a file is mapped to the installed distribution whose RECORD lists it, "(system)" when none does
(libc, Python's own extension modules, a C++ extension compiled into a cache directory).
"""

from __future__ import annotations

import csv
import os
import sys
from importlib import metadata

from colbert_swap.env.venvs import normalize

SYSTEM = "(system)"  # the owner of a shared library that no installed distribution lists
SELF = "colbert-swap"  # never a cause of a difference between two of its own runs
_GPU_PREFIXES = ("nvidia-", "cuda-", "triton", "cupy", "pytorch-triton", "faiss-gpu")
RAN, LOADED_NOT_USED, INSTALLED_ONLY, UNKNOWN = "ran", "loaded, not used", "installed only", "unknown"


def is_gpu_package(name: str) -> bool:
    """A package that computes only on a GPU: CUDA's libraries, triton, cupy, faiss-gpu.

    >>> [is_gpu_package(n) for n in ("nvidia_cudnn_cu12", "triton", "faiss-gpu-cu12", "faiss-cpu", "torch")]
    [True, True, True, False, False]
    """
    return normalize(name).startswith(_GPU_PREFIXES)


def snapshot() -> dict:
    """What this process has loaded now: {"packages": {name: version}, "libraries": {name or "(system)":
    [sorted basenames of its mapped .so files]}, "cuda_initialized": whether torch initialized CUDA here}."""
    libraries = _mapped_libraries()
    modules = _module_files()
    owners = _owners(set(libraries) | modules)
    packages: dict[str, str] = {}
    by_owner: dict[str, set[str]] = {}
    named: dict[int, tuple[str, str]] = {}  # id(distribution) -> (name, version): its METADATA read once
    for path, dist in owners.items():
        if id(dist) not in named:
            meta = dist.metadata
            named[id(dist)] = normalize(meta["Name"] or ""), meta["Version"]
        name, version = named[id(dist)]
        if not name or name == SELF:
            continue
        packages[name] = version
        if path in libraries:
            by_owner.setdefault(name, set()).add(os.path.basename(path))
    system = {os.path.basename(p) for p in libraries if p not in owners}
    if system:
        by_owner[SYSTEM] = system
    torch = sys.modules.get("torch")
    cuda = bool(torch is not None and getattr(getattr(torch, "cuda", None), "is_initialized", lambda: False)())
    return {"packages": dict(sorted(packages.items())),
            "libraries": {k: sorted(v) for k, v in sorted(by_owner.items())}, "cuda_initialized": cuda}


def merge(old: dict | None, new: dict) -> dict:
    """The union of two snapshots of one run (a resumed capture: what each of its processes loaded).

    >>> merge({"packages": {"a": "1"}, "libraries": {"a": ["x.so"]}, "cuda_initialized": False},
    ...       {"packages": {"b": "2"}, "libraries": {"a": ["y.so"]}, "cuda_initialized": False})
    {'packages': {'a': '1', 'b': '2'}, 'libraries': {'a': ['x.so', 'y.so']}, 'cuda_initialized': False}
    """
    if not old:
        return new
    libraries = {k: set(v) for k, v in (old.get("libraries") or {}).items()}
    for name, files in new["libraries"].items():
        libraries.setdefault(name, set()).update(files)
    return {"packages": dict(sorted({**(old.get("packages") or {}), **new["packages"]}.items())),
            "libraries": {k: sorted(v) for k, v in sorted(libraries.items())},
            "cuda_initialized": bool(old.get("cuda_initialized")) or new["cuda_initialized"]}


def classify(name: str, loaded_a: dict | None, loaded_b: dict | None, gpu_used: bool) -> str:
    """Whether package `name`, which differs between two runs' environments, can have caused a difference:
    "ran" (a process of either run loaded it), "loaded, not used" (a GPU package loaded by runs that used
    no GPU), "installed only" (neither process loaded it), "unknown" (a run has no record: captured before
    colbert_swap kept one). A GPU package on runs that used no GPU is never "ran" nor "unknown": it computed
    nothing, whatever was recorded. `loaded_a`/`loaded_b` are snapshots (`RunManifest.loaded`).

    >>> cpu = {"packages": {"torch": "2.13.0", "nvidia-cudnn-cu12": "9.1"}, "libraries": {}}
    >>> [classify(n, cpu, cpu, False) for n in ("Torch", "nvidia_cudnn_cu12", "sympy")]
    ['ran', 'loaded, not used', 'installed only']
    >>> classify("sympy", cpu, None, False), classify("torch", cpu, None, False)
    ('unknown', 'ran')
    """
    name = normalize(name)
    records = [r for r in (loaded_a, loaded_b) if r is not None]
    loaded = any(name in {normalize(n) for n in (*(r.get("packages") or {}), *(r.get("libraries") or {}))}
                 for r in records)
    if is_gpu_package(name) and not gpu_used:
        return LOADED_NOT_USED if loaded else INSTALLED_ONLY
    if loaded:
        return RAN
    return INSTALLED_ONLY if len(records) == 2 else UNKNOWN


def gpu_used(manifest) -> bool:
    """Whether any artifact of a run (a RunManifest) was computed on a GPU: one stored from a CUDA tensor
    (its BlobRef.device), one computed in an environment with a GPU (its provenance `gpu`: colbert-ai indexes
    on the GPU whenever torch sees one, and index.device=cpu is refused there), or a process that
    initialized CUDA (the snapshot's `cuda_initialized`). Many stages return CPU tensors, so a GPU run's
    blobs alone do not tell."""
    if any((r.ref.device or "cpu") != "cpu" for r in manifest.artifacts.values()):
        return True
    if (manifest.loaded or {}).get("cuda_initialized"):
        return True
    envs = {manifest.computed_in(name) for name in manifest.artifacts}
    return any((manifest.environments.get(env) or (manifest.provenance if env == manifest.env else {})).get("gpu")
               for env in envs)


def _mapped_libraries() -> set[str]:
    """The real paths of the shared libraries mapped into this process (none where /proc is not there)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return set()
    paths = set()
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or not fields[5].startswith("/"):
            continue
        path = fields[5].removesuffix(" (deleted)")
        base = os.path.basename(path)
        if base.endswith(".so") or ".so." in base:
            paths.add(path)
    return paths


def _module_files() -> set[str]:
    """The real paths of the files of every imported module."""
    real: dict[str, str] = {}  # directory -> its real path: one realpath per directory
    out = set()
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if not isinstance(file, str) or not file:
            continue
        directory, base = os.path.split(os.path.abspath(file))
        if directory not in real:
            real[directory] = os.path.realpath(directory)
        out.add(os.path.join(real[directory], base))
    return out


def _owners(paths: set[str]) -> dict[str, metadata.Distribution]:
    """path -> the installed distribution that lists it. One pass over every distribution's RECORD, read
    as text and matched against `paths` relative to the distribution's directory (`Distribution.files`
    builds an object per file: 0.7 s for a venv with torch, against 0.03 s)."""
    owners: dict[str, metadata.Distribution] = {}
    relative: dict[str, dict[str, str]] = {}  # a distribution's real directory -> {relative path: path}
    for dist in metadata.distributions():
        base = os.path.realpath(str(dist.locate_file("")))
        if base not in relative:
            prefix = base.rstrip(os.sep) + os.sep
            relative[base] = {p[len(prefix):].replace(os.sep, "/"): p for p in paths if p.startswith(prefix)}
        record = dist.read_text("RECORD")
        if record is None:  # installed without one (an egg-info's installed-files.txt): `files` knows
            found = (os.path.realpath(str(dist.locate_file(f))) for f in dist.files or ())
        else:
            wanted = relative[base]
            found = (wanted.get(e) or (wanted.get(os.path.normpath(e).replace(os.sep, "/")) if ".." in e else None)
                     for e in _record_paths(record))
        for path in found:
            if path in paths:
                owners.setdefault(path, dist)
    return owners


def _record_paths(record: str) -> list[str]:
    """The first column of a RECORD (a CSV file: a path with a comma or a quote is quoted)."""
    if '"' not in record:
        return [line.split(",", 1)[0] for line in record.splitlines()]
    return [row[0] for row in csv.reader(record.splitlines()) if row]
