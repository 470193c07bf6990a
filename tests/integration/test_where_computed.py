"""A run is computed in one environment and says which: replays never mix two, searches encode a run's
queries where (and as) the run was made. The "other environment" is this interpreter with
ATEN_CPU_CAPABILITY=default (another set of CPU kernels, read when torch loads: a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from colbert_swap.core.dag import INDEXING
from colbert_swap.errors import UserError
from colbert_swap.env.provenance import env_id, environment
from colbert_swap.runs.replay import replay
from colbert_swap.runs.search import ElsewhereError
from colbert_swap.colbert.stages import DAG
from colbert_swap.core.store import Store
from colbert_swap.tasks import search as search_task
from colbert_swap.tasks.capture import capture
from tests.conftest import TINY, make_cfg, quiet_progress

REPO = Path(__file__).resolve().parents[2]


def cli(root: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-m", "colbert_swap", *args, f"store.root={root}", *TINY], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("where")
    here = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    elsewhere = {**here, "ATEN_CPU_CAPABILITY": "default"}
    cli(root, elsewhere, "run=elsewhere")  # another environment, no spec to get back to it
    cli(root, here, "task=env_capture", "environment=cpu-default")  # another environment, from a spec
    capture(make_cfg(f"store.root={root}", *TINY, "run=target"), progress=quiet_progress)
    return Store(root)


def test_runs_record_their_environments(store):
    if os.environ.get("ATEN_CPU_CAPABILITY"):
        pytest.skip("this process runs with ATEN_CPU_CAPABILITY set: it is not the machine's default environment")
    elsewhere, target = store.load("elsewhere"), store.load("target")
    assert elsewhere.env != target.env == env_id(environment())
    assert elsewhere.provenance["env"]["ATEN_CPU_CAPABILITY"] == "default"
    assert store.load("cpu-default").provenance["environment"] == "cpu-default"  # the spec is named
    assert all(elsewhere.computed_in(n) == elsewhere.env for n in elsewhere.artifacts)


def test_a_replay_of_a_run_from_elsewhere_recomputes_everything_downstream_here(store):
    if os.environ.get("ATEN_CPU_CAPABILITY"):
        pytest.skip("this process runs with ATEN_CPU_CAPABILITY set: it is not the machine's default environment")
    cfg = make_cfg(f"store.root={store.root}", *TINY)
    target, source = store.load("elsewhere"), store.load("target")
    said = []
    replayed = replay(cfg, store, target, source, ["prenorm_centroids"], progress=said.append)
    downstream = {o for n in DAG.downstream_of(["prenorm_centroids"], 1, INDEXING) for o in n.outputs}
    here = env_id(environment())
    assert all(replayed.computed_in(n) == here for n in downstream)  # none reused from the other environment
    assert replayed.computed_in("prenorm_centroids") == source.env  # the injected one: where it was made
    upstream = set(replayed.artifacts) - downstream - {"prenorm_centroids"}
    assert upstream and all(replayed.computed_in(n) == target.env for n in upstream)
    assert any("computed in another environment" in m and "recomputed here" in m for m in said)
    assert set(replayed.environments) == {here, target.env, source.env}
    from colbert_swap.proof.report.proof import computed_where

    table = computed_where(replayed)
    assert "computed by this run" in table and "taken from its target" in table and "injected from target" in table


def test_a_search_encodes_each_runs_queries_in_its_own_environment(store, tmp_path):
    if os.environ.get("ATEN_CPU_CAPABILITY"):
        pytest.skip("this process runs with ATEN_CPU_CAPABILITY set: it is not the machine's default environment")
    cfg = make_cfg(f"store.root={store.root}", *TINY, "task=search", "source=cpu-default", "target=target",
                   "search.num_queries=8", f"out_dir={tmp_path}")
    assert search_task.run(cfg) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["computed_in"]["cpu-default"] == store.load("cpu-default").env  # searched in the spec's process
    assert report["computed_in"]["target"] == store.load("target").env
    assert store.load("cpu-default").artifacts["ranked_pids"].env == store.load("cpu-default").env
    assert "## Where each side was searched" in (tmp_path / "report.md").read_text()


def test_a_run_from_an_unknown_environment_is_not_searched_here(store):
    if os.environ.get("ATEN_CPU_CAPABILITY"):
        pytest.skip("this process runs with ATEN_CPU_CAPABILITY set: it is not the machine's default environment")
    cfg = make_cfg(f"store.root={store.root}", *TINY, "source=elsewhere", "target=target", "search.num_queries=4")
    with pytest.raises(ElsewhereError, match=r"run 'elsewhere' was computed in another environment "
                                             r"\(.*env.ATEN_CPU_CAPABILITY default vs None\); its queries must be"):
        search_task.search(cfg, store, progress=quiet_progress)
    assert issubclass(ElsewhereError, UserError)
