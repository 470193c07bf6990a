"""Inject, replay, compare and locate on real divergences made on purpose in one process.

Each source run differs from the target by one controlled cause (perturb=...); `locate` must name the
artifact that cause first changes, and injecting it must make everything downstream equal."""

from __future__ import annotations

import pytest

from colbert_swap.compare.runs import compare_runs
from colbert_swap.errors import UserError
from colbert_swap.index_files import index_differences
from colbert_swap.replay import compact, replay
from colbert_swap.stages import DAG
from colbert_swap.store import Store
from colbert_swap.tasks.capture import capture
from colbert_swap.tasks.inject import inject
from colbert_swap.tasks.locate import locate
from colbert_swap.tasks.locate import verdict as locate_verdict
from tests.conftest import quiet_progress

CAUSES = {  # perturb preset -> the artifact it changes first (measured on CPU, see README)
    "eager": ["local_sample_embs", "embs"],  # the encoder makes the sample and every chunk (seed post 2)
    "kmeans_seed": ["prenorm_centroids"],
    "normalize_fp16": ["postnorm_centroids"],
}


@pytest.fixture(scope="module")
def runs(tiny_cfg):
    """The target (as the environment is) and one source per cause."""
    out = {"target": capture(tiny_cfg("run=target"), progress=quiet_progress)}
    for preset in [*CAUSES, "sdpa_math", "index_bsize", "no_autocast", "tf32", "no_fp16_reduction", "stable_sort"]:
        out[preset] = capture(tiny_cfg(f"run={preset}", f"perturb={preset}"), progress=quiet_progress)
    return out


def hashes(manifest):
    return {k: r.ref.hash for k, r in manifest.artifacts.items()}


@pytest.mark.parametrize("point", ["local_sample_embs", "sample", "prenorm_centroids", "centroids",
                                   "half_centroids", "embs", "codes", "all_codes", "ivf"])
def test_null_injection_recomputes_the_target_bit_for_bit(runs, tiny_cfg, point):
    cfg = tiny_cfg("reuse=false", "source=target", "target=target")
    store = Store(cfg.store.root)
    target = runs["target"]
    replayed = replay(cfg, store, target, target, [point], label=f"null-{point}")
    downstream = [o for n in DAG.downstream_of(replayed.origin["injected"], 1) for o in n.outputs]
    assert downstream, point
    # recomputed (reuse=false), not copied from the target's records
    assert all(replayed.artifacts[n] is not target.artifacts[n] for n in downstream)
    assert hashes(replayed) == hashes(target)
    assert index_differences(store.run_dir(f"null-{point}") / "index", store.run_dir("target") / "index") == {}


@pytest.mark.parametrize("preset", sorted(CAUSES))
def test_injecting_the_true_cause_makes_everything_downstream_equal(runs, tiny_cfg, preset):
    cfg = tiny_cfg(f"source={preset}", "target=target")
    store = Store(cfg.store.root)
    result = inject(cfg, store, CAUSES[preset], progress=quiet_progress)
    assert result.downstream and not result.before[CAUSES[preset][0]].same
    assert all(result.after[n].same for n in result.downstream), result.verdict
    assert "makes all" in result.verdict and preset in result.verdict
    everything = compare_runs(store, result.replayed, runs[preset], force=True)
    assert everything.diverged() == []  # upstream was already equal; downstream now is too


def test_injecting_downstream_of_the_cause_leaves_divergence(runs, tiny_cfg):
    cfg = tiny_cfg("source=eager", "target=target")
    result = inject(cfg, Store(cfg.store.root), ["half_centroids"], progress=quiet_progress)
    left = [n for n in result.downstream if not result.after[n].same]
    assert "leaves" in result.verdict
    # the target's own bucket cutoffs (and embeddings) still differ from the source's
    assert not result.before["bucket_cutoffs"].same and "residuals.0" in left


@pytest.mark.parametrize("preset", sorted(CAUSES))
def test_locate_names_the_cause(runs, tiny_cfg, preset):
    cfg = tiny_cfg(f"source={preset}", "target=target")
    result = locate(cfg, Store(cfg.store.root), progress=quiet_progress)
    assert [n for g in result["minimal"] for n in compact(g, result["num_chunks"])] == CAUSES[preset]
    assert result["final_cmp"].diverged() == []


def test_locate_with_sdpa_math_finds_the_encoder(runs, tiny_cfg):
    cfg = tiny_cfg("source=sdpa_math", "target=target")
    result = locate(cfg, Store(cfg.store.root), progress=quiet_progress)
    names = [n for g in result["minimal"] for n in g]
    assert names[0] == "local_sample_embs" and set(n.split(".")[0] for n in names) <= {"local_sample_embs", "embs"}
    assert result["final_cmp"].diverged() == []


@pytest.mark.parametrize("preset", ["index_bsize", "no_autocast", "tf32", "no_fp16_reduction"])
def test_a_knob_that_changes_nothing_on_cpu_is_reported_as_such(runs, tiny_cfg, preset):
    cfg = tiny_cfg(f"source={preset}", "target=target")
    result = locate(cfg, Store(cfg.store.root), progress=quiet_progress)
    assert result["minimal"] == [] and result["rounds"][0]["diverged"] == 0
    assert hashes(runs[preset]) == hashes(runs["target"])
    assert "do not diverge: nothing to locate" in locate_verdict(result)


def test_a_stable_sort_reorders_ivf_only(runs, tiny_cfg):
    """The seed post's observation, for real: the codes' sort order differs, the pid-level IVF does not."""
    cfg = tiny_cfg("source=stable_sort", "target=target")
    store = Store(cfg.store.root)
    comparison = compare_runs(store, runs["stable_sort"], runs["target"])
    assert comparison["ivf"].status == "order_only" and comparison["ivf"].mismatches > 0
    assert comparison["ivf_pid"].status == "equal" and comparison["values"].status == "equal"
    assert comparison.diverged() == []
    result = locate(cfg, store, progress=quiet_progress)
    assert result["minimal"] == [] and "except the order of `ivf`" in locate_verdict(result)


def test_unknown_artifact_gets_did_you_mean(runs, tiny_cfg):
    cfg = tiny_cfg("source=eager", "target=target")
    with pytest.raises(UserError, match=r"unknown artifact 'local_sample_emb'.*Did you mean 'local_sample_embs'"):
        inject(cfg, Store(cfg.store.root), ["local_sample_emb"], progress=quiet_progress)


def test_missing_source_names_the_store_and_its_runs(runs, tiny_cfg):
    cfg = tiny_cfg("source=2.0.1", "target=target")
    with pytest.raises(UserError, match=r"run '2.0.1' is not in the store .*runs there: .*eager.*target"):
        inject(cfg, Store(cfg.store.root), ["local_sample_embs"], progress=quiet_progress)


def test_runs_of_different_configs_are_refused_unless_forced(runs, tiny_cfg):
    other = capture(tiny_cfg("run=nbits1", "index.nbits=1"), progress=quiet_progress)
    store = Store(tiny_cfg().store.root)
    with pytest.raises(UserError, match=r"different configs \(index.nbits: 2 vs 1\)"):
        compare_runs(store, runs["target"], other)
    forced = compare_runs(store, runs["target"], other, force=True)
    assert forced["residuals.0"].status == "diverged" and "shape" in forced["residuals.0"].note


def test_a_replay_downstream_of_the_centroids_runs_neither_kmeans_nor_the_encoder(runs, tiny_cfg, monkeypatch):
    import colbert_swap.colbert_env
    import colbert_swap.kmeans

    def forbidden(*args, **kwargs):
        raise AssertionError("this replay must not build the model or run k-means")

    monkeypatch.setattr(colbert_swap.colbert_env, "load_checkpoint", forbidden)
    monkeypatch.setattr(colbert_swap.kmeans, "kmeans", forbidden)
    cfg = tiny_cfg("reuse=false")
    store = Store(cfg.store.root)
    replayed = replay(cfg, store, runs["target"], runs["eager"], ["centroids"], label="no-encoder")
    assert replayed.complete and replayed.artifacts["codes.0"].stage == "codes.0"
