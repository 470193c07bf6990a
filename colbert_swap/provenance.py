"""The environment that produced a run: the facts that decide whether two runs can differ."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

import torch

ENV_VARS = ("ATEN_CPU_CAPABILITY", "CUBLAS_WORKSPACE_CONFIG", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
            "CUDA_VISIBLE_DEVICES", "NVIDIA_TF32_OVERRIDE")


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
        "torch_threads": torch.get_num_threads(),
        "transformers": _version("transformers"),
        "colbert-ai": _version("colbert-ai"),
        "faiss": faiss_version,
        "numpy": _version("numpy"),
        "safetensors": _version("safetensors"),
        "colbert_swap": _version("colbert-swap"),
        "env": {k: os.environ[k] for k in ENV_VARS if k in os.environ},
        "argv": list(sys.argv),
    }


def default_run_label() -> str:
    """This environment's torch version without its local tag: 2.1.0, not 2.1.0+cu121."""
    return torch.__version__.split("+")[0]


# Provenance keys that must match for a partial run (capture or replay) to be resumed in this environment.
RESUME_KEYS = ("python", "torch", "cuda", "gpu", "cpu_capability", "transformers", "colbert-ai", "faiss")


def changed_keys(provenance: dict, env: dict) -> list[str]:
    """The RESUME_KEYS on which a run's recorded environment differs from `env`."""
    return [k for k in RESUME_KEYS if provenance.get(k) != env.get(k)]
