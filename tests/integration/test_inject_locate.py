"""Inject, replay, compare and locate on real divergences made on purpose in one process.

Each source run differs from the target by one controlled cause (perturb=...). Causes that act on every
machine (a planted weight scale, a k-means seed, an fp16 normalize) have known answers: `locate` must name
the artifact the cause first changes, and injecting it must make everything equal. For every other knob,
whose effect depends on the machine's kernels (eager vs SDPA attention, another batch size, a stable
sort), the tests assert what holds everywhere: the located cause contains the first divergence and, once
injected, makes every artifact and every index file equal to the source's; a knob that changes nothing
here is reported as such."""

from __future__ import annotations

import pytest
import torch

from colbert_swap.proof.compare.runs import compare_runs
from colbert_swap.errors import UserError
from colbert_swap.colbert.index_files import index_differences
from colbert_swap.runs.replay import compact, phases, replay
from colbert_swap.colbert.stages import DAG
from colbert_swap.core.store import Store
from colbert_swap.tasks.capture import capture
from colbert_swap.tasks.inject import inject
from colbert_swap.tasks.locate import locate
from colbert_swap.tasks.locate import verdict as locate_verdict
from tests.conftest import quiet_progress

pytestmark = pytest.mark.numerics

CAUSES = {  # causes that act on every machine -> the artifacts they change first, and the located root cause
    "scale_layer": ["local_sample_embs", "embs"],  # the encoder makes the sample and every chunk (seed post 2)
    "kmeans_seed": ["prenorm_centroids"],
    "normalize_fp16": ["postnorm_centroids"],
}
KERNEL_KNOBS = ["eager", "sdpa_math", "index_bsize", "stable_sort"]  # effect depends on the machine's kernels
CUDA_KNOBS = ["no_autocast", "tf32", "no_fp16_reduction"]  # switches of CUDA kernels only


@pytest.fixture(scope="module")
def runs(tiny_cfg):
    """The target (as the environment is) and one source per cause."""
    out = {"target": capture(tiny_cfg("run=target"), progress=quiet_progress)}
    for preset in [*CAUSES, *KERNEL_KNOBS, *CUDA_KNOBS]:
        out[preset] = capture(tiny_cfg(f"run={preset}", f"perturb={preset}"), progress=quiet_progress)
    return out


def hashes(manifest):
    return {k: r.ref.hash for k, r in manifest.artifacts.items()}


@pytest.mark.parametrize("point", ["sample_tokens", "tokens", "local_sample_embs", "sample", "prenorm_centroids", "centroids",
                                   "half_centroids", "embs", "codes", "all_codes", "ivf"])
def test_null_injection_recomputes_the_target_bit_for_bit(runs, tiny_cfg, point):
    cfg = tiny_cfg("reuse=false", "source=target", "target=target")
    store = Store(cfg.store.root)
    target = runs["target"]
    replayed = replay(cfg, store, target, target, [point], label=f"null-{point}")
    downstream = [o for n in DAG.downstream_of(replayed.origin.injected, 1, phases(target)) for o in n.outputs]
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
    cfg = tiny_cfg("source=scale_layer", "target=target")
    store = Store(cfg.store.root)
    result = inject(cfg, store, ["half_centroids"], progress=quiet_progress)
    left = [n for n in result.downstream if not result.after[n].same]
    assert "leaves" in result.verdict
    # the target's own embeddings (a model with other weights) still differ from the source's
    assert not result.before["embs.0"].same and "residuals.0" in left
    assert "embs.0" in result.whole.differing and "Outside what the injection reaches" in result.verdict
    assert "index files of target+half_centroids@scale_layer and scale_layer differ" in result.verdict
    assert result.whole.index == index_differences(store.run_dir(result.replayed.label) / "index",
                                                   store.run_dir("scale_layer") / "index") != {}


def test_a_verdict_about_the_downstream_artifacts_also_speaks_of_the_whole_run(runs, tiny_cfg):
    """Injecting local_sample_embs cannot fix embs.0, which no stage downstream of it makes: whatever happens
    downstream, the verdict must say the run as a whole is not explained; with embs too, it is."""
    cfg = tiny_cfg("source=scale_layer", "target=target")
    store = Store(cfg.store.root)
    result = inject(cfg, store, ["local_sample_embs"], progress=quiet_progress)
    assert "embs.0" not in result.downstream and "embs.0" in result.whole.differing
    assert "does not explain the whole run" in result.verdict and "`embs.0`" in result.verdict
    assert "index files of target+local_sample_embs@scale_layer and scale_layer differ" in result.verdict
    both = inject(cfg, store, ["local_sample_embs", "embs"], progress=quiet_progress)
    assert both.whole.differing == () and both.whole.index == {}
    assert "explains the whole divergence" in both.verdict and "are identical" in both.verdict


def test_downstream_equal_but_the_run_not_says_both(runs, tiny_cfg):
    """eager vs SDPA: where their embs.0 differ without flipping a code downstream of local_sample_embs, the
    verdict says both 'all downstream identical' and 'not the whole run' (measured first)."""
    cfg = tiny_cfg("source=eager", "target=target")
    store = Store(cfg.store.root)
    result = inject(cfg, store, ["local_sample_embs"], progress=quiet_progress)
    if result.before["embs.0"].same or not all(result.after[n].same for n in result.downstream):
        pytest.skip("on this machine eager's embs.0 is equal to SDPA's, or its differences reach the codes")
    assert "makes all" in result.verdict and "does not explain the whole run" in result.verdict


def test_injecting_between_runs_that_never_differed_says_so(runs, tiny_cfg):
    capture(tiny_cfg("run=twin"), progress=quiet_progress)
    cfg = tiny_cfg("source=twin", "target=target")
    result = inject(cfg, Store(cfg.store.root), ["local_sample_embs"], progress=quiet_progress)
    assert result.before.diverged() == [] and result.whole.identical
    assert result.verdict.startswith("Runs twin and target do not differ")
    assert "nothing for the injection to explain" in result.verdict and "are identical" in result.verdict
    assert "makes all" not in result.verdict


@pytest.mark.parametrize("preset", sorted(CAUSES))
def test_locate_names_the_cause(runs, tiny_cfg, preset):
    cfg = tiny_cfg(f"source={preset}", "target=target")
    result = locate(cfg, Store(cfg.store.root), progress=quiet_progress)
    assert [n for g in result.minimal for n in compact(g, result.num_chunks)] == CAUSES[preset]
    assert result.final_cmp.diverged() == [] and result.whole.index == {}
    # a model-caused divergence: the embeddings, from tokens that are equal in both runs
    assert ("Tokens equal (`sample_tokens`, `tokens`)" in locate_verdict(result)) == (preset == "scale_layer")


@pytest.mark.parametrize("preset", KERNEL_KNOBS + CUDA_KNOBS)
def test_locate_explains_every_knob_whatever_the_machine(runs, tiny_cfg, preset):
    """What holds on every machine: a knob that changes nothing is reported as such; one that changes
    something is located to a set that holds the first divergence and, injected, makes everything equal."""
    cfg = tiny_cfg(f"source={preset}", "target=target")
    store = Store(cfg.store.root)
    before = compare_runs(store, runs[preset], runs["target"])
    result = locate(cfg, store, progress=quiet_progress)
    if not before.diverged():
        assert result.minimal == [] and "do not diverge" in locate_verdict(result)
        return
    located = [n for g in result.minimal for n in g]
    assert set(before.first_diverged()) <= set(located)
    assert result.final_cmp.diverged() == [] and result.whole.index_data == {}  # the replay keeps its own
    # config (another index_bsize is recorded in plan.json and metadata.json), every tensor file is equal
    assert "makes every artifact identical" in locate_verdict(result)


def test_a_config_that_only_the_index_files_record_is_told_apart_from_data(runs, tiny_cfg):
    """Another index_bsize is written into plan.json and metadata.json on every machine, whatever it does to
    the tensors: the index sentence says which it is."""
    from colbert_swap.proof.compare.runs import whole_run
    from colbert_swap.proof.report.proof import index_sentence

    store = Store(tiny_cfg().store.root)
    comparison = compare_runs(store, runs["index_bsize"], runs["target"])
    whole = whole_run(store, comparison, runs["index_bsize"], runs["target"])
    assert whole.index["plan.json"] == whole.index["metadata.json"] == "config: index_bsize 8 vs 16"
    assert "plan.json" not in whole.index_data
    if not whole.index_data:
        assert "hold the same data; only the config they record differs" in index_sentence(whole)


@pytest.mark.parametrize("preset", ["eager", "sdpa_math"])
def test_another_attention_is_located_in_the_encoder(runs, tiny_cfg, preset):
    cfg = tiny_cfg(f"source={preset}", "target=target")
    store = Store(cfg.store.root)
    if not compare_runs(store, runs[preset], runs["target"]).diverged():
        pytest.skip(f"perturb={preset} gives a run bitwise equal to SDPA's on this machine "
                    f"({torch.backends.cpu.get_cpu_capability()}): nothing to locate")
    result = locate(cfg, store, progress=quiet_progress)
    names = [n for g in result.minimal for n in g]
    assert names[0] == "local_sample_embs" and set(n.split(".")[0] for n in names) <= {"local_sample_embs", "embs"}


@pytest.mark.parametrize("preset", CUDA_KNOBS)
def test_a_cuda_only_switch_changes_nothing_on_the_cpu(runs, preset):
    if torch.cuda.is_available():
        pytest.skip("on a GPU these switches act")
    assert hashes(runs[preset]) == hashes(runs["target"])


def test_a_stable_sort_reorders_ivf_only(runs, tiny_cfg):
    """The seed post's observation, for real: the codes' sort order differs, the pid-level IVF does not."""
    cfg = tiny_cfg("source=stable_sort", "target=target")
    store = Store(cfg.store.root)
    comparison = compare_runs(store, runs["stable_sort"], runs["target"])
    if comparison["ivf"].status == "equal":
        pytest.skip("on this machine codes.sort() happened to keep ties in order: nothing to reorder")
    assert comparison["ivf"].status == "order_only" and comparison["ivf"].mismatches > 0
    assert comparison["ivf_pid"].status == "equal" and comparison["values"].status == "equal"
    assert comparison.diverged() == []
    result = locate(cfg, store, progress=quiet_progress)
    assert result.minimal == [] and "except the order of `ivf`" in locate_verdict(result)
    assert result.whole.index == {}  # colbert-ai's files hold ivf_pid, not ivf: the index is the same


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
    import colbert_swap.colbert.infra
    import colbert_swap.colbert.kmeans

    def forbidden(*args, **kwargs):
        raise AssertionError("this replay must not build the model or run k-means")

    monkeypatch.setattr(colbert_swap.colbert.infra, "load_checkpoint", forbidden)
    monkeypatch.setattr(colbert_swap.colbert.kmeans, "kmeans", forbidden)
    cfg = tiny_cfg("reuse=false")
    store = Store(cfg.store.root)
    replayed = replay(cfg, store, runs["target"], runs["eager"], ["centroids"], label="no-encoder")
    assert replayed.complete and replayed.artifacts["codes.0"].stage == "codes.0"


def test_a_later_replay_reuses_what_an_earlier_one_computed_on_the_same_inputs(runs, tiny_cfg, monkeypatch):
    """A locate's second replay (local_sample_embs + embs) feeds k-means the same sample as its first
    (local_sample_embs): it takes the first replay's centroids instead of clustering again, and the result is
    what a replay that reuses nothing computes."""
    import colbert_swap.colbert.kmeans

    cfg = tiny_cfg("source=scale_layer", "target=target")
    store = Store(cfg.store.root)
    first = replay(cfg, store, runs["target"], runs["scale_layer"], ["local_sample_embs"], label="reuse-first")

    def forbidden(*args, **kwargs):
        raise AssertionError("k-means ran again on inputs an earlier replay had clustered")

    with monkeypatch.context() as patch:
        patch.setattr(colbert_swap.colbert.kmeans, "kmeans", forbidden)
        second = replay(cfg, store, runs["target"], runs["scale_layer"], ["local_sample_embs", "embs"],
                        label="reuse-second")
    assert second.artifacts["prenorm_centroids"].ref.hash == first.artifacts["prenorm_centroids"].ref.hash
    fresh = replay(tiny_cfg("reuse=false"), store, runs["target"], runs["scale_layer"], ["local_sample_embs", "embs"],
                   label="reuse-none")
    assert hashes(second) == hashes(fresh) == hashes(runs["scale_layer"])


def test_a_null_injection_says_what_it_proves_and_a_missing_search_artifact_says_what_makes_it(runs, tiny_cfg):
    from colbert_swap.errors import UserError

    cfg = tiny_cfg("source=target", "target=target")
    store = Store(cfg.store.root)
    result = inject(cfg, store, ["embs"], progress=quiet_progress)
    assert result.verdict.startswith("Null injection of `embs` into target (source = target): the replay recomputes "
                                     f"all {len(result.downstream)} downstream artifacts bit for bit")
    assert "do not differ" not in result.verdict
    with pytest.raises(UserError, match=r"has no artifact 'Q': it has not been searched yet; search it first: "
                                        r"python -m colbert_swap task=search run=target"):
        inject(cfg, store, ["Q"], progress=quiet_progress)
