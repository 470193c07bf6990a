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
