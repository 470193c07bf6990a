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
    # colbert-ai's extension was compiled in the folder of this interpreter's torch and Python, once for both jobs,
    # and kept in the shared folder, where every venv with this torch, Python and compiler finds it.
    key = f"torch-{version('torch')}-py{sys.version_info.major}.{sys.version_info.minor}"
    assert sorted(p.name for p in (tmp_path / "ext").iterdir()) == sorted([key, "shared"])
    assert (tmp_path / "ext" / key / "segmented_maxsim_cpp" / "build.ninja").exists()
    assert len(list((tmp_path / "ext" / "shared" / "segmented_maxsim_cpp").glob("*/segmented_maxsim_cpp.so"))) == 1
    logs = "".join(p.read_text() for p in (tmp_path / "sweep" / ".submitit").glob("*/*_log.out"))
    assert "run 'here' is captured in environment 'here'" in logs
    assert "run 'here-kmeans-seed' is captured in environment 'here-kmeans-seed'" in logs


def test_jobs_without_a_shared_store_export_and_one_import_gathers_them_for_the_matrix(tmp_path):
    """The recipe for machines that share no file system: each submitit job captures into a store of its own and
    exports a bundle; one import gathers the bundles; task=matrix compares what the jobs captured, capturing nothing.
    (colbert-ai's extension: the session's, compiled already; the test above checks where a job compiles it.)"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    cli = lambda *args, timeout=900: subprocess.run([sys.executable, "-m", "colbert_swap", *args, *TINY],  # noqa: E731
                                                    cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    sweep = cli("-m", "task=env_capture", "environment=here,here-kmeans-seed", "hydra/launcher=submitit_local",
                "hydra.launcher.timeout_min=30", f"store.root={tmp_path}/store-" + "${env_capture.environment}",
                f"env_capture.export_to={tmp_path}/bundles", f"env_cache={tmp_path}/envs",
                f"hydra.sweep.dir={tmp_path}/sweep")
    assert sweep.returncode == 0, sweep.stdout[-2000:] + sweep.stderr[-3000:]
    for name in ("here", "here-kmeans-seed"):  # each job's own store holds its run alone
        assert Store(tmp_path / f"store-{name}").runs() == [name]
    assert sorted(p.name for p in (tmp_path / "bundles").iterdir()) == [
        "here-kmeans-seed.colbert-swap.zip", "here.colbert-swap.zip"]

    gathered = cli("task=import", f"bundle={tmp_path}/bundles", f"store.root={tmp_path}/gathered")
    assert gathered.returncode == 0, gathered.stderr[-3000:]
    assert "imported run 'here'" in gathered.stdout and "imported run 'here-kmeans-seed'" in gathered.stdout
    store = Store(tmp_path / "gathered")
    for name in ("here", "here-kmeans-seed"):  # the very manifests the jobs wrote
        assert store.manifest_path(name).read_bytes() == Store(tmp_path / f"store-{name}").manifest_path(name).read_bytes()

    matrix = cli("task=matrix", "envs=[here,here-kmeans-seed]", "matrix.retrieval=false",
                 f"store.root={tmp_path}/gathered", f"env_cache={tmp_path}/envs", f"out_dir={tmp_path}/matrix")
    assert matrix.returncode == 0, matrix.stdout[-2000:] + matrix.stderr[-3000:]
    assert "run 'here' is in the store already" in matrix.stderr
    assert "run 'here-kmeans-seed' is in the store already" in matrix.stderr
    assert "prenorm_centroids" in (tmp_path / "matrix" / "report.md").read_text()  # the seed's k-means, located
