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


def test_every_label_the_tool_derives_can_be_typed_back_unquoted():
    """`task=rm run=LABEL` with a label copied from a report: Hydra's grammar takes it as it is."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from colbert_swap.runs.replay import replay_label
    from colbert_swap.tasks.drill import drill_label, ops_label

    labels = [replay_label("torch-2.1.0", ["local_sample_embs", "embs"], "torch-2.0.1"), drill_label("cpu-default"),
              ops_label("cpu-default", "bert.encoder.layer.0.attention.self"), "torch-2.0.1+isolate.prenorm_centroids"]
    for label in labels:
        parsed = OverridesParser.create().parse_overrides([f"run={label}"])[0]
        assert parsed.value() == label, label


def test_a_value_with_an_equals_sign_says_to_quote_it(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "colbert_swap", "task=rm", "run=a+ops=bert.x", f"store.root={tmp_path}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "quote" in done.stderr and """'run="a+ops=bert.x"'""" in done.stderr, done.stderr
