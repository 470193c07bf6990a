"""Config is not environment: a difference at a stage whose inputs are equal is attributed to the config key
the two runs differ in and the stage reads, by name; only where no such key differs is it the environment's."""

from __future__ import annotations

from colbert_swap.core.store import Store
from colbert_swap.tasks.capture import capture
from colbert_swap.tasks.compare import compare
from tests.conftest import quiet_progress


def test_a_kmeans_backend_difference_is_named_not_blamed_on_the_environment(tiny_cfg):
    capture(tiny_cfg("run=cfg-faiss"), progress=quiet_progress)
    capture(tiny_cfg("run=cfg-torch", "index.kmeans_backend=torch"), progress=quiet_progress)
    cfg = tiny_cfg("task=compare", "source=cfg-faiss", "target=cfg-torch", "force=true")
    result = compare(cfg, Store(cfg.store.root))
    assert result.artifacts.first_diverged() == ["prenorm_centroids"]
    assert "index.kmeans_backend: 'faiss' vs 'torch'" in result.artifacts.config_diffs
    assert ("its input artifacts are identical in both runs, and the runs' configs differ in "
            "index.kmeans_backend: 'faiss' vs 'torch', which the stage reads: the difference is the config's, "
            "not the environment's") in result.verdict
    assert "depends on the environment" not in result.verdict


def test_a_perturb_knob_is_config_too_and_equal_configs_name_no_key(tiny_cfg):
    capture(tiny_cfg("run=env-a"), progress=quiet_progress)
    capture(tiny_cfg("run=env-b", "perturb=kmeans_seed"), progress=quiet_progress)
    cfg = tiny_cfg("task=compare", "source=env-a", "target=env-b")
    result = compare(cfg, Store(cfg.store.root))
    # a perturb knob is config too: named, with the key the k-means stage reads
    assert result.artifacts.first_diverged() == ["prenorm_centroids"]
    assert "the runs' configs differ in perturb." in result.verdict
    # the same config in both runs: no key to name, the environment (here: none differs, so they are equal)
    again = compare(tiny_cfg("task=compare", "source=env-a", "target=cfg-faiss"), Store(cfg.store.root))
    assert again.artifacts.config_diffs == () and not again.artifacts.diverged()
