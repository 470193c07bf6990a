"""Every bad value on the command line is one `error:` line and exit status 2, Hydra's own errors included."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("args, says", [
    (["index.nbits=abc"], "error: index.nbits=abc: Value 'abc' of type 'str' could not be converted to Integer"),
    (["perturb.stable_sort=maybe"], "error: perturb.stable_sort=maybe: Value 'maybe' is not a valid bool"),
    (["-m", "index.nbits=2,abc"], "error: index.nbits=abc: "),  # each value of a sweep, before any job starts
    (["index.nbits=[1"], "error: index.nbits=[1: no viable alternative at input '[1'"),
])
def test_a_value_hydra_cannot_merge_is_one_error_line(tmp_path, args, says):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "colbert_swap", *args, f"store.root={tmp_path}",
                           f"hydra.run.dir={tmp_path}/run", f"hydra.sweep.dir={tmp_path}/sweep"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(says) and done.stderr.count("\n") == 1, done.stderr
    assert done.stdout == "" and not (tmp_path / "sweep").exists()  # nothing ran
