"""Queries, relevance judgements, and what two rankings of the same queries have in common.

    queries, qrels = synthetic_queries(corpus.passages, n=50, seed=0)   # known relevant passage per query
    per_query = ranking_differences(a_lists, b_lists, k=10)               # overlap@k, differing pids, Kendall tau
    metrics = effectiveness(lists, qrels, k=10)                           # R@k, RR@k, nDCG@k (ir-measures)

Recall, MRR and nDCG come from `ir-measures` (pytrec_eval underneath), not from code written here.
"""

from __future__ import annotations

import math
import os

import numpy as np

from colbert_swap.errors import UserError


def synthetic_queries(passages: list[str], n: int, seed: int, words: int = 6) -> tuple[list[str], dict]:
    # qids are "0", "1", ...: the positions of the queries
    """Query i is a seeded window of `words` words from one passage, which is its one relevant passage."""
    if not passages:
        raise UserError("no passages to draw queries from")
    rng = np.random.RandomState(seed)
    pids = rng.choice(len(passages), size=min(n, len(passages)), replace=False)
    queries, qrels = [], {}
    for qid, pid in enumerate(int(p) for p in pids):
        tokens = passages[pid].split()
        start = int(rng.randint(0, max(1, len(tokens) - words + 1)))
        queries.append(" ".join(tokens[start:start + words]))
        qrels[str(qid)] = {str(pid): 1}
    return queries, qrels


def read_queries(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """A TSV of `qid<TAB>query` lines (colbert-ai's format): (qids, queries) in file order."""
    qids, queries = [], []
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"search.queries={str(path)!r} cannot be read ({exc})") from exc
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        qid, sep, text = line.partition("\t")
        if not sep or not text.strip():
            raise UserError(f"{path}:{line_no}: expected 'qid<TAB>query'")
        if qid.strip() in qids:
            raise UserError(f"{path}:{line_no}: qid {qid.strip()!r} appears twice")
        qids.append(qid.strip())
        queries.append(text.strip())
    if not queries:
        raise UserError(f"{path} holds no queries")
    return qids, queries


def read_qrels(path: str | os.PathLike) -> dict:
    """TREC qrels (`qid 0 docid relevance`), read by ir-measures; docids are passage ids."""
    import ir_measures

    try:
        qrels: dict = {}
        for q in ir_measures.read_trec_qrels(str(path)):
            qrels.setdefault(q.query_id, {})[q.doc_id] = int(q.relevance)
    except (OSError, ValueError, IndexError) as exc:
        raise UserError(f"search.qrels={str(path)!r} cannot be read ({exc})") from exc
    return qrels


def ranking_differences(a: list[list[int]], b: list[list[int]], k: int) -> list[dict]:
    """Per query: overlap@k (shared pids / k), pids in one top-k only, Kendall tau over the shared pids."""
    from scipy.stats import kendalltau

    out = []
    for x, y in zip(a, b):
        x, y = x[:k], y[:k]
        shared = [p for p in x if p in y]
        tau = float("nan")
        if len(shared) >= 2:
            tau = float(kendalltau([x.index(p) for p in shared], [y.index(p) for p in shared]).statistic)
        out.append({"overlap": len(shared) / k, "differing": len(set(x) ^ set(y)), "kendall_tau": tau,
                    "same_order": x == y})
    return out


def effectiveness(lists: list[list[int]], qrels: dict, k: int, qids: list[str] | None = None) -> dict:
    """Mean and per-query R@k, RR@k (MRR), nDCG@k of ranked lists (query i is qids[i], default str(i));
    the mean is over the queries that have judgements."""
    import ir_measures
    from ir_measures import RR, R, nDCG

    measures = [R @ k, RR @ k, nDCG @ k]
    # Scores by rank, so that the metrics see exactly this order (no re-sorting of tied scores).
    qids = qids or [str(q) for q in range(len(lists))]
    run = {qid: {str(p): float(len(pids) - rank) for rank, p in enumerate(pids)} for qid, pids in zip(qids, lists)}
    per_query: dict[str, dict[str, float]] = {qid: {str(m): 0.0 for m in measures} for qid in qids}
    for metric in ir_measures.iter_calc(measures, qrels, run):
        if metric.query_id in per_query:
            per_query[metric.query_id][str(metric.measure)] = float(metric.value)
    judged = [q for q in per_query if q in qrels]
    mean = {str(m): (sum(per_query[q][str(m)] for q in judged) / len(judged)) if judged else math.nan
            for m in measures}
    return {"mean": mean, "per_query": per_query}
