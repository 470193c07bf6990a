"""task=search: colbert-ai's Searcher in-process on two runs, every intermediate stored, rankings compared."""

from __future__ import annotations

import json

import pytest
import torch

from colbert_swap.search import ranked_lists, searcher
from colbert_swap.store import Store
from colbert_swap.tasks import search as search_task
from colbert_swap.tasks.capture import capture
from tests.conftest import quiet_progress


@pytest.fixture(scope="module")
def runs(tiny_cfg):
    for label, extra in [("target", []), ("twin", []), ("seed7", ["perturb=kmeans_seed"]), ("eager", ["perturb=eager"]),
                         ("scaled", ["perturb=scale_layer"])]:
        capture(tiny_cfg(f"run={label}", *extra), progress=quiet_progress)
    return tiny_cfg


def test_identical_runs_give_identical_rankings(runs, tmp_path):
    result = search_task.search(runs("source=target", "target=twin", "search.num_queries=20"), Store(runs().store.root),
                                progress=quiet_progress)
    assert all(r.status == "equal" for r in result.comparison.results)
    assert all(q["same_order"] and q["overlap"] == 1.0 for q in result.per_query)
    ea, eb = result.effectiveness
    assert ea == eb and ea["mean"]["R@10"] > 0  # the synthetic queries do find their own passages sometimes


def test_our_rankings_are_colbert_searchers_own(runs):
    store = Store(runs().store.root)
    result = search_task.search(runs("source=target", "target=seed7", "search.num_queries=12"), store,
                                progress=quiet_progress)
    s = searcher(store.run_dir("target"), store.run_dir("target") / "searcher-test.log")
    ranking = s.search_all({i: q for i, q in enumerate(result.queries)}, k=10).todict()
    ours_pids, ours_scores = store.get(result.a, "ranked_pids"), store.get(result.a, "ranked_scores")
    for qid, rows in ranking.items():
        pids = [pid for pid, _, _ in rows]
        assert ours_pids[qid, :len(pids)].tolist() == pids
        assert ours_scores[qid, :len(pids)].tolist() == [torch.tensor(score).float().item() for _, _, score in rows]


def test_another_kmeans_seed_changes_rankings_measurably(runs, tmp_path):
    cfg = runs("task=search", "source=target", "target=seed7", "search.num_queries=30", f"out_dir={tmp_path}")
    assert search_task.run(cfg) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["artifacts"]["Q"]["status"] == "equal"  # same model, same queries
    assert report["artifacts"]["centroid_scores"]["status"] == "diverged"  # other centroids
    store = Store(cfg.store.root)
    a, b = (ranked_lists(store, store.load(label)) for label in report["search_runs"])
    overlaps = [len(set(x) & set(y)) / 10 for x, y in zip(a, b)]
    assert [q["overlap"] for q in report["per_query"]] == overlaps  # recomputed by hand from the stored lists
    assert min(overlaps) < 1.0 and sum(not q["same_order"] for q in report["per_query"]) > 0
    md = (tmp_path / "report.md").read_text()
    assert "## Effectiveness" in md and "nDCG@10" in md and "## Queries whose top-10 differs" in md
    assert (tmp_path / "per_query.png").read_bytes()[:4] == b"\x89PNG"


def test_injecting_the_source_query_embeddings(runs):
    store = Store(runs().store.root)
    result = search_task.search(runs("source=eager", "target=target", "inject=Q", "search.num_queries=10"), store,
                                progress=quiet_progress)
    assert result.comparison["Q"].status == "equal"  # the target searched with eager's Q
    assert result.b.artifacts["Q"].ref == result.a.artifacts["Q"].ref
    assert result.b.artifacts["Q"].stage == "inject:eager" and result.b.origin.Q_from == "eager"
    assert result.b.label != search_task.search(runs("source=eager", "target=target", "search.num_queries=10"),
                                                   store, progress=quiet_progress).b.label  # kept apart


def test_a_runs_queries_are_encoded_with_its_own_model_knobs(runs):
    """The eager run's Q is what colbert-ai's query encoder gives with eager attention, whatever the machine."""
    from colbert_swap.resources import Resources
    from colbert_swap.replay import run_config

    store = Store(runs().store.root)
    result = search_task.search(runs("source=eager", "target=target", "search.num_queries=6"), store,
                                progress=quiet_progress)
    eager = store.load("eager")
    resources = Resources(run_config(runs(), eager), store, store.run_dir("eager"))
    model = resources.checkpoint
    assert model.bert.config._attn_implementation == "eager"
    model.query_tokenizer.query_maxlen = resources.colbert_config.query_maxlen
    with torch.inference_mode():
        expected = model.queryFromText(result.queries, to_cpu=True)
    assert torch.equal(store.get(result.a, "Q"), expected)
    scaled = search_task.search(runs("source=scaled", "target=target", "search.num_queries=6"), store,
                                progress=quiet_progress)
    assert scaled.comparison["Q"].status != "equal"  # another encoder: other query embeddings


def test_a_query_file_with_trec_qrels(runs, tmp_path):
    store = Store(runs().store.root)
    from colbert_swap.corpus import load_corpus
    from omegaconf import OmegaConf

    passages = load_corpus(OmegaConf.create(store.load("target").config["collection"]), store.root / "collections").passages
    (tmp_path / "q.tsv").write_text(f"q-a\t{' '.join(passages[3].split()[:6])}\nq-b\t{' '.join(passages[9].split()[:6])}\n")
    (tmp_path / "qrels").write_text("q-a 0 3 1\nq-b 0 9 1\n")
    result = search_task.search(runs("source=target", "target=seed7", f"search.queries={tmp_path}/q.tsv",
                                     f"search.qrels={tmp_path}/qrels"), store, progress=quiet_progress)
    assert result.qids == ["q-a", "q-b"]
    for eff, run in zip(result.effectiveness, ("a", "b")):
        lists = ranked_lists(store, getattr(result, run))
        for i, (qid, pid) in enumerate([("q-a", 3), ("q-b", 9)]):
            expected = 1 / (lists[i].index(pid) + 1) if pid in lists[i] else 0.0
            assert eff["per_query"][qid]["RR@10"] == pytest.approx(expected)
