"""task=matrix / bisect / env_capture driven with cheap environments: this interpreter with other config
knobs (conf/env/here*.yaml), so nothing is downloaded. The real cross-version run is in docs/."""

from __future__ import annotations

import json
import os

import pytest
import re
import subprocess
import sys
from pathlib import Path

from colbert_swap.__main__ import run
from colbert_swap.config import compose
from colbert_swap.store import Store
from tests.conftest import TINY

pytestmark = pytest.mark.numerics
REPO = Path(__file__).resolve().parents[2]


def test_matrix_after_a_joblib_sweep_of_env_captures(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    sweep = subprocess.run([sys.executable, "-m", "colbert_swap", "-m", "task=env_capture",
                            "environment=here,here-scale-layer", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                            f"store.root={tmp_path}", f"hydra.sweep.dir={tmp_path}/sweep", *TINY],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    store = Store(tmp_path)
    assert store.load("here").complete and store.load("here-scale-layer").complete
    assert store.load("here-scale-layer").config["perturb"]["scale"] == 1.0078125  # the spec's override reached it

    out = tmp_path / "report"
    status = run(compose(f"store.root={tmp_path}", *TINY, "task=matrix", "envs=[here,here-scale-layer,here-kmeans-seed]",
                         f"out_dir={out}"))
    assert status == 0
    report = json.loads((out / "report.json").read_text())
    first, second = report["pairs"]
    assert (first["a"], first["b"]) == ("here", "here-scale-layer") and first["index_changed"]
    assert "centroids.pt" in first["index_files_differing"]  # decided from colbert-ai's files themselves
    assert first["first_diverged"] == ["local_sample_embs"] and first["root_cause"] == ["local_sample_embs", "embs"]
    assert second["root_cause"] == ["local_sample_embs", "prenorm_centroids", "embs"]  # weights and seed both
    md = (out / "report.md").read_text()
    assert re.search(r"\| here -> here-scale-layer +\| changed +\|", md) and "`local_sample_embs`, `embs`" in md
    assert "is in the store already" not in md  # progress goes to the console, the report is the table


def _spec(folder: Path, name: str, overrides: list[str]) -> str:
    path = folder / f"{name}.yaml"
    path.write_text(f"name: {name}\npython: current\noverrides: {json.dumps(overrides)}\n")
    return str(path)


def test_bisect_finds_the_first_change_with_fewer_captures(tmp_path):
    specs = [_spec(tmp_path, f"v{i}", [] if i < 3 else ["perturb=scale_layer"]) for i in range(8)]
    out = tmp_path / "report"
    run(compose(f"store.root={tmp_path}/store", *TINY, "task=bisect", f"envs=[{','.join(specs)}]", f"out_dir={out}"))
    report = json.loads((out / "report.json").read_text())
    assert (report["pair"]["a"], report["pair"]["b"]) == ("v2", "v3")
    assert report["pair"]["root_cause"] == ["local_sample_embs", "embs"]
    assert sorted(report["captured"]) == ["v0", "v1", "v2", "v3", "v7"]  # 5 of 8: the ends, then halving
    assert [s[1] for s in report["steps"]] == ["index differs", "index differs", "same index", "same index"]


def test_a_failing_environment_is_reported_and_the_others_kept(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text(f"name: broken\npython: {sys.executable}\nrequirements: [colbert-swap-no-such-package==9.9]\n"
                   "pip_args: [--no-index]\n")
    out = tmp_path / "report"
    status = run(compose(f"store.root={tmp_path}/store", *TINY, "task=matrix", f"envs=[here,{bad},here-kmeans-seed]",
                         f"out_dir={out}", f"env_cache={tmp_path}/envs"))
    assert status == 1
    report = json.loads((out / "report.json").read_text())
    assert report["captured"] == ["here", "here-kmeans-seed"] and list(report["failures"]) == ["broken"]
    assert "environment 'broken': installing its requirements failed" in report["failures"]["broken"]
    assert "colbert-swap-no-such-package" in report["failures"]["broken"]  # pip's own error, quoted
    assert [(p["a"], p["b"]) for p in report["pairs"]] == [("here", "here-kmeans-seed")]
    assert "could not be captured" in (out / "report.md").read_text()
