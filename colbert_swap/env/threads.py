"""The threads a process computes with, and setting them on purpose (`perturb.threads=N`).

faiss's k-means, torch's kernels and the BLAS libraries split their work by thread count, and some of them
give other numbers with another count (faiss's k-means on an AVX2 EPYC: 1 vs 2 threads, other centroids).
A launcher limits them without saying so: a Hydra joblib sweep's workers run with OMP_NUM_THREADS=1 and
the other variables of THREAD_VARS set to cores // jobs. So every run records them (`facts`, in
provenance["threads"]), the counts that decide numbers are part of its environment id (`counts`), and
`limited(n)` sets them all for a stage's computation.

    >>> sorted(counts({"torch": 2, "faiss": 1, "mkl": 2, "affinity": 2, "blas": [
    ...     {"user_api": "blas", "num_threads": 2}, {"user_api": "openmp", "num_threads": 1}]}).items())
    [('blas', [2]), ('faiss', 1), ('mkl', 2), ('torch', 2)]

Every API is guarded: importable and measurable under torch 1.13.1, without faiss or threadpoolctl.
"""

from __future__ import annotations

import os
import warnings
from contextlib import ExitStack, contextmanager
from typing import Iterator, Optional

# The variables that set a thread count, as joblib's loky workers set them (joblib/_parallel_backends.py
# ParallelBackendBase.MAX_NUM_THREADS_VARS, each to max(cpu_count // n_jobs, 1) unless the parent set it),
# and GOTO_NUM_THREADS (GotoBLAS/OpenBLAS).
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "BLIS_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "NUMBA_NUM_THREADS", "GOTO_NUM_THREADS")
# What else a joblib worker gets: TBB's inter-process coordination ("1"), which caps TBB's threads.
WORKER_VARS = THREAD_VARS + ("ENABLE_IPC",)
# The names of the counts that decide numbers (`counts`), and how a sentence calls them, in that order.
COUNT_NAMES = {"faiss": "faiss/OpenMP", "torch": "torch", "mkl": "MKL", "blas": "BLAS"}


def facts() -> dict:
    """This process's thread counts and parallel libraries, measured in the calling thread:

    torch (intra-op) and torch_interop, omp and mkl (torch's OpenMP and MKL, from torch.__config__.parallel_info),
    faiss (faiss.omp_get_max_threads), affinity (the CPUs this process may run on) and cpu_count, and blas:
    every BLAS and OpenMP library loaded (threadpoolctl: user_api, internal_api, version, num_threads,
    architecture, threading_layer, library: the file's name, package: the folder of site-packages it ships in)."""
    import torch

    parallel = torch_parallel()
    return {"torch": _call(torch.get_num_threads),
            "torch_interop": _call(getattr(torch, "get_num_interop_threads", None)),
            "omp": parallel.get("omp_threads"), "mkl": parallel.get("mkl_threads"), "faiss": _faiss_threads(),
            "affinity": _affinity(), "cpu_count": os.cpu_count(), "blas": libraries()}


def counts(threads: Optional[dict]) -> dict:
    """The thread counts that decide numbers (part of the environment id): torch's intra-op threads, its MKL's,
    faiss's OpenMP threads, and the distinct counts of the BLAS libraries loaded (a set: which BLAS libraries
    a process has loaded depends on what it imported, their count on the variables and the limits)."""
    threads = threads or {}
    blas = {lib.get("num_threads") for lib in threads.get("blas") or () if lib.get("user_api") == "blas"}
    return {"torch": threads.get("torch"), "mkl": threads.get("mkl"), "faiss": threads.get("faiss"),
            "blas": sorted(n for n in blas if n is not None)}


def libraries() -> list[dict]:
    """threadpoolctl's view of the BLAS and OpenMP libraries loaded ([] without threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    try:
        with warnings.catch_warnings():  # e.g. "Intel OpenMP and LLVM OpenMP loaded at the same time"
            warnings.simplefilter("ignore")
            info = threadpool_info()
    except Exception:  # noqa: BLE001 - a fact for reports, never a reason to fail a run
        return []
    keys = ("user_api", "internal_api", "version", "num_threads", "architecture", "threading_layer")
    out = [{**{k: lib.get(k) for k in keys}, "library": os.path.basename(lib.get("filepath") or ""),
            "package": _package(lib.get("filepath") or "")} for lib in info]
    return sorted(out, key=lambda lib: (str(lib["user_api"]), str(lib["internal_api"]), lib["library"]))


def _package(path: str) -> Optional[str]:
    """The folder of site-packages a library file ships in (`torch`, `faiss_cpu.libs`, `numpy.libs`), else
    the folder it is in.

    >>> _package("/v/lib/python3.11/site-packages/torch/lib/libgomp.so.1"), _package("/usr/lib/libgomp.so.1")
    ('torch', 'lib')
    """
    parts = path.replace(os.sep, "/").split("/")
    for i, part in enumerate(parts[:-1]):
        if part in ("site-packages", "dist-packages") and i + 1 < len(parts) - 1:
            return parts[i + 1]
    return parts[-2] if len(parts) > 1 and parts[-2] else None


def torch_parallel() -> dict:
    """torch.__config__.parallel_info() parsed: backend (ATen's: OpenMP, native, TBB), openmp (its version),
    omp_threads, mkl (its version), mkl_threads, mkldnn (oneDNN's version); the keys it does not print are left out.

    >>> sorted(parse_parallel_info('''ATen/Parallel:
    ... 	at::get_num_threads() : 2
    ... OpenMP 201511 (a.k.a. OpenMP 4.5)
    ... 	omp_get_max_threads() : 2
    ... Intel(R) oneAPI Math Kernel Library Version 2024.2-Product Build 20240605 for Intel(R) 64 architecture
    ... 	mkl_get_max_threads() : 1
    ... Intel(R) MKL-DNN v3.12.0 (Git Hash 80afa71049cd69a3df32adcccb623b12cd7baa22)
    ... ATen parallel backend: OpenMP''').items())
    [('backend', 'OpenMP'), ('mkl', '2024.2-Product Build 20240605'), ('mkl_threads', 1), ('mkldnn', 'v3.12.0'), \
('omp_threads', 2), ('openmp', '201511 (a.k.a. OpenMP 4.5)')]
    """
    try:
        import torch

        return parse_parallel_info(torch.__config__.parallel_info())
    except Exception:  # noqa: BLE001 - an API that moved: say nothing rather than fail
        return {}


def parse_parallel_info(text: str) -> dict:
    out: dict = {}
    for line in text.splitlines():
        s = line.strip()
        key, _, value = s.partition(":")
        if s.startswith("ATen parallel backend"):
            out["backend"] = value.strip()
        elif s.startswith("OpenMP "):
            out["openmp"] = s[len("OpenMP "):].strip()
        elif s.startswith("omp_get_max_threads()"):
            out["omp_threads"] = _int(value)
        elif "Math Kernel Library Version" in s:
            out["mkl"] = s.split("Version", 1)[1].split(" for ")[0].strip()
        elif s.startswith("mkl_get_max_threads()"):
            out["mkl_threads"] = _int(value)
        elif "MKL-DNN" in s or "oneDNN" in s:
            out["mkldnn"] = s.replace("Intel(R)", "").replace("MKL-DNN", "").replace("oneDNN", "").split("(")[0].strip()
    return out


@contextmanager
def limited(n: Optional[int]) -> Iterator[None]:
    """Compute with `n` threads everywhere (perturb.threads): torch's intra-op threads (and its MKL's),
    faiss's OpenMP threads and every BLAS and OpenMP library loaded (threadpoolctl.threadpool_limits), in
    the calling thread; everything as it was afterwards. None: nothing changes."""
    if n is None:
        yield
        return
    import torch

    n = int(n)
    faiss = _faiss()
    before = torch.get_num_threads(), (faiss.omp_get_max_threads() if faiss else None)  # before any limit
    with ExitStack() as stack:
        try:
            from threadpoolctl import threadpool_limits

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                stack.enter_context(threadpool_limits(limits=n))
        except ImportError:
            pass
        try:
            torch.set_num_threads(n)
            if faiss:
                faiss.omp_set_num_threads(n)
            yield
        finally:
            if faiss:
                faiss.omp_set_num_threads(before[1])
            torch.set_num_threads(before[0])


def _faiss():
    try:
        import faiss

        return faiss if hasattr(faiss, "omp_set_num_threads") else None
    except ImportError:
        return None


def _faiss_threads() -> Optional[int]:
    faiss = _faiss()
    return _call(getattr(faiss, "omp_get_max_threads", None)) if faiss else None


def _affinity() -> Optional[int]:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return None


def _call(fn):
    try:
        return fn() if fn is not None else None
    except Exception:  # noqa: BLE001
        return None


def _int(value: str) -> Optional[int]:
    try:
        return int(value.strip())
    except ValueError:
        return None
