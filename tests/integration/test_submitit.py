"""task=env_capture, one environment per Hydra job, through hydra-submitit-launcher's local executor: the same
command runs on a SLURM cluster with `hydra/launcher=submitit_slurm`. Cheap environments (this interpreter
with other config knobs), so nothing is downloaded; the jobs meet in one store."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from colbert_swap.core.store import Store
from tests.conftest import TINY

REPO = Path(__file__).resolve().parents[2]
pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install hydra-submitit-launcher")


def test_env_capture_runs_one_submitit_job_per_environment_into_one_store(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "TORCH_EXTENSIONS_DIR": str(tmp_path / "ext")}
    sweep = subprocess.run([sys.executable, "-m", "colbert_swap", "-m", "task=env_capture",
                            "environment=here,here-kmeans-seed", "hydra/launcher=submitit_local",
                            "hydra.launcher.timeout_min=30", f"store.root={tmp_path}/store",
                            f"env_cache={tmp_path}/envs", f"hydra.sweep.dir={tmp_path}/sweep", *TINY],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert sweep.returncode == 0, sweep.stdout[-2000:] + sweep.stderr[-3000:]
    store = Store(tmp_path / "store")
    assert store.load("here").complete and store.load("here-kmeans-seed").complete
    assert store.load("here-kmeans-seed").config["perturb"]["kmeans_seed"] is not None  # the spec's override
    assert store.load("here").config["perturb"]["kmeans_seed"] is None
    # Each environment ran as a submitit job of its own (a process with its own job id): a result and a log each.
    results = sorted((tmp_path / "sweep" / ".submitit").glob("*/*_result.pkl"))
    assert len({p.parent for p in results}) == 2
    # colbert-ai's extension was compiled in the folder of this interpreter's torch and Python, once for both jobs.
    key = f"torch-{version('torch')}-py{sys.version_info.major}.{sys.version_info.minor}"
    assert [p.name for p in (tmp_path / "ext").iterdir()] == [key]
    assert (tmp_path / "ext" / key / "segmented_maxsim_cpp" / "build.ninja").exists()
    logs = "".join(p.read_text() for p in (tmp_path / "sweep" / ".submitit").glob("*/*_log.out"))
    assert "run 'here' is captured in environment 'here'" in logs
    assert "run 'here-kmeans-seed' is captured in environment 'here-kmeans-seed'" in logs
