"""Replays and sweeps under SIGKILL and under parallel workers: the store stays consistent and the rerun
ends bit-identical to an undisturbed run.

- a replay (`inject=...`) killed part-way resumes from its last completed stage;
- a Hydra sweep killed in its second job: the same command again finds job 0 done, resumes job 1, runs job 2;
- a joblib sweep with 4 worker processes writing into one store.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from colbert_swap.runs.replay import replay
from colbert_swap.core.store import Store
from colbert_swap.tasks import verify
from colbert_swap.tasks.capture import capture
from tests.conftest import TINY, make_cfg, quiet_progress

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("kill-sweeps")
    capture(make_cfg(f"store.root={root}", *TINY, "run=target"), progress=quiet_progress)
    capture(make_cfg(f"store.root={root}", *TINY, "run=eager", "perturb=eager"), progress=quiet_progress)
    return root


def command(root: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "colbert_swap", *args, "source=eager", "target=target", f"store.root={root}", *TINY]


def stored(manifest: Path) -> int:
    try:
        return len(json.loads(manifest.read_text())["artifacts"])
    except (OSError, ValueError, KeyError):
        return 0


def kill_when(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the command ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)


def hashes(manifest) -> dict[str, str]:
    return {k: r.ref.hash for k, r in manifest.artifacts.items()}


def clean_replay(root: Path, names: list[str], label: str):
    store = Store(root)
    return replay(make_cfg(f"store.root={root}", *TINY), store, store.load("target"), store.load("eager"), names,
                  label=label)


@pytest.mark.parametrize("extra", [3, 9])
def test_a_killed_replay_resumes_bit_identical(pair, extra):
    label = "target+local_sample_embs@eager"
    manifest = pair / "runs" / label / "manifest.json"
    if manifest.parent.exists():
        import shutil

        shutil.rmtree(manifest.parent)
    proc = subprocess.Popen(command(pair, "inject=local_sample_embs"), cwd=REPO, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = [0]

    def ready() -> bool:
        n = stored(manifest)
        first[0] = first[0] or n  # the artifacts copied from the target and the injected one
        return bool(first[0]) and n >= first[0] + extra

    kill_when(proc, ready)
    assert not json.loads(manifest.read_text())["complete"]
    again = subprocess.run(command(pair, "inject=local_sample_embs"), cwd=REPO, env=ENV, capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resuming replay {label!r}" in again.stderr
    resumed = Store(pair).load(label)
    assert resumed.complete and hashes(resumed) == hashes(clean_replay(pair, ["local_sample_embs"], "clean-lse"))
    assert verify.problems(Store(pair))[0] == []


def test_a_killed_sweep_reruns_to_the_same_summary(pair):
    sweep = pair / "sweeps" / "killed"
    args = command(pair, "-m", "inject=local_sample_embs,centroids,codes", f"hydra.sweep.dir={sweep}")
    second = pair / "runs" / "target+centroids@eager" / "manifest.json"
    proc = subprocess.Popen(args, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_when(proc, lambda: stored(second) > 0)  # job 0 done, job 1 under way
    assert (sweep / "0" / "report.json").exists() and not (sweep / "2").exists()
    again = subprocess.run(args, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "already in the store" in again.stderr  # job 0's replay is not redone
    summary = json.loads((sweep / "summary.json").read_text())
    assert [j["injected"] for j in summary["jobs"]] == [["local_sample_embs"], ["centroids"], ["codes"]]
    assert summary["problems"] == []
    store = Store(pair)
    for name in ("centroids", "codes"):
        assert hashes(store.load(f"target+{name}@eager")) == hashes(clean_replay(pair, [name], f"clean-{name}"))
    assert verify.problems(store)[0] == []


def test_four_parallel_sweep_workers_share_one_store(pair):
    points = ["prenorm_centroids", "postnorm_centroids", "half_centroids", "bucket_cutoffs", "residuals", "ivf"]
    sweep = pair / "sweeps" / "joblib4"
    out = subprocess.run(command(pair, "-m", f"inject={','.join(points)}", "hydra/launcher=joblib",
                                 "hydra.launcher.n_jobs=4", f"hydra.sweep.dir={sweep}"),
                         cwd=REPO, env=ENV, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((sweep / "summary.json").read_text())
    assert sorted(n for j in summary["jobs"] for n in j["injected"]) == sorted(points)
    store = Store(pair)
    problems, orphans, checked = verify.problems(store)
    assert problems == [] and checked > 0
    for name in points:
        parallel = store.load(f"target+{name}@eager")
        assert parallel.complete and hashes(parallel) == hashes(clean_replay(pair, [name], f"seq-{name}"))


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (read from /proc: children of children too)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def test_a_killed_parallel_sweep_leaves_no_worker_running(pair):
    """SIGKILL of the command (nothing of ours can clean up) while its joblib workers replay: every worker ends."""
    sweep = pair / "sweeps" / "killed-joblib"
    proc = subprocess.Popen(command(pair, "-m", "inject=local_sample_embs,embs", "hydra/launcher=joblib",
                                    "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}"),
                            cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started = pair / "runs" / "target+embs@eager" / "manifest.json"
    workers: set[int] = set()

    def ready() -> bool:
        workers.update(descendants(proc.pid))
        return stored(started) > 0  # a worker is computing a replay

    kill_when(proc, ready)
    assert workers, "the sweep started no worker process"
    deadline = time.monotonic() + 60
    alive = workers
    while alive and time.monotonic() < deadline:
        alive = {pid for pid in workers if Path(f"/proc/{pid}").exists()
                 and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"}
        time.sleep(0.2)
    assert not alive, f"worker processes {sorted(alive)} outlived the killed sweep"
