"""A capture records what its process loaded (colbert_swap/env/loaded.py) in its manifest, at its end; a capture
that died records what it had loaded, and its resume adds its own process's."""

from __future__ import annotations

import dataclasses

import pytest

from colbert_swap.env.loaded import gpu_used
from colbert_swap.colbert.stages import DAG
from colbert_swap.core.store import Store
from colbert_swap.tasks.capture import capture
from tests.conftest import quiet_progress


class Crash(Exception):
    pass


def test_a_capture_records_what_its_process_loaded(tiny_cfg):
    index = next(i for i, s in enumerate(DAG.stages) if s.name == "codes")
    original = DAG.stages[index]

    def crash(**kwargs):
        raise Crash("codes")

    crash.__name__ = "codes"
    DAG.stages[index] = dataclasses.replace(original, fn=crash)
    try:
        with pytest.raises(Crash):
            capture(tiny_cfg("run=loaded"), progress=quiet_progress)
    finally:
        DAG.stages[index] = original
    partial = Store(tiny_cfg().store.root).load("loaded")
    assert not partial.complete and "torch" in partial.loaded["packages"]

    manifest = capture(tiny_cfg("run=loaded"), progress=quiet_progress)
    assert manifest.complete
    loaded = Store(tiny_cfg().store.root).load("loaded").loaded
    assert loaded == manifest.loaded
    assert "torch" in loaded["packages"] and "transformers" in loaded["packages"]
    assert "colbert-ai" in loaded["packages"] and "colbert-swap" not in loaded["packages"]
    assert any(name.startswith("libtorch") for name in loaded["libraries"]["torch"])
    if not manifest.provenance.get("gpu"):
        assert not gpu_used(manifest) and loaded["cuda_initialized"] is False
