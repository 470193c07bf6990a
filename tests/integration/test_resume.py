"""A capture that dies mid-way resumes from the last finished stage and ends bit-identical."""

from __future__ import annotations

import dataclasses

import pytest

from colbert_swap.colbert.stages import DAG
from colbert_swap.core.store import Store
from colbert_swap.tasks.capture import capture
from tests.conftest import quiet_progress


class Crash(Exception):
    pass


@pytest.mark.parametrize("victim", ["sample", "codes", "ivf_pid"])
def test_a_crashed_capture_resumes_and_matches(tiny_cfg, victim):
    clean = capture(tiny_cfg("run=resume-clean"), progress=quiet_progress)
    index = next(i for i, s in enumerate(DAG.stages) if s.name == victim)
    original = DAG.stages[index]

    def crash(**kwargs):
        raise Crash(victim)

    crash.__name__ = victim  # the node keeps its name; only its body dies
    DAG.stages[index] = dataclasses.replace(original, fn=crash)
    try:
        with pytest.raises(Crash):
            capture(tiny_cfg(f"run=resume-{victim}"), progress=quiet_progress)
    finally:
        DAG.stages[index] = original
    partial = Store(tiny_cfg().store.root).load(f"resume-{victim}")
    assert not partial.complete and "num_partitions" in partial.artifacts
    assert not any(o.replace(".N", ".0") in partial.artifacts for o in original.outputs)
    messages = []
    resumed = capture(tiny_cfg(f"run=resume-{victim}"), progress=messages.append)
    assert any("resuming" in m for m in messages)
    assert resumed.complete
    assert {k: r.ref.hash for k, r in resumed.artifacts.items()} == {k: r.ref.hash for k, r in clean.artifacts.items()}
