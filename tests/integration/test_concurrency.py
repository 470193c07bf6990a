"""Two captures of one run label started at once, and injections of the wrong shape."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from colbert_swap.errors import UserError
from colbert_swap.runs.replay import replay
from colbert_swap.core.store import Store
from colbert_swap.tasks import verify
from colbert_swap.tasks.capture import capture
from tests.conftest import TINY, make_cfg, quiet_progress

REPO = Path(__file__).resolve().parents[2]


def test_two_captures_of_one_label_at_once_leave_one_consistent_run(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    args = [sys.executable, "-m", "colbert_swap", "run=same", f"store.root={tmp_path}", *TINY]
    procs = [subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    assert sum("already captured" in o[1] for o in outs) == 1  # the second waited for the lock, then found it done
    store = Store(tmp_path)
    same = store.load("same")
    assert same.complete and verify.problems(store)[:2] == ([], [])
    here = capture(make_cfg(f"store.root={tmp_path}", *TINY, "run=here"), progress=quiet_progress)
    assert {k: r.ref.hash for k, r in same.artifacts.items()} == {k: r.ref.hash for k, r in here.artifacts.items()}


def test_an_injection_of_another_shape_is_refused(tiny_cfg):
    target = capture(tiny_cfg("run=target"), progress=quiet_progress)
    other = capture(tiny_cfg("run=shorter", "index.doc_maxlen=32"), progress=quiet_progress)
    store = Store(tiny_cfg().store.root)
    with pytest.raises(UserError, match=r"cannot inject 'local_sample_embs': source 'shorter' has float32 \["):
        replay(tiny_cfg(), store, target, other, ["local_sample_embs"])
