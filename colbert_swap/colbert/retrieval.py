"""Queries, relevance judgements, and what two rankings of the same queries have in common.

    queries, qrels = synthetic_queries(corpus.passages, n=50, seed=0)   # known relevant passage per query
    per_query = ranking_differences(a_lists, b_lists, k=10)               # overlap@k, differing pids, Kendall tau
    metrics = effectiveness(lists, qrels, k=10)                           # R@k, RR@k, nDCG@k (ir-measures)

Recall, MRR and nDCG come from `ir-measures` (pytrec_eval underneath), not from code written here.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

import numpy as np

from colbert_swap.errors import UserError


@dataclass(frozen=True)
class QuerySet:
    qids: list[str]
    texts: list[str]
    qrels: dict | None  # qid -> {pid: relevance}, when known (synthetic queries bring theirs)


def query_set(search, corpus, seed: int) -> QuerySet:
    """search.queries (a TSV of qid<TAB>query, with search.qrels in TREC format), or search.num_queries
    seeded windows of search.query_words words, each from one passage: its one relevant passage."""
    if search.queries:
        qids, texts = read_queries(search.queries)
        return QuerySet(qids, texts, read_qrels(search.qrels) if search.qrels else None)
    if search.qrels:
        raise UserError("search.qrels needs search.queries (synthetic queries bring their own qrels)")
    texts, qrels = synthetic_queries(corpus.passages, search.num_queries, seed, search.query_words)
    return QuerySet([str(q) for q in range(len(texts))], texts, qrels)


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


@dataclass(frozen=True)
class MeasureDelta:
    """One measure of both rankings, their mean per-query difference (b - a) and whether it stands out of
    the query-to-query noise: a paired bootstrap 95% interval of the mean (scipy) that excludes 0."""

    measure: str
    a: float
    b: float
    delta: float
    low: float
    high: float
    p_value: float  # Wilcoxon signed-rank over the queries' differences (1.0 when none differs)

    @property
    def significant(self) -> bool:
        return not (self.low <= 0.0 <= self.high)

    def text(self) -> str:
        return (f"Δ{self.measure} {self.delta:+.4f} (95% CI [{self.low:+.4f}, {self.high:+.4f}], Wilcoxon p "
                f"{self.p_value:.3g}: {'beyond' if self.significant else 'within'} query-to-query noise)")


@dataclass(frozen=True)
class RetrievalVerdict:
    """What a change does to retrieval, per query and overall: identical rankings, the same top-k sets in
    another order, or other passages; and the effectiveness deltas with their noise."""

    k: int
    per_query: list[str]  # "identical" | "same set" | "different", in query order
    deltas: list[MeasureDelta]

    @property
    def status(self) -> str:
        if all(s == "identical" for s in self.per_query):
            return "identical"
        return "same sets" if all(s != "different" for s in self.per_query) else "changed"

    def counts(self) -> dict[str, int]:
        return {s: self.per_query.count(s) for s in ("identical", "same set", "different")}

    def short(self) -> str:
        """For a table cell: `identical`, `same sets`, or `changed (ΔnDCG@10 -0.012 ± 0.008)`."""
        if self.status != "changed":
            return self.status
        ndcg = next((d for d in self.deltas if d.measure.startswith("nDCG")), None)
        return "changed" + (f" (Δ{ndcg.measure} {ndcg.delta:+.3f} ± {(ndcg.high - ndcg.low) / 2:.3f})" if ndcg else "")

    def text(self, a: str, b: str) -> str:
        c, n = self.counts(), len(self.per_query)
        head = {"identical": f"Retrieval is identical: all {n} queries get the same top-{self.k} in the same order "
                             f"from {a} and {b}.",
                "same sets": f"Retrieval keeps the same top-{self.k} sets: {c['identical']} of {n} queries in the same "
                             f"order, {c['same set']} in another order, none with other passages.",
                "changed": f"Retrieval changes: {c['different']} of {n} queries get other passages in their top-"
                           f"{self.k}, {c['same set']} the same ones in another order, {c['identical']} the same "
                           "ranking."}[self.status]
        return head + ("" if not self.deltas else " " + "; ".join(d.text() for d in self.deltas) + ".")

    def to_json(self) -> dict:
        return {"k": self.k, "status": self.status, "counts": self.counts(), "per_query": self.per_query,
                "deltas": [{**asdict(d), "significant": d.significant} for d in self.deltas]}


def query_status(x: list[int], y: list[int], k: int) -> str:
    x, y = x[:k], y[:k]
    return "identical" if x == y else "same set" if set(x) == set(y) else "different"


def retrieval_verdict(a: list[list[int]], b: list[list[int]], k: int, eff_a: dict | None = None,
                      eff_b: dict | None = None, qids: list[str] | None = None) -> RetrievalVerdict:
    """Per-query statuses of two runs' rankings, and (with qrels) the deltas of each measure with a paired
    bootstrap interval over the judged queries."""
    statuses = [query_status(x, y, k) for x, y in zip(a, b)]
    deltas = []
    if eff_a and eff_b:
        qids = qids or [str(q) for q in range(len(a))]
        for measure in eff_a["mean"]:
            da = np.array([eff_a["per_query"][q][measure] for q in qids])
            db = np.array([eff_b["per_query"][q][measure] for q in qids])
            deltas.append(_delta(measure, eff_a["mean"][measure], eff_b["mean"][measure], db - da))
    return RetrievalVerdict(k, statuses, deltas)


def _delta(measure: str, a: float, b: float, diff: np.ndarray) -> MeasureDelta:
    from scipy.stats import bootstrap, wilcoxon

    mean = float(diff.mean()) if diff.size else 0.0
    if not diff.size or not np.any(diff != diff[0]):  # every query moved by the same amount (often 0)
        return MeasureDelta(measure, a, b, mean, mean, mean, 1.0 if not np.any(diff) else 0.0)
    ci = bootstrap((diff,), np.mean, confidence_level=0.95, n_resamples=2000, method="percentile",
                   random_state=np.random.default_rng(0)).confidence_interval
    p = float(wilcoxon(diff, zero_method="zsplit").pvalue) if np.any(diff) else 1.0
    return MeasureDelta(measure, a, b, mean, float(ci.low), float(ci.high), p)
