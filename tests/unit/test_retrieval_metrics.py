"""Ranking differences and effectiveness against hand-computed answers; synthetic queries and query files."""

from __future__ import annotations

import math

import pytest

from colbert_swap.errors import UserError
from colbert_swap.colbert.retrieval import effectiveness, ranking_differences, read_qrels, read_queries, synthetic_queries


def test_ranking_differences_by_hand():
    (d,) = ranking_differences([[1, 2, 3, 4]], [[2, 1, 3, 9]], k=4)
    # shared 1, 2, 3 (3 of 4); 4 and 9 are in one list only; ranks (0,1,2) vs (1,0,2): 2 concordant, 1 discordant
    assert d == {"overlap": 0.75, "differing": 2, "kendall_tau": pytest.approx(1 / 3), "same_order": False}
    (same,) = ranking_differences([[5, 6, 7]], [[5, 6, 7]], k=3)
    assert same["overlap"] == 1.0 and same["differing"] == 0 and same["kendall_tau"] == 1.0 and same["same_order"]
    (disjoint,) = ranking_differences([[1, 2]], [[3, 4]], k=2)
    assert disjoint["overlap"] == 0.0 and disjoint["differing"] == 4 and math.isnan(disjoint["kendall_tau"])


def test_effectiveness_by_hand():
    qrels = {"0": {"1": 1}, "1": {"9": 1}, "2": {"4": 1}}
    result = effectiveness([[5, 1, 2], [7, 8, 9], [1, 2, 3]], qrels, k=3)
    per = result["per_query"]
    assert per["0"] == pytest.approx({"R@3": 1.0, "RR@3": 1 / 2, "nDCG@3": 1 / math.log2(3)})
    assert per["1"] == pytest.approx({"R@3": 1.0, "RR@3": 1 / 3, "nDCG@3": 1 / math.log2(4)})
    assert per["2"] == pytest.approx({"R@3": 0.0, "RR@3": 0.0, "nDCG@3": 0.0})  # the relevant passage is missed
    assert result["mean"]["RR@3"] == pytest.approx((1 / 2 + 1 / 3) / 3)


def test_ties_in_scores_do_not_reorder_a_ranking():
    # the metrics see the list's own order: the relevant pid second gives RR 1/2 whatever its pid number
    for pids in ([9, 1], [1, 9]):
        assert effectiveness([pids], {"0": {str(pids[1]): 1}}, k=2)["per_query"]["0"]["RR@2"] == 0.5


def test_synthetic_queries_are_windows_of_their_relevant_passage():
    passages = [f"w{i} " * 3 + f"unique{i} tail{i} end{i}" for i in range(40)]
    queries, qrels = synthetic_queries(passages, n=10, seed=3, words=4)
    assert len(queries) == 10 and synthetic_queries(passages, n=10, seed=3, words=4) == (queries, qrels)
    for qid, query in enumerate(queries):
        (pid,) = qrels[str(qid)]
        assert query in passages[int(pid)] and len(query.split()) == 4
    assert len({next(iter(q)) for q in qrels.values()}) == 10  # ten different passages


def test_read_queries(tmp_path):
    path = tmp_path / "q.tsv"
    path.write_text("1\tfirst query\n\n7\tsecond one\n")
    assert read_queries(path) == (["1", "7"], ["first query", "second one"])
    path.write_text("1\tfine\nno tab here\n")
    with pytest.raises(UserError, match=r"q.tsv:2: expected 'qid<TAB>query'"):
        read_queries(path)


def test_user_queries_keep_their_qids_with_trec_qrels(tmp_path):
    (tmp_path / "qrels.txt").write_text("7 0 3 1\n1 0 5 2\n")
    qrels = read_qrels(tmp_path / "qrels.txt")
    assert qrels == {"7": {"3": 1}, "1": {"5": 2}}
    result = effectiveness([[5, 9], [3]], qrels, k=2, qids=["1", "7"])
    assert result["per_query"]["1"]["RR@2"] == 1.0 and result["per_query"]["7"]["RR@2"] == 1.0


def test_the_retrieval_verdict_per_query_and_overall():
    from colbert_swap.colbert.retrieval import retrieval_verdict

    a = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert retrieval_verdict(a, [list(x) for x in a], 3).status == "identical"
    same_sets = retrieval_verdict(a, [[1, 2, 3], [6, 5, 4], [7, 8, 9]], 3)
    assert same_sets.per_query == ["identical", "same set", "identical"] and same_sets.status == "same sets"
    changed = retrieval_verdict(a, [[1, 2, 3], [6, 5, 4], [7, 8, 10]], 3)
    assert changed.status == "changed" and changed.counts() == {"identical": 1, "same set": 1, "different": 1}
    assert changed.text("x", "y").startswith("Retrieval changes: 1 of 3 queries get other passages")


def test_a_delta_stands_out_of_the_noise_only_when_its_interval_excludes_zero():
    from colbert_swap.colbert.retrieval import retrieval_verdict

    qids = [str(q) for q in range(40)]
    lists = [[q] for q in range(40)]
    ea = {"mean": {"nDCG@1": 0.5}, "per_query": {q: {"nDCG@1": 0.5} for q in qids}}
    worse = {"mean": {"nDCG@1": 0.3}, "per_query": {q: {"nDCG@1": 0.3 + (0.02 if int(q) % 2 else -0.02)} for q in qids}}
    d = retrieval_verdict(lists, lists, 1, ea, worse, qids).deltas[0]
    assert d.delta == pytest.approx(-0.2) and d.high < 0 and d.significant and d.p_value < 0.01
    noisy = {"mean": {"nDCG@1": 0.5}, "per_query": {q: {"nDCG@1": 0.5 + (0.1 if int(q) % 2 else -0.1)} for q in qids}}
    d = retrieval_verdict(lists, lists, 1, ea, noisy, qids).deltas[0]
    assert d.low < 0 < d.high and not d.significant  # as many queries gain as lose: query-to-query noise
    same = retrieval_verdict(lists, lists, 1, ea, ea, qids).deltas[0]
    assert (same.delta, same.low, same.high, same.p_value, same.significant) == (0, 0, 0, 1.0, False)
