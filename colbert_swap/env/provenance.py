"""The environment that produced a run: the facts that decide whether two runs can differ."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import sys
from importlib import metadata

import torch

# Environment variables that torch, faiss, their BLAS, OpenMP or cuBLAS read and that can change what a kernel
# computes: which kernels (ISA, core type), how many threads split the work, how they are placed.
_FIRST_ENV_VARS = ("ATEN_CPU_CAPABILITY", "CUBLAS_WORKSPACE_CONFIG", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                   "CUDA_VISIBLE_DEVICES", "NVIDIA_TF32_OVERRIDE", "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE", "MKL_CBWR",
                   "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
ENV_VARS = _FIRST_ENV_VARS + (
    "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "GOTO_NUM_THREADS", "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "OMP_DYNAMIC", "OMP_PROC_BIND", "OMP_PLACES", "KMP_AFFINITY",
    "KMP_BLOCKTIME", "MKL_DYNAMIC", "MKL_ENABLE_INSTRUCTIONS", "FAISS_OPT_LEVEL",
    "TORCH_CUDNN_V8_API_DISABLED", "CUDA_LAUNCH_BLOCKING")
# Recorded, not part of the environment id: which GPUs are visible, where threads are placed and how long they
# spin change no number (the thread counts themselves are in it: provenance["threads"]).
_NOT_COMPUTED = ("CUDA_VISIBLE_DEVICES", "OMP_PROC_BIND", "OMP_PLACES", "KMP_AFFINITY", "KMP_BLOCKTIME",
                 "CUDA_LAUNCH_BLOCKING")
# The variable colbert_swap's environment specs set, so that a run names the spec it was captured in.
SPEC_VAR = "COLBERT_SWAP_ENV"


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment(threads: int | None = None) -> dict:
    """The facts of this process that decide what it computes (COMPUTE_KEYS, `threads`, ENV_VARS) and more for
    reports. With `threads`, measured while `threads.limited(threads)` holds: the counts a run with
    perturb.threads=N computes its stages with (`run_environment`)."""
    from colbert_swap.env import threads as threads_

    with threads_.limited(threads):
        return _environment(threads_)


def run_environment(config: dict | None) -> dict:
    """The environment a run with this config computes in here: this process's, with its perturb.threads."""
    perturb = (config or {}).get("perturb") or {}
    return environment(perturb.get("threads") if isinstance(perturb, dict) else getattr(perturb, "threads", None))


def _environment(threads_) -> dict:
    cuda = torch.cuda.is_available()
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # torch < 2.1
        capability = None
    try:
        import faiss

        faiss_version = faiss.__version__
    except ImportError:
        faiss_version = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "gpu_count": torch.cuda.device_count(),
        **(_gpu() if cuda else {}),
        "cpu_capability": capability,
        "cpu": _cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "threads": threads_.facts(),
        "torch_parallel": {k: v for k, v in threads_.torch_parallel().items() if not k.endswith("_threads")},
        "transformers": _version("transformers"),
        "tokenizers": _version("tokenizers"),
        "colbert-ai": _version("colbert-ai"),
        "faiss": faiss_version,
        "numpy": _version("numpy"),
        "safetensors": _version("safetensors"),
        "colbert_swap": _version("colbert-swap"),
        "env": {k: os.environ[k] for k in ENV_VARS if k in os.environ},
        "environment": os.environ.get(SPEC_VAR),
        "argv": list(sys.argv),
    }


def _gpu() -> dict:
    """The first GPU's compute capability and memory, the NVIDIA driver's version and the CUDA driver API's."""
    out: dict = {}
    try:
        props = torch.cuda.get_device_properties(0)
        out["gpu_capability"] = f"{props.major}.{props.minor}"
        out["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
    except Exception:  # noqa: BLE001 - a fact for reports
        pass
    out["driver"] = _nvidia_driver()
    out["cuda_driver"] = _cuda_driver()
    return out


def _cuda_driver() -> str | None:
    """The CUDA driver API's version (libcuda's cuDriverGetVersion: 12040 -> '12.4'), None where it cannot be read."""
    try:
        import ctypes

        version = ctypes.c_int()
        if ctypes.CDLL("libcuda.so.1").cuDriverGetVersion(ctypes.byref(version)) != 0:
            return None
        return f"{version.value // 1000}.{version.value % 1000 // 10}"
    except (OSError, AttributeError):  # no libcuda (not Linux, no driver)
        return None


def _nvidia_driver() -> str | None:
    """The NVIDIA kernel driver's version: /proc/driver/nvidia/version, else pynvml when it is installed."""
    try:
        with open("/proc/driver/nvidia/version", encoding="utf-8", errors="replace") as f:
            first = f.readline()  # NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release ...
        first = first.replace("x86_64", "").replace("aarch64", "")
        found = re.search(r"Kernel Module\D*?(\d+\.\d+(?:\.\d+)?)\s", first)
        if found:
            return found.group(1)
    except OSError:
        pass
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # noqa: BLE001 - not installed, or no NVML
        return None


def _cpu_model() -> str | None:
    """The CPU's model name (x86 Linux: /proc/cpuinfo), for reports: kernels differ between CPUs."""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def default_run_label() -> str:
    """This environment's torch version without its local tag: 2.1.0, not 2.1.0+cu121."""
    return torch.__version__.split("+")[0]


# The facts that decide what a stage computes: two environments that agree on all of them compute the
# same numbers (they are the same machine kind, versions, kernels and threads), two that do not may not.
# `threads` enters as its thread counts (threads.counts: torch, MKL, faiss/OpenMP, BLAS), not the whole record.
COMPUTE_KEYS = ("python", "torch", "cuda", "cudnn", "gpu", "cpu_capability", "cpu", "torch_threads", "threads",
                "transformers", "tokenizers", "colbert-ai", "faiss", "numpy")
# Recorded before `cpu`, `tokenizers` and `threads` were: a run without them is not held against them (nor,
# without `threads`, against the variables of ENV_VARS it did not record yet).
_LATER_KEYS = ("cpu", "tokenizers", "threads")


def fingerprint(provenance: dict) -> dict:
    """The part of a run's provenance that decides its numbers (COMPUTE_KEYS and ENV_VARS)."""
    from colbert_swap.env.threads import counts

    known = ENV_VARS if "threads" in provenance else _FIRST_ENV_VARS
    env = {k: v for k, v in (provenance.get("env") or {}).items() if k in known and k not in _NOT_COMPUTED}
    out = {k: provenance.get(k) for k in COMPUTE_KEYS if k not in _LATER_KEYS or k in provenance}
    if "threads" in out:
        out["threads"] = counts(out["threads"])
    return {**out, "env": env}


def env_id(provenance: dict) -> str:
    """A short name for an environment: the hash of its fingerprint (`cpu-2.13.0-1a2b3c4d`)."""
    fp = fingerprint(provenance)
    digest = hashlib.sha256(json.dumps(fp, sort_keys=True, default=str).encode()).hexdigest()[:8]
    where = "cuda" if provenance.get("gpu") else "cpu"
    return f"{where}-{str(provenance.get('torch') or '?').split('+')[0]}-{digest}"


def changed_keys(provenance: dict, env: dict) -> list[str]:
    """The fingerprint keys on which a run's recorded environment differs from `env` (ENV_VARS as `env.X`,
    thread counts as `threads.X`). A key one of them did not record yet is not held against it."""
    a, b = fingerprint(provenance), fingerprint(env)
    keys = []
    for k in a:
        if k == "threads" and k in b:
            keys += [f"threads.{n}" for n in a[k] if a[k][n] != b[k].get(n)]
        elif k != "env" and k in b and a[k] != b[k]:
            keys.append(k)
    known = set(ENV_VARS if "threads" in a and "threads" in b else _FIRST_ENV_VARS)
    keys += [f"env.{k}" for k in sorted((set(a["env"]) | set(b["env"])) & known) if a["env"].get(k) != b["env"].get(k)]
    return keys


def _value(provenance: dict, key: str):
    """A changed key's value (`env.X`: the variable, `threads.X`: the count that decides numbers)."""
    if key.startswith("env."):
        return (provenance.get("env") or {}).get(key[4:])
    if key.startswith("threads."):
        from colbert_swap.env.threads import counts

        value = counts(provenance.get("threads")).get(key[len("threads."):])
        return ("/".join(map(str, value)) or None) if isinstance(value, list) else value
    return provenance.get(key)


def describe_changes(provenance: dict, env: dict, limit: int = 4) -> str:
    """'torch 2.1.0 vs 2.13.0, cpu_capability AVX2 vs AVX512' for a message."""
    keys = changed_keys(provenance, env)
    shown = [f"{k} {_value(provenance, k)} vs {_value(env, k)}" for k in keys[:limit]]
    return ", ".join(shown) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def environment_differences(a: dict, b: dict, labels: tuple[str, str] | None = None, limit: int = 6) -> str:
    """The sentence a report starts with when two runs' environments differ in what decides numbers, "" when
    they do not: 'Runs t1 and t2 differ in their environment: thread counts (faiss/OpenMP 1 vs 2, torch 1 vs 2);
    cpu_capability AVX2 vs AVX512; OMP_NUM_THREADS=1 vs unset. ' (values: a's vs b's; `a`, `b`: provenance).

    >>> t = {"threads": {"torch": 1, "faiss": 1, "blas": []}, "torch_threads": 1, "env": {"OMP_NUM_THREADS": "1"}}
    >>> print(environment_differences(t, {"threads": {"torch": 2, "faiss": 2, "blas": []}, "torch_threads": 2,
    ...                                   "env": {}}))
    The runs differ in their environment: thread counts (faiss/OpenMP 1 vs 2, torch 1 vs 2); OMP_NUM_THREADS=1 vs
    unset.
    >>> environment_differences(t, t)
    ''
    """
    from colbert_swap.env.threads import COUNT_NAMES

    keys = changed_keys(a, b)
    counts = [f"{COUNT_NAMES[n]} {_value(a, k)} vs {_value(b, k)}" for n in COUNT_NAMES for k in [f"threads.{n}"]
              if k in keys]
    if "torch_threads" in keys and "threads.torch" not in keys:  # one of them recorded before `threads`
        counts.append(f"torch {a.get('torch_threads')} vs {b.get('torch_threads')}")
    parts = [f"thread counts ({', '.join(counts)})"] if counts else []
    for k in keys:
        if k.startswith("env."):
            va, vb = _value(a, k), _value(b, k)
            parts.append(f"{k[4:]}{' unset' if va is None else f'={va}'} vs {'unset' if vb is None else vb}")
        elif not k.startswith("threads.") and k != "torch_threads":
            parts.append(f"{k} {_value(a, k)} vs {_value(b, k)}")
    if not parts:
        return ""
    shown = parts[:limit] + ([f"and {len(parts) - limit} more"] if len(parts) > limit else [])
    who = f"Runs {labels[0]} and {labels[1]}" if labels else "The runs"
    return f"{who} differ in their environment: {'; '.join(shown)}. "


def thread_keys(keys: list[str]) -> list[str]:
    """The changed keys (changed_keys) that are thread counts: `threads.X`, `torch_threads` and the variables
    that set a count (threads.THREAD_VARS, as `env.X`)."""
    from colbert_swap.env.threads import THREAD_VARS

    return [k for k in keys if k.startswith("threads.") or k == "torch_threads" or k[4:] in THREAD_VARS
            and k.startswith("env.")]


def differs_only_in_threads(a: dict, b: dict) -> bool:
    """Two environments (provenance dicts) that differ, and only in their thread counts."""
    keys = changed_keys(a, b)
    return bool(keys) and thread_keys(keys) == keys


def short(provenance: dict) -> str:
    """One line naming an environment in a report: its spec, torch, device and CPU kernels."""
    device = provenance.get("gpu") or f"CPU {provenance.get('cpu_capability') or '?'}"
    spec = provenance.get("environment")
    return (f"{spec}: " if spec else "") + f"torch {provenance.get('torch')}, transformers " \
        f"{provenance.get('transformers')}, {device}"
