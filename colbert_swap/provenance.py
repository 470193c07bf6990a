"""The environment that produced a run: the facts that decide whether two runs can differ."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from importlib import metadata

import torch

# Environment variables that torch, its BLAS or cuBLAS read and that can change what a kernel computes.
ENV_VARS = ("ATEN_CPU_CAPABILITY", "CUBLAS_WORKSPACE_CONFIG", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
            "CUDA_VISIBLE_DEVICES", "NVIDIA_TF32_OVERRIDE", "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE", "MKL_CBWR",
            "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
# The variable colbert_swap's environment specs set, so that a run names the spec it was captured in.
SPEC_VAR = "COLBERT_SWAP_ENV"


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict:
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
        "cpu_capability": capability,
        "cpu": _cpu_model(),
        "torch_threads": torch.get_num_threads(),
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
COMPUTE_KEYS = ("python", "torch", "cuda", "cudnn", "gpu", "cpu_capability", "cpu", "torch_threads",
                "transformers", "tokenizers", "colbert-ai", "faiss", "numpy")
# Recorded before `cpu` and `tokenizers` were: a run without them is not held against them.
_LATER_KEYS = ("cpu", "tokenizers")


def fingerprint(provenance: dict) -> dict:
    """The part of a run's provenance that decides its numbers (COMPUTE_KEYS and ENV_VARS)."""
    env = {k: v for k, v in (provenance.get("env") or {}).items() if k in ENV_VARS and k != "CUDA_VISIBLE_DEVICES"}
    return {**{k: provenance.get(k) for k in COMPUTE_KEYS if k not in _LATER_KEYS or k in provenance}, "env": env}


def env_id(provenance: dict) -> str:
    """A short name for an environment: the hash of its fingerprint (`cpu-2.13.0-1a2b3c4d`)."""
    fp = fingerprint(provenance)
    digest = hashlib.sha256(json.dumps(fp, sort_keys=True, default=str).encode()).hexdigest()[:8]
    where = "cuda" if provenance.get("gpu") else "cpu"
    return f"{where}-{str(provenance.get('torch') or '?').split('+')[0]}-{digest}"


def changed_keys(provenance: dict, env: dict) -> list[str]:
    """The fingerprint keys on which a run's recorded environment differs from `env` (ENV_VARS as `env.X`)."""
    a, b = fingerprint(provenance), fingerprint(env)
    keys = [k for k in a if k != "env" and k in b and a[k] != b[k]]
    keys += [f"env.{k}" for k in sorted(set(a["env"]) | set(b["env"])) if a["env"].get(k) != b["env"].get(k)]
    return keys


def describe_changes(provenance: dict, env: dict, limit: int = 4) -> str:
    """'torch 2.1.0 vs 2.13.0, cpu_capability AVX2 vs AVX512' for a message."""
    def value(p: dict, key: str):
        return (p.get("env") or {}).get(key[4:]) if key.startswith("env.") else p.get(key)

    keys = changed_keys(provenance, env)
    shown = [f"{k} {value(provenance, k)} vs {value(env, k)}" for k in keys[:limit]]
    return ", ".join(shown) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def short(provenance: dict) -> str:
    """One line naming an environment in a report: its spec, torch, device and CPU kernels."""
    device = provenance.get("gpu") or f"CPU {provenance.get('cpu_capability') or '?'}"
    spec = provenance.get("environment")
    return (f"{spec}: " if spec else "") + f"torch {provenance.get('torch')}, transformers " \
        f"{provenance.get('transformers')}, {device}"
