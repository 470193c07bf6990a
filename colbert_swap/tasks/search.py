"""task=search source=A target=B: do the two indexes answer the same queries with the same passages?

    python -m colbert_swap task=search source=2.0.1 target=2.1.0
    python -m colbert_swap task=search source=2.0.1 target=2.1.0+local_sample_embs@2.0.1   # after inject=
    python -m colbert_swap task=search source=2.0.1 target=2.1.0 inject=Q   # the source's query embeddings

Both runs are searched with colbert-ai's own Searcher (colbert_swap/search.py) and every intermediate is
stored; the report gives per-query overlap@k, differing pids, Kendall tau, and with qrels (synthetic queries
have them) R@k, MRR@k and nDCG@k of each run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from omegaconf import OmegaConf

from colbert_swap.compare.runs import RunComparison, compare_runs
from colbert_swap.corpus import load_corpus
from colbert_swap.errors import UserError
from colbert_swap.replay import as_names
from colbert_swap.report import proof
from colbert_swap.report.plots import retrieval_per_query
from colbert_swap.report.report import Report
from colbert_swap.report.tables import table
from colbert_swap.retrieval import (effectiveness, ranking_differences, read_qrels, read_queries,
                                    synthetic_queries)
from colbert_swap.search import SEARCH_ARTIFACTS, ElsewhereError, ranked_lists, search_label, search_run
from colbert_swap.store import RunManifest, Store
from colbert_swap.tasks.common import progress_printer
from colbert_swap.tasks.common import finish, source_run, target_label, tolerance


def queries_for(cfg, store: Store, run) -> tuple[list[str], list[str], dict | None]:
    """(qids, queries, qrels): a query file with optional TREC qrels, or synthetic queries with theirs."""
    if cfg.search.queries:
        qids, queries = read_queries(cfg.search.queries)
        return qids, queries, read_qrels(cfg.search.qrels) if cfg.search.qrels else None
    if cfg.search.qrels:
        raise UserError("search.qrels needs search.queries (synthetic queries bring their own qrels)")
    corpus = load_corpus(OmegaConf.create(run.config["collection"]), store.root / "collections")
    queries, qrels = synthetic_queries(corpus.passages, cfg.search.num_queries, cfg.seed, cfg.search.query_words)
    return [str(q) for q in range(len(queries))], queries, qrels


@dataclass(frozen=True)
class SearchResult:
    """task=search's result: both runs' search runs, compared artifact by artifact and query by query."""

    source: RunManifest
    target: RunManifest
    a: RunManifest  # the source's search run
    b: RunManifest  # the target's
    qids: list[str]
    queries: list[str]
    qrels: dict | None
    k: int
    comparison: RunComparison
    per_query: list[dict]  # overlap@k, differing pids, Kendall tau, same_order
    lists: tuple[list[list[int]], list[list[int]]]
    effectiveness: tuple[dict, dict] | None  # ir-measures of a and b, when there are qrels


def search(cfg, store: Store, progress=None) -> SearchResult:
    progress = progress or progress_printer()
    source = source_run(cfg, store)
    label = target_label(cfg)
    target = store.load(label)
    for run in (source, target):
        if not run.complete or not (store.run_dir(run.label) / "index" / "metadata.json").exists():
            raise UserError(f"run {run.label!r} has no complete index to search (capture or replay it first)")
    names = as_names(cfg.inject)
    if [n for n in names if n != "Q"]:
        raise UserError(f"task=search injects only Q (the query embeddings); for {names} run inject=... first and "
                        f"search the replayed run: target={label}+NAME@{source.label}")
    qids, queries, qrels = queries_for(cfg, store, target)
    k = cfg.search.k
    a = searched(cfg, store, source, queries, k, progress=progress)
    Q = store.get(a, "Q") if names else None
    b = searched(cfg, store, target, queries, k, Q=Q, injected_from=source.label if names else None, progress=progress)
    la, lb = ranked_lists(store, a), ranked_lists(store, b)
    return SearchResult(source, target, a, b, qids, queries, qrels, k,
                        compare_runs(store, a, b, names=list(SEARCH_ARTIFACTS), force=True, tol=tolerance(cfg)),
                        ranking_differences(la, lb, k), (la, lb),
                        (effectiveness(la, qrels, k, qids), effectiveness(lb, qrels, k, qids)) if qrels else None)


def searched(cfg, store: Store, run, queries: list[str], k: int, Q=None, injected_from: str | None = None,
             progress=print):
    """`run`'s search: here when the run was computed here, else in the run's own environment (a spec of
    conf/env/, in a process of its own), else a clear error."""
    try:
        return search_run(store, run, queries, k, Q=Q, injected_from=injected_from, progress=progress)
    except ElsewhereError as exc:
        spec_name = run.provenance.get("environment")
        if not spec_name or Q is not None:
            raise
        from colbert_swap.environments import ensure, load_spec, run_in

        spec = load_spec(spec_name)
        python = ensure(spec, _env_cache(cfg), progress)
        progress(f"{exc}: searching run {run.label!r} in environment {spec_name!r}")
        log = store.root / "envs" / "logs" / f"search-{run.label}.log"
        args = ["task=search", f"run={run.label}", f"store.root={store.root}", *_search_overrides(cfg)]
        done = run_in(spec, python, args, log)
        label = search_label(run.label, queries, k, injected_from)
        if done.returncode or not store.has_run(label):
            raise UserError(f"the search of run {run.label!r} in environment {spec_name!r} failed (exit "
                            f"{done.returncode}); see {log}") from exc
        return store.load(label)


def _env_cache(cfg):
    from pathlib import Path

    return Path(cfg.get("env_cache") or Path(cfg.store.root) / "envs")


def _search_overrides(cfg) -> list[str]:
    from colbert_swap.matrix import _value

    return [f"search.{k}={_value(v)}" for k, v in OmegaConf.to_container(cfg.search, resolve=True).items()] + \
        [f"seed={cfg.seed}"]


def search_one(cfg, store: Store) -> int:
    """`task=search run=X`: search one run here (in its own environment) and keep its artifacts."""
    run = store.load(str(cfg.run))
    _, queries, _ = queries_for(cfg, store, run)
    manifest = search_run(store, run, queries, cfg.search.k, progress=progress_printer())
    print(f"search run {manifest.label!r}: {len(manifest.artifacts)} artifacts of {len(queries)} queries (k={cfg.search.k})")
    return 0


def verdict(result: SearchResult) -> str:
    s, t, k, per = result.source.label, result.target.label, result.k, result.per_query
    same = sum(q["same_order"] for q in per)
    overlap = sum(q["overlap"] for q in per) / len(per)
    text = (f"{same} of {len(per)} queries get the same top-{k} in the same order from {s} and {t}; "
            f"mean overlap@{k} {overlap:.3f}, {sum(q['differing'] for q in per)} pids in one top-{k} only.")
    if result.effectiveness:
        ea, eb = (e["mean"] for e in result.effectiveness)
        text += " " + "; ".join(f"{m} {ea[m]:.4f} vs {eb[m]:.4f} ({eb[m] - ea[m]:+.4f})" for m in ea) + "."
    return text


def run(cfg) -> int:
    from colbert_swap.provenance import short

    store = Store(cfg.store.root)
    if cfg.run and not cfg.source:
        return search_one(cfg, store)
    result = search(cfg, store)
    s, t, k = result.source.label, result.target.label, result.k
    folder = proof.out_dir(cfg, "search")
    per, eff, qids = result.per_query, result.effectiveness, result.qids
    delta = [eff[1]["per_query"][q][f"nDCG@{k}"] - eff[0]["per_query"][q][f"nDCG@{k}"] for q in qids] if eff else None
    plot = retrieval_per_query([q["overlap"] for q in per], delta, k, folder / "per_query.png")
    rows = [[qids[i], _short(result.queries[i]), f"{p['overlap']:.2f}", p["differing"], _tau(p["kendall_tau"]),
             *([f"{delta[i]:+.4f}"] if delta else [])]
            for i, p in enumerate(per) if not p["same_order"]][:25]
    where = [[run.label, side.label, f"`{side.env}`", short(side.provenance)]
             for run, side in ((result.source, result.a), (result.target, result.b))]
    sections = ["## Where each side was searched (its queries encoded, its index scored)\n\n"
                + table(["index run", "search run", "computed in", "environment"], where),
                f"## Search artifacts ({s} vs {t})\n\n" + proof.comparison_table(result.comparison)]
    if eff:
        sections.append("## Effectiveness (ir-measures; synthetic qrels: each query's source passage)\n\n" + table(
            ["measure", s, t, "difference"], [[m, f"{eff[0]['mean'][m]:.4f}", f"{eff[1]['mean'][m]:.4f}",
                                             f"{eff[1]['mean'][m] - eff[0]['mean'][m]:+.4f}"] for m in eff[0]["mean"]]))
    sections.append(f"## Queries whose top-{k} differs (first 25)\n\n" + (table(
        ["qid", "query", f"overlap@{k}", "differing pids", "Kendall tau", *(["ΔnDCG"] if delta else [])], rows)
        if rows else "None."))
    report = Report("search", f"search: {s} vs {t}", verdict(result), sections, runs=[result.a, result.b],
                    figures=[plot.name], data={
        "source": s, "target": t, "injected": as_names(cfg.inject), "k": k, "search_runs": [result.a.label, result.b.label],
        "computed_in": {result.a.label: result.a.env, result.b.label: result.b.env}, "qids": qids, "per_query": per,
        "artifacts": proof.artifact_json(result.comparison.results),
        "effectiveness": {s: eff[0], t: eff[1]} if eff else None})
    return finish(folder, report)


def _short(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def _tau(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.3f}"
