"""What a run's process loaded (colbert_swap/env/loaded.py): the snapshot of this process, the four answers of
`classify`, `gpu_used` on hand-made manifests, and the manifest field that keeps the snapshot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from colbert_swap.env.loaded import (INSTALLED_ONLY, LOADED_NOT_USED, RAN, SYSTEM, UNKNOWN, classify, gpu_used,
                                 is_gpu_package, merge, snapshot)
from colbert_swap.env.provenance import env_id, environment
from colbert_swap.core.store.blobs import BlobRef
from colbert_swap.core.store.manifest import ArtifactRecord, RunManifest
from colbert_swap.core.store.origin import Capture

REPO = Path(__file__).resolve().parents[2]
linux = pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="shared libraries are read from /proc")


@linux
def test_the_snapshot_maps_torchs_shared_libraries_to_torch():
    got = snapshot()
    assert got["packages"]["torch"] in (torch.__version__, torch.__version__.split("+")[0])
    assert "libtorch_cpu.so" in got["libraries"]["torch"]
    assert any(name.startswith("libc.so") for name in got["libraries"][SYSTEM])
    assert all(n == n.lower() and "_" not in n and "." not in n for n in got["packages"])  # normalized
    assert "colbert-swap" not in got["packages"] and "colbert-swap" not in got["libraries"]
    assert got["cuda_initialized"] is False or torch.cuda.is_available()
    assert json.loads(json.dumps(got)) == got


def test_an_imported_pure_python_package_is_loaded_only_once_imported():
    script = ("import torch, json, sys\nfrom colbert_swap.env.loaded import snapshot\nassert 'transformers' not in "
              "sys.modules\nbefore = snapshot()['packages']\nimport transformers\n"
              "print(json.dumps([before, snapshot()['packages']]))")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    before, after = json.loads(out.stdout.splitlines()[-1])
    assert "transformers" not in before and "torch" in before
    assert after["transformers"] and "huggingface-hub" in after  # normalized: huggingface_hub's dist name


def test_the_snapshot_of_this_process_has_what_it_imported():
    import transformers  # noqa: F401

    assert "transformers" in snapshot()["packages"]


def test_gpu_packages():
    assert all(map(is_gpu_package, ("nvidia-cudnn-cu12", "NVIDIA_cublas_cu12", "triton", "pytorch-triton",
                                    "cuda-python", "cupy-cuda12x", "faiss-gpu", "faiss-gpu-cu12")))
    assert not any(map(is_gpu_package, ("torch", "faiss-cpu", "numpy", "sympy")))


CPU_RUN = {"packages": {"torch": "2.13.0", "nvidia-cudnn-cu12": "9.1.0", "transformers": "4.57.6"},
           "libraries": {"torch": ["libtorch_cpu.so"], "nvidia-cudnn-cu12": ["libcudnn.so.9"]},
           "cuda_initialized": False}
OTHER = {"packages": {"torch": "2.1.0"}, "libraries": {"torch": ["libtorch_cpu.so"]}, "cuda_initialized": False}


def test_classify_gives_each_of_its_four_answers():
    assert classify("Transformers", CPU_RUN, OTHER, False) == RAN  # loaded by one run's process
    assert classify("torch", CPU_RUN, OTHER, True) == RAN
    assert classify("nvidia_cudnn_cu12", CPU_RUN, OTHER, False) == LOADED_NOT_USED  # torch's CUDA wheel
    assert classify("nvidia-cudnn-cu12", CPU_RUN, OTHER, True) == RAN  # the GPU computed: it may be a cause
    assert classify("sympy", CPU_RUN, OTHER, False) == INSTALLED_ONLY
    assert classify("sympy", CPU_RUN, None, False) == UNKNOWN  # a run captured before the record was kept
    assert classify("sympy", None, None, True) == UNKNOWN
    assert classify("torch", None, CPU_RUN, False) == RAN  # the run with a record loaded it
    # a CUDA library is never offered as a cause on runs without a GPU, record or not
    assert classify("nvidia-cublas-cu12", None, None, False) == INSTALLED_ONLY
    assert classify("triton", CPU_RUN, OTHER, False) == INSTALLED_ONLY


def test_merge_keeps_what_each_process_loaded():
    got = merge(CPU_RUN, {**OTHER, "libraries": {"torch": ["libc10.so"], SYSTEM: ["libc.so.6"]}})
    assert got["libraries"]["torch"] == ["libc10.so", "libtorch_cpu.so"] and got["libraries"][SYSTEM] == ["libc.so.6"]
    assert got["packages"]["torch"] == "2.1.0" and "transformers" in got["packages"]
    assert merge(None, OTHER) is OTHER


def _manifest(device: str | None = "cpu", gpu: str | None = None, loaded: dict | None = None) -> RunManifest:
    provenance = {**environment(), "gpu": gpu}
    record = ArtifactRecord(BlobRef("00" * 16, "tensor", "float16", (2, 3), device), "embs.0",
                            env=env_id(provenance))
    return RunManifest("a", {}, "0" * 16, provenance, Capture(), {"embs.0": record}, loaded=loaded,
                       environments={env_id(provenance): provenance})


def test_gpu_used_reads_devices_environments_and_the_snapshot():
    assert not gpu_used(_manifest())
    assert not gpu_used(_manifest(device=None))  # a JSON artifact
    assert gpu_used(_manifest(device="cuda"))
    assert gpu_used(_manifest(gpu="NVIDIA H200"))  # computed where torch saw a GPU (its blobs moved to the CPU)
    assert gpu_used(_manifest(loaded={**CPU_RUN, "cuda_initialized": True}))


def test_the_manifest_keeps_the_snapshot_and_reads_older_manifests(tmp_path):
    m = _manifest(loaded=CPU_RUN)
    m.save(tmp_path / "m.json")
    assert RunManifest.load(tmp_path / "m.json").loaded == CPU_RUN
    old = _manifest()
    assert "loaded" not in old.to_json()  # runs without it are written as before
    old.save(tmp_path / "old.json")
    assert RunManifest.load(tmp_path / "old.json").loaded is None
