"""Search as part of the DAG: colbert-ai's Searcher on the run's own artifacts, every intermediate a search
artifact of the run, replayed and injected like the index's, and located from the rankings."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from colbert_swap.runs.replay import replay
from colbert_swap.runs.search import ensure_searched, ranked_lists, search_artifacts, searcher
from colbert_swap.colbert.stages import DAG
from colbert_swap.core.store import ArtifactRecord, Store
from colbert_swap.tasks import search as search_task
from colbert_swap.tasks.capture import capture
from colbert_swap.tasks.locate import locate
from colbert_swap.tasks.locate import verdict as locate_verdict
from tests.conftest import quiet_progress

pytestmark = pytest.mark.numerics
Q20 = "search.num_queries=20"


@pytest.fixture(scope="module")
def runs(tiny_cfg):
    for label, extra in [("target", []), ("twin", []), ("seed7", ["perturb=kmeans_seed"]), ("eager", ["perturb=eager"]),
                         ("scaled", ["perturb=scale_layer"]), ("nfp16", ["perturb=normalize_fp16"])]:
        capture(tiny_cfg(f"run=s-{label}", *extra, "search.capture=true", Q20), progress=quiet_progress)
    return tiny_cfg


def store_of(runs) -> Store:
    return Store(runs().store.root)


def test_a_capture_with_queries_holds_both_graphs(runs):
    run = store_of(runs).load("s-target")
    assert run.complete and set(search_artifacts()) <= set(run.artifacts)
    assert [n.name for n in DAG.nodes(1, ("search",))] == ["query_texts", "query_tokens", "Q", "search_settings",
                                                         "centroid_scores", "cells", "candidate_pids", "scored_pids",
                                                         "ranked_pids"]


def test_identical_runs_give_identical_search_artifacts(runs):
    result = search_task.search(runs("source=s-twin", "target=s-target", Q20), store_of(runs), progress=quiet_progress)
    assert result.comparison.results and all(r.status == "equal" for r in result.comparison.results)
    assert result.retrieval.status == "identical" and all(d.delta == 0 for d in result.retrieval.deltas)


def _search_all(store, run):
    texts = store.get(run, "query_texts")["texts"]
    s = searcher(store.run_dir(run.label), store.run_dir(run.label) / "searcher-test.log", run.config)
    return s.search_all({i: q for i, q in enumerate(texts)}, k=10).todict()


def _equal_to_searcher(store, run) -> bool:
    pids, scores = store.get(run, "ranked_pids"), store.get(run, "ranked_scores")
    for qid, rows in _search_all(store, run).items():
        if pids[qid, :len(rows)].tolist() != [p for p, _, _ in rows]:
            return False
        if scores[qid, :len(rows)].tolist() != [torch.tensor(s).float().item() for _, _, s in rows]:
            return False
    return True


def test_rankings_are_colbert_searchers_own_for_captured_replayed_and_injected_runs(runs):
    store = store_of(runs)
    target, seed7 = store.load("s-target"), store.load("s-seed7")
    assert _equal_to_searcher(store, target) and _equal_to_searcher(store, seed7)
    replayed = replay(runs(), store, target, seed7, ["prenorm_centroids"], progress=quiet_progress)  # index + search
    assert "ranked_pids" in replayed.artifacts and replayed.artifacts["ranked_pids"].stage == "ranked_pids"
    assert _equal_to_searcher(store, replayed)  # the replayed index files, searched by colbert-ai, agree


@pytest.mark.parametrize("point", ["query_texts", "query_tokens", "Q", "search_settings", "centroid_scores", "cells",
                                   "candidate_pids", "scored_pids"])
def test_null_injection_at_every_search_stage_is_exact(runs, point):
    store = store_of(runs)
    target = store.load("s-target")
    replayed = replay(runs("reuse=false"), store, target, target, [point], label=f"s-null-{point}",
                      progress=quiet_progress)
    assert {k: r.ref.hash for k, r in replayed.artifacts.items()} == {k: r.ref.hash for k, r in target.artifacts.items()}


def test_a_replay_downstream_of_the_index_never_encodes_and_of_q_never_builds_the_model(runs, monkeypatch):
    import colbert_swap.colbert.infra
    import colbert_swap.colbert.stages.index
    import colbert_swap.colbert.stages.setup

    def forbidden(*args, **kwargs):
        raise AssertionError("this replay must not encode passages or build the model")

    store = store_of(runs)
    for module, names in ((colbert_swap.colbert.stages.setup, ("encode_tokens", "embeddings", "tokenize")),
                          (colbert_swap.colbert.stages.index, ("embeddings", "tokenize"))):  # how index.py encodes
        for name in names:
            monkeypatch.setattr(module, name, forbidden)
    replayed = replay(runs("reuse=false"), store, store.load("s-target"), store.load("s-seed7"), ["half_centroids"],
                      label="s-no-encode", progress=quiet_progress)
    assert replayed.artifacts["ranked_pids"].stage == "ranked_pids"  # the search was replayed too
    monkeypatch.setattr(colbert_swap.colbert.infra, "load_checkpoint", forbidden)
    replayed = replay(runs("reuse=false"), store, store.load("s-target"), store.load("s-eager"), ["Q"],
                      label="s-no-model", progress=quiet_progress)
    assert replayed.artifacts["Q"].ref == store.load("s-eager").artifacts["Q"].ref
    assert replayed.artifacts["ranked_pids"].stage == "ranked_pids"


def test_a_run_captured_without_queries_gains_its_search_later(runs):
    store = store_of(runs)
    plain = capture(runs("run=s-plain"), progress=quiet_progress)
    assert "Q" not in plain.artifacts and plain.complete
    searched = ensure_searched(runs(Q20), store, plain, progress=quiet_progress)
    again = store.load("s-plain")
    assert again.complete and set(search_artifacts()) <= set(again.artifacts)
    assert {n: again.artifacts[n].ref for n in plain.artifacts} == {n: r.ref for n, r in plain.artifacts.items()}
    assert searched.artifacts["ranked_pids"].ref == store.load("s-twin").artifacts["ranked_pids"].ref
    fewer = ensure_searched(runs("search.num_queries=5"), store, again, progress=quiet_progress)  # other queries
    assert len(store.get(fewer, "query_texts")["texts"]) == 5 and store.get(fewer, "ranked_pids").shape[0] == 5


def test_a_runs_queries_are_encoded_with_its_own_model_knobs(runs):
    """The eager run's Q is what colbert-ai's query encoder gives with eager attention, whatever the machine."""
    from colbert_swap.runs.replay import run_config
    from colbert_swap.colbert.resources import Resources

    store = store_of(runs)
    eager = store.load("s-eager")
    resources = Resources(run_config(runs(), eager), store, store.run_dir("s-eager"))
    model = resources.checkpoint
    assert model.bert.config._attn_implementation == "eager"
    model.query_tokenizer.query_maxlen = resources.search_config.query_maxlen
    with torch.inference_mode():
        expected = model.queryFromText(store.get(eager, "query_texts")["texts"], to_cpu=True)
    assert torch.equal(store.get(eager, "Q"), expected)
    result = search_task.search(runs("source=s-scaled", "target=s-target", Q20), store, progress=quiet_progress)
    assert result.comparison["Q"].status != "equal"  # another encoder: other query embeddings


def test_locate_from_the_rankings_names_the_kmeans_seed(runs, tmp_path):
    cfg = runs("task=locate", "source=s-seed7", "target=s-target", "target_artifact=ranked_pids", Q20,
               f"out_dir={tmp_path}")
    result = locate(cfg, store_of(runs), progress=quiet_progress)
    assert result.goal == ["ranked_pids", "ranked_scores"] and result.root_cause == ["prenorm_centroids"]
    assert result.final_cmp["ranked_pids"].status == "equal" and result.final_cmp["ranked_scores"].status == "equal"
    assert "What changes `ranked_pids`, `ranked_scores`: `prenorm_centroids`" in locate_verdict(result)
    from colbert_swap.tasks import locate as locate_task

    assert locate_task.run(cfg) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["goal"] == ["ranked_pids", "ranked_scores"] and report["root_cause"] == ["prenorm_centroids"]


def test_an_fp16_normalize_is_located_to_what_reaches_the_rankings(runs):
    """Measured: whether its few-ULP centroid changes reach the rankings; the verdict says which it is."""
    result = locate(runs("source=s-nfp16", "target=s-target", "target_artifact=ranked_pids", Q20), store_of(runs),
                    progress=quiet_progress)
    text = locate_verdict(result)
    if not result.minimal:
        assert "are identical: what differs does not reach them (harmless: `postnorm_centroids`" in text
    else:
        assert result.root_cause[0] in ("postnorm_centroids", "centroids", "half_centroids") and "What changes" in text
        assert result.final_cmp["ranked_pids"].same


def test_differences_that_do_not_reach_the_rankings_are_harmless(runs):
    """A source that differs from the target in avg_residual only (which the search does not read)."""
    store = store_of(runs)
    target = store.load("s-target")
    other = copy.deepcopy(target)
    other.label = "s-avg-edited"
    other.artifacts["avg_residual"] = ArtifactRecord(ref=store.blobs.put(store.get(target, "avg_residual") * 2),
                                                     stage="test")
    store.save(other)
    result = locate(runs("source=s-avg-edited", "target=s-target", "target_artifact=ranked_pids", Q20), store,
                    progress=quiet_progress)
    assert result.minimal == [] and result.harmless == ["avg_residual"]
    assert "`avg_residual` differs in 1 value" in locate_verdict(result) and "are identical" in locate_verdict(result)


def test_a_kmeans_seed_changes_rankings_measurably_with_a_verdict(runs, tmp_path):
    cfg = runs("task=search", "source=s-seed7", "target=s-target", Q20, f"out_dir={tmp_path}")
    assert search_task.run(cfg) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["artifacts"]["Q"]["status"] == "equal"  # same model, same queries
    assert report["artifacts"]["centroid_scores"]["status"] == "diverged"  # other centroids
    store = store_of(runs)
    a, b = ranked_lists(store, store.load("s-seed7")), ranked_lists(store, store.load("s-target"))
    overlaps = [len(set(x) & set(y)) / 10 for x, y in zip(a, b)]
    assert [q["overlap"] for q in report["per_query"]] == overlaps  # recomputed by hand from the stored lists
    statuses = ["identical" if x == y else "same set" if set(x) == set(y) else "different" for x, y in zip(a, b)]
    assert report["retrieval"]["per_query"] == statuses and report["retrieval"]["status"] != "identical"
    deltas = {d["measure"]: d for d in report["retrieval"]["deltas"]}
    assert set(deltas) == {"R@10", "RR@10", "nDCG@10"} and all(d["low"] <= d["delta"] <= d["high"] for d in deltas.values())
    md = (tmp_path / "report.md").read_text()
    assert "## Effectiveness" in md and "95% CI (paired bootstrap)" in md and "## Queries whose top-10 differs" in md
    assert (tmp_path / "per_query.png").read_bytes()[:4] == b"\x89PNG"


def test_injecting_the_source_query_embeddings(runs):
    store = store_of(runs)
    result = search_task.search(runs("source=s-eager", "target=s-target", "inject=Q", Q20), store,
                                progress=quiet_progress)
    assert result.target.label == "s-target+Q@s-eager"
    assert result.comparison["Q"].status == "equal" and result.target.artifacts["Q"].stage == "inject:s-eager"


def test_a_query_file_with_trec_qrels(runs, tmp_path):
    store = store_of(runs)
    from omegaconf import OmegaConf

    from colbert_swap.colbert.corpus import load_corpus

    passages = load_corpus(OmegaConf.create(store.load("s-target").config["collection"]),
                           store.root / "collections").passages
    (tmp_path / "q.tsv").write_text(f"q-a\t{' '.join(passages[3].split()[:6])}\nq-b\t{' '.join(passages[9].split()[:6])}\n")
    (tmp_path / "qrels").write_text("q-a 0 3 1\nq-b 0 9 1\n")
    result = search_task.search(runs("source=s-target", "target=s-seed7", f"search.queries={tmp_path}/q.tsv",
                                     f"search.qrels={tmp_path}/qrels"), store, progress=quiet_progress)
    assert result.qids == ["q-a", "q-b"]
    for eff, run in zip(result.effectiveness, (result.source, result.target)):
        lists = ranked_lists(store, run)
        for i, (qid, pid) in enumerate([("q-a", 3), ("q-b", 9)]):
            expected = 1 / (lists[i].index(pid) + 1) if pid in lists[i] else 0.0
            assert eff["per_query"][qid]["RR@10"] == pytest.approx(expected)


def test_a_search_without_queries_keeps_the_runs_own_and_a_replaced_search_is_said(runs, tmp_path):
    from colbert_swap.errors import UserError

    store, said = store_of(runs), []
    capture(runs("run=s-own"), progress=quiet_progress)
    (tmp_path / "q.tsv").write_text("q-a\tsome words of a query\nq-b\tanother one\n")
    own = ensure_searched(runs(f"search.queries={tmp_path}/q.tsv"), store, store.load("s-own"), said.append)
    kept = ensure_searched(runs(Q20), store, own, said.append)  # no queries named: not 20 synthetic ones
    assert store.get(kept, "query_texts")["qids"] == ["q-a", "q-b"] and kept.artifacts == own.artifacts
    assert said[-1] == "run 's-own' keeps the queries it was searched with (2; search.queries=FILE searches it with others)"
    with pytest.raises(UserError, match=r"searched with 2 queries of its own at k=10; to search them at k=5, name them"):
        ensure_searched(runs(Q20, "search.k=5"), store, kept, said.append)

    (tmp_path / "q2.tsv").write_text("q-c\ta third query\n")
    other = ensure_searched(runs(f"search.queries={tmp_path}/q2.tsv"), store, kept, said.append)  # named: replaced
    assert "replacing run 's-own''s search (2 queries, k=10) with 1 queries, k=10" in said
    assert store.get(other, "query_texts")["qids"] == ["q-c"]

    seven = capture(runs("run=s-synthetic", "search.capture=true", "search.num_queries=7"), progress=quiet_progress)
    nine = ensure_searched(runs("search.num_queries=9"), store, seven, said.append)  # synthetic ones: replaced
    assert len(store.get(nine, "query_texts")["qids"]) == 9
    assert "replacing run 's-synthetic''s search (7 queries, k=10) with 9 queries, k=10" in said


def test_one_run_searched_with_qrels_prints_its_measures(runs, tmp_path, capsys):
    store = store_of(runs)
    capture(runs("run=s-one"), progress=quiet_progress)
    assert search_task.run(runs("run=s-one", "search.num_queries=5")) == 0
    out = capsys.readouterr().out
    assert "run 's-one': searched 5 queries (k=10)" in out
    assert "R@10 " in out and "nDCG@10 " in out and "(mean over the 5 judged queries)" in out
