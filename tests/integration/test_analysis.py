"""Explanations on real runs: token positions as colbert-ai masks them, codes flips named by token, a
relabeled centroid set replayed through the pipeline, and a real k-means seed change."""

from __future__ import annotations

import copy
from collections import Counter

import pytest
import torch

import colbert_swap.core.store
from colbert_swap.proof.compare.runs import compare_runs
from colbert_swap.colbert.resources import Resources
from colbert_swap.proof.analysis.divergence import analyze
from colbert_swap.proof.report.meaning import meaning
from colbert_swap.proof.analysis.tokens import attribute, row_pids, token_map
from colbert_swap.runs.replay import replay, run_config
from colbert_swap.core.store import ArtifactRecord, Store
from colbert_swap.tasks.capture import capture
from tests.conftest import quiet_progress


pytestmark = pytest.mark.numerics


@pytest.fixture(scope="module")
def runs(tiny_cfg):
    out = {"target": capture(tiny_cfg("run=target"), progress=quiet_progress)}
    for preset in ("scale_layer", "eager", "kmeans_seed"):
        out[preset] = capture(tiny_cfg(f"run={preset}", f"perturb={preset}"), progress=quiet_progress)
    return out


@pytest.fixture(scope="module")
def colbert_positions(runs, tiny_cfg, tmp_path_factory):
    """Per global embedding row: (position, token id) as colbert-ai's own tensorize + ColBERT.mask keep them."""
    cfg = tiny_cfg()
    store = Store(cfg.store.root)
    resources = Resources(run_config(cfg, runs["target"]), store, tmp_path_factory.mktemp("res"))
    model = resources.checkpoint
    ids, _ = model.doc_tokenizer.tensorize(resources.corpus.passages)  # one padded batch, [D] inserted
    keep = model.mask(ids, skiplist=model.skiplist)
    rows = [(i, int(ids[p, i])) for p, k in enumerate(keep) for i, kept in enumerate(k) if kept]
    dropped = sum(1 for p, k in enumerate(keep) for i, kept in enumerate(k)
                  if not kept and int(ids[p, i]) != model.pad_token)
    return rows, dropped


def test_token_map_follows_colbert_ai_mask(runs, tiny_cfg, colbert_positions, tmp_path):
    store = Store(tiny_cfg().store.root)
    tokens = token_map(store, runs["target"])
    rows, dropped = colbert_positions
    assert dropped > 0  # punctuation really was masked out
    assert list(zip(tokens.position.tolist(), tokens.token.tolist())) == rows
    assert tokens.tokenized == tokens.passages == 120 and tokens.note == ""


def test_codes_flips_are_named_by_token_and_position(runs, tiny_cfg, colbert_positions, tmp_path):
    store = Store(tiny_cfg().store.root)
    a, b = runs["scale_layer"], runs["target"]
    comparison = compare_runs(store, a, b)
    explained = {e.name: e for e in analyze(store, a, b, comparison)}
    assert set(explained) == set(comparison.diverged())
    codes = explained["codes.0"].data["tokens"]
    flipped = (store.get(a, "codes.0") != store.get(b, "codes.0")).nonzero().flatten()
    rows, _ = colbert_positions
    recount = Counter(rows[i] for i in flipped.tolist()).most_common(1)[0]  # ((position, token), n)
    top = codes["by_token_position"][0]
    assert (top["position"], top["changed"]) == (recount[0][0], recount[1]) and codes["changed"] == flipped.numel()
    pids = row_pids([store.get(b, "doclens.0")])
    assert codes["passages_changed"] == len(set(pids[flipped].tolist()))
    twins = explained["codes.0"].data["near_twins"]
    assert twins["flips"] + explained["codes.0"].data["modulo_matching"]["same_modulo_matching"] == flipped.numel() \
        + explained["codes.0"].data["modulo_matching"]["same_label"]
    markdown, data = meaning(store, a, b, comparison, tmp_path)  # the report draws what the analysis measured
    assert (tmp_path / "explain-embs.0.png").stat().st_size > 0 and data["embs.0"]["figure"] == "explain-embs.0.png"
    assert "![embs.0](explain-embs.0.png)" in markdown
    assert f"at position {top['position']}" in explained["codes.0"].text


def test_eager_attention_changes_embs_by_float16_rounding_only(runs, tiny_cfg, tmp_path):
    store = Store(tiny_cfg().store.root)
    a, b = runs["eager"], runs["target"]
    comparison = compare_runs(store, a, b)
    if comparison["embs.0"].same:
        pytest.skip("eager and SDPA attention give bitwise equal float16 embeddings on this machine "
                    f"({torch.backends.cpu.get_cpu_capability()})")
    explained = {e.name: e for e in analyze(store, a, b, comparison)}
    magnitude = explained["embs.0"].data["magnitude"]
    assert magnitude["verdict"] == "within" and magnitude["max_units"] <= 1  # one float16 re-rounding at most
    assert magnitude["max_units"] == comparison["embs.0"].max_ulp_scaled  # the table's number, the same unit
    assert magnitude["max_ulp_bits"] == comparison["embs.0"].max_ulp


def test_a_tokens_occurrences_are_counted_over_the_whole_artifact(runs, tiny_cfg, tmp_path):
    """Changed rows of only 10 passages: the `[D]` marker still occurs once in each of the 120 passages."""
    store = Store(tiny_cfg().store.root)
    tokens = token_map(store, runs["target"])
    marker = next(t for t, name in tokens.names.items() if name == "[D]")
    rows = (tokens.token == marker).nonzero().flatten()
    assert rows.numel() == 120
    att = attribute(rows[:10], tokens)
    assert att.by_token[0] == ("[D]", 10, 120) and att.by_token_position[0] == ("[D]", 1, 10, 120)
    assert "10 of its 120 occurrences" in att.headline()


def test_rounding_bounds_use_the_checkpoints_own_size(tiny_cfg, tmp_path):
    """model=local with a hidden size of 48: the bound of `embs` reduces over 48, not the tiny model's 32."""
    from colbert_swap.config import ModelConfig
    from colbert_swap.study.matrix import config_overrides
    from colbert_swap.colbert.models import checkpoint_path

    local = checkpoint_path(ModelConfig(name="h48", hidden=48, intermediate=96, heads=2, layers=1, dim=32),
                            tmp_path / "models")
    a = capture(tiny_cfg("run=local-a", "model=local", f"model.path={local}"), progress=quiet_progress)
    b = capture(tiny_cfg("run=local-b", "model=local", f"model.path={local}", "perturb=kmeans_seed"),
                progress=quiet_progress)
    assert set(a.config["model"]) == {"name", "kind", "path"}  # no meaningless tiny-model sizes in the run
    assert not any(o.startswith("model.hidden") for o in config_overrides(tiny_cfg("model=local",
                                                                                  f"model.path={local}")))
    store = Store(tiny_cfg().store.root)
    explained = {e.name: e for e in analyze(store, b, a, compare_runs(store, b, a))}
    assert explained["prenorm_centroids"].data["magnitude"]["reduction"] > 1  # a cluster mean
    fake = copy.deepcopy(a)  # the embeddings' bound, on a made-up difference of the local run's embs.0
    embs = store.get(a, "embs.0")
    fake.label = "local-nudged"
    fake.artifacts["embs.0"] = ArtifactRecord(ref=store.blobs.put(torch.nextafter(embs, embs + 1)), stage="test")
    store.save(fake)
    explained = {e.name: e for e in analyze(store, fake, a, compare_runs(store, fake, a))}
    assert explained["embs.0"].data["magnitude"]["reduction"] == 48


def test_a_permuted_centroid_set_replays_as_a_relabeling(runs, tiny_cfg):
    cfg = tiny_cfg()
    store = Store(cfg.store.root)
    target = runs["target"]
    centroids = store.get(target, "half_centroids")
    perm = torch.randperm(centroids.shape[0], generator=torch.Generator().manual_seed(0))
    permuted = torch.empty_like(centroids)
    permuted[perm] = centroids  # target's centroid i is the source's centroid perm[i]
    source = copy.deepcopy(target)
    source.label = "permuted-centroids"
    source.artifacts["half_centroids"] = ArtifactRecord(ref=store.blobs.put(permuted), stage="test")
    store.save(source)
    replayed = replay(cfg, store, target, source, ["half_centroids"], progress=quiet_progress)
    comparison = compare_runs(store, target, replayed)
    explained = {e.name: e for e in analyze(store, target, replayed, comparison)}
    match = explained["half_centroids"].data["matching"]
    assert match["kind"] == "relabeled" and match["max"] == 0 and match["relabeled"] > 0.9 * centroids.shape[0]
    assert "the same centroids relabeled" in explained["half_centroids"].text
    modulo = explained["codes.0"].data["modulo_matching"]
    assert modulo["same_label"] < 0.1 * modulo["embeddings"]
    assert modulo["same_modulo_matching"] == modulo["embeddings"] and "residuals.0" not in explained
    assert explained["ivf_pid"].data["labels"]["ivf_pid"]["mean_jaccard"] > 0.99


def test_a_kmeans_seed_change_is_a_different_clustering(runs, tiny_cfg, tmp_path):
    store = Store(tiny_cfg().store.root)
    a, b = runs["kmeans_seed"], runs["target"]
    explained = {e.name: e for e in analyze(store, a, b, compare_runs(store, a, b))}
    match = explained["prenorm_centroids"].data["matching"]
    assert match["kind"] == "different" and match["method"] == "hungarian"
    assert 0 < match["median"] <= match["p90"] <= match["max"] and match["relabeled"] > 0
    assert match["below_half_spacing"] < match["centroids"]
    assert "a different clustering" in explained["prenorm_centroids"].text
    assert explained["prenorm_centroids"].data["magnitude"]["verdict"] == "far_beyond"
    modulo = explained["codes.0"].data["modulo_matching"]
    assert modulo["same_label"] < modulo["same_modulo_matching"] < modulo["embeddings"]


def test_equal_runs_are_explained_without_reading_a_blob(runs, tiny_cfg, tmp_path, monkeypatch):
    store = Store(tiny_cfg().store.root)
    comparison = compare_runs(store, runs["target"], runs["target"])

    def forbidden(*args, **kwargs):
        raise AssertionError("nothing diverges: nothing to read")

    monkeypatch.setattr(colbert_swap.core.store.Store, "get", forbidden)
    assert analyze(store, runs["target"], runs["target"], comparison) == []
