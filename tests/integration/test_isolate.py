"""task=isolate: one stage run here on the source's own inputs tells whether the stage itself depends
on the environment (here: this invocation's perturb knobs). The source's model has one layer scaled
(perturb=scale_layer), a difference that acts on every machine."""

from __future__ import annotations

import pytest

from colbert_swap.errors import UserError
from colbert_swap.core.store import Store
from colbert_swap.tasks.capture import capture
from colbert_swap.tasks.isolate import isolate
from tests.conftest import quiet_progress


pytestmark = pytest.mark.numerics


@pytest.fixture(scope="module")
def scaled(tiny_cfg):
    return capture(tiny_cfg("run=scale_layer", "perturb=scale_layer"), progress=quiet_progress)


@pytest.mark.parametrize("stage,depends", [("local_sample_embs", True), ("embs", True),
                                           ("prenorm_centroids", False), ("codes", False), ("ivf_pid", False)])
def test_isolate_tells_which_stage_depends_on_the_environment(scaled, tiny_cfg, stage, depends):
    cfg = tiny_cfg("source=scale_layer", f"stage={stage}")  # here: the model as built; there: one layer scaled
    source, isolated, comparison = isolate(cfg, Store(cfg.store.root), progress=quiet_progress)
    assert bool(comparison.diverged()) is depends
    outputs = {r.name for r in comparison.results}
    inputs = set(isolated.artifacts) - outputs
    assert inputs and all(isolated.artifacts[i].ref == source.artifacts[i].ref for i in inputs)  # fed A's inputs


def test_isolate_in_the_same_environment_reproduces_the_source(scaled, tiny_cfg):
    cfg = tiny_cfg("source=scale_layer", "stage=local_sample_embs", "perturb=scale_layer")
    _, _, comparison = isolate(cfg, Store(cfg.store.root), progress=quiet_progress)
    assert comparison.diverged() == [] and [r.name for r in comparison.results] == ["local_sample_embs",
                                                                                       "sample_doclens"]


def test_isolate_unknown_stage_gets_did_you_mean(scaled, tiny_cfg):
    cfg = tiny_cfg("source=scale_layer", "stage=prenorm_centroid")
    with pytest.raises(UserError, match=r"Did you mean 'prenorm_centroids'"):
        isolate(cfg, Store(cfg.store.root), progress=quiet_progress)
