"""SIGKILL a capture at several points: running the same command again resumes and ends bit-identical."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from colbert_swap.core.store import Store
from colbert_swap.tasks import verify
from colbert_swap.tasks.capture import capture
from tests.conftest import TINY, make_cfg, quiet_progress

REPO = Path(__file__).resolve().parents[2]


def artifacts_stored(manifest: Path) -> int:
    try:
        return len(json.loads(manifest.read_text())["artifacts"])
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.parametrize("kill_after", [3, 12, 22])
def test_a_killed_capture_resumes_bit_identical(tmp_path, kill_after):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    args = [sys.executable, "-m", "colbert_swap", "run=killed", f"store.root={tmp_path}", *TINY]
    manifest = tmp_path / "runs" / "killed" / "manifest.json"
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while artifacts_stored(manifest) < kill_after and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    stored = artifacts_stored(manifest)
    assert kill_after <= stored < 29, "killed part-way"
    assert not json.loads(manifest.read_text())["complete"]
    again = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "resuming run 'killed'" in again.stderr
    clean = capture(make_cfg(f"store.root={tmp_path}", *TINY, "run=clean"), progress=quiet_progress)
    killed = Store(tmp_path).load("killed")
    assert killed.complete
    assert {k: r.ref.hash for k, r in killed.artifacts.items()} == {k: r.ref.hash for k, r in clean.artifacts.items()}
    assert verify.problems(Store(tmp_path))[0] == []


def _children(pid: int) -> list[int]:
    """Every live descendant of `pid` (from /proc)."""
    out, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            children = (task / "children")
            if children.exists():
                found = [int(c) for c in children.read_text().split()]
                out += found
                frontier += found
    return out


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc (Linux)")
@pytest.mark.parametrize("how", ["ctrl-c", "kill"])
def test_an_interrupt_is_one_line_and_leaves_no_process_behind(tmp_path, how):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) while forked tokenizer workers run:
    one line on stderr, exit 130, no traceback from the process or its workers (theirs would go to the run's
    log), no worker left alive, and the same command resumes. SIGKILL of the capture alone: its workers end
    with it (no orphan)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    # 480 passages in 16 chunks: the signal comes while chunks are still to encode (at 120 passages the index
    # phase took 0.2 s, and a signal that came after its end was a capture that exited 0)
    args = [sys.executable, "-m", "colbert_swap", "run=ctrl-c", f"store.root={tmp_path}",
            *[o for o in TINY if not o.startswith("collection.num_passages=")], "collection.num_passages=480",
            "index.tokenizer_processes=2", "index.chunksize=30"]
    manifest = tmp_path / "runs" / "ctrl-c" / "manifest.json"
    # SIGINT as a terminal's process has it: a test run started in the background by a shell without job control
    # (`pytest &`, CI runners) ignores SIGINT and passes that on, and Python then leaves it ignored
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    workers: list[int] = []
    while proc.poll() is None and time.monotonic() < deadline and not (artifacts_stored(manifest) >= 3 and workers):
        workers = _children(proc.pid)
        time.sleep(0.02)
    assert proc.poll() is None and workers, "the tokenizer workers were forked before the capture ended"
    if how == "kill":
        proc.kill()
        proc.communicate(timeout=120)
    else:
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err[-3000:]
        assert err.rstrip().endswith("interrupted; run the same command to resume") and "Traceback" not in err
        log = (tmp_path / "runs" / "ctrl-c" / "capture.log").read_text()
        assert "KeyboardInterrupt" not in log, log[-3000:]  # not from a worker either
    time.sleep(2)
    alive = [w for w in workers if Path(f"/proc/{w}").exists() and "zombie" not in
             Path(f"/proc/{w}/status").read_text().lower()]
    assert alive == []
    again = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "resuming run 'ctrl-c'" in again.stderr


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc (Linux)")
def test_a_command_run_in_an_environment_ends_with_the_process_that_started_it(tmp_path):
    """A study killed (SIGKILL: no cleanup of its own) leaves no capture running in its environments: the
    command `run_in` started ends with it (PR_SET_PDEATHSIG)."""
    starter = (f"from pathlib import Path; from colbert_swap.env.venvs import load_spec, run_in; import sys; "
               f"run_in(load_spec('here'), sys.executable, ['run=orphan', 'store.root={tmp_path}', "
               f"'collection.num_passages=50000'], Path('{tmp_path}/log'))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-c", starter], cwd=REPO, env=env)
    deadline = time.monotonic() + 120
    children: list[int] = []
    while not children and time.monotonic() < deadline:
        children = _children(proc.pid)
        time.sleep(0.05)
    assert children, "run_in started its command"
    time.sleep(1)
    proc.kill()
    proc.wait(timeout=60)
    deadline = time.monotonic() + 10  # the capture of 50,000 passages alone would take minutes
    while any(Path(f"/proc/{c}").exists() for c in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [c for c in children if Path(f"/proc/{c}").exists()
            and "zombie" not in Path(f"/proc/{c}/status").read_text().lower()]
    for c in left:  # a failed assertion leaves nothing running either
        os.kill(c, signal.SIGKILL)
    assert left == []
