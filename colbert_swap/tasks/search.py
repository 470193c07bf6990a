"""task=search source=A target=B: do the two runs answer the same queries with the same passages?

    python -m colbert_swap task=search source=2.0.1 target=2.1.0
    python -m colbert_swap task=search source=2.0.1 target=2.1.0 inject=Q     # target searched with A's Q
    python -m colbert_swap task=search run=2.1.0        # search one run (in its own environment) and keep it
    python -m colbert_swap task=search ... search.queries=/data/queries.tsv search.qrels=/data/qrels.trec search.k=100

Each run is searched by the search stages of the DAG (colbert-ai's Searcher on the run's own artifacts,
rankings equal to `Searcher.search_all`), as the run was made and in its own environment; the search
artifacts join the run, so `inject=Q` (or `inject=centroid_scores`, `inject=half_centroids`, ...) replays
them like any other. The report compares every search artifact, and per query and overall says whether
the rankings are identical, the same top-k sets in another order, or other passages, with R@k, RR@k and
nDCG@k of both (ir-measures, when there are qrels: synthetic queries have them) and whether their
difference stands out of the query-to-query noise (a paired bootstrap interval).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from colbert_swap.proof.compare.runs import RunComparison, compare_runs
from colbert_swap.errors import UserError
from colbert_swap.runs.execute import run_config
from colbert_swap.runs.replay import as_names, replay
from colbert_swap.proof.report import proof
from colbert_swap.proof.report.plots import retrieval_per_query
from colbert_swap.proof.report.report import Report, ReportData
from colbert_swap.proof.report.tables import table
from colbert_swap.colbert.resources import Resources
from colbert_swap.colbert.retrieval import RetrievalVerdict, effectiveness, ranking_differences, retrieval_verdict
from colbert_swap.runs.search import ensure_searched, ranked_lists, search_artifacts
from colbert_swap.core.store import RunManifest, Store
from colbert_swap.tasks.common import finish, progress_printer, source_run, target_label, tolerance
from colbert_swap.colbert.plan import plan


@dataclass(frozen=True)
class SearchResult:
    """task=search's result: both runs with their search artifacts, compared artifact by artifact and query
    by query."""

    source: RunManifest
    target: RunManifest  # the target as searched (a replay of it when something was injected)
    qids: list[str]
    queries: list[str]
    qrels: dict | None
    k: int
    comparison: RunComparison  # the search artifacts, source vs target
    per_query: list[dict]  # overlap@k, differing pids, Kendall tau, same_order
    lists: tuple[list[list[int]], list[list[int]]]
    effectiveness: tuple[dict, dict] | None  # ir-measures of source and target, when there are qrels
    retrieval: RetrievalVerdict


def search(cfg, store: Store, progress=None) -> SearchResult:
    progress = progress or progress_printer()
    source, target = source_run(cfg, store), store.load(target_label(cfg))
    for run in (source, target):
        if not run.complete:
            raise UserError(f"run {run.label!r} is not complete: capture or replay it first")
    source = ensure_searched(cfg, store, source, progress)
    target = ensure_searched(cfg, store, target, progress)
    if as_names(cfg.inject):
        target = replay(cfg, store, target, source, as_names(cfg.inject), progress=progress)
    return compare_searches(cfg, store, source, target)


def compare_searches(cfg, store: Store, source: RunManifest, target: RunManifest) -> SearchResult:
    texts = store.get(source, "query_texts")
    if texts != store.get(target, "query_texts"):
        raise UserError(f"runs {source.label!r} and {target.label!r} were searched with other queries")
    qrels = Resources(run_config(cfg, source), store, store.run_dir(source.label)).queries.qrels
    k = store.get(source, "search_settings")["k"]
    names = [n for n in search_artifacts(plan(store, source).num_chunks) if n in source.artifacts]
    comparison = compare_runs(store, source, target, names=names, force=True, tol=tolerance(cfg))
    la, lb = ranked_lists(store, source), ranked_lists(store, target)
    qids = texts["qids"]
    eff = (effectiveness(la, qrels, k, qids), effectiveness(lb, qrels, k, qids)) if qrels else None
    verdict = retrieval_verdict(la, lb, k, *(eff or (None, None)), qids=qids)
    return SearchResult(source, target, qids, texts["texts"], qrels, k, comparison, ranking_differences(la, lb, k),
                        (la, lb), eff, verdict)


def search_one(cfg, store: Store) -> int:
    """`task=search run=X`: search one run here (it must have been computed here) and keep its artifacts."""
    run = ensure_searched(cfg, store, store.load(str(cfg.run)), progress_printer())
    texts, k = store.get(run, "query_texts"), store.get(run, "search_settings")["k"]
    print(f"run {run.label!r}: searched {len(texts['texts'])} queries (k={k}); its search artifacts are in "
          f"{store.run_dir(run.label) / 'manifest.json'}")
    queries = Resources(run_config(cfg, run), store, store.run_dir(run.label)).queries
    qrels = queries.qrels  # this invocation's: they judge the run's queries when those are this invocation's
    if qrels and texts == {"qids": list(queries.qids), "texts": list(queries.texts)}:
        mean = effectiveness(ranked_lists(store, run), qrels, k, texts["qids"])["mean"]
        print("  " + ", ".join(f"{m} {v:.4f}" for m, v in mean.items()) +
              f" (mean over the {sum(q in qrels for q in texts['qids'])} judged queries)")
    return 0


def verdict(result: SearchResult) -> str:
    s, t = result.source.label, result.target.label
    text = result.retrieval.text(s, t)
    differing = [r.name for r in result.comparison.results if not r.same]
    if differing:
        text += f" Search artifacts that differ: {proof.describe(differing)} (first: `{differing[0]}`)."
    else:
        text += " Every search artifact is bitwise equal."
    return text


@dataclass(frozen=True)
class SearchData(ReportData):
    """report.json of task=search source=A target=B: the two runs' rankings and search artifacts compared."""

    source: str
    target: str
    """The target as searched: a replay of it when something was injected."""
    injected: list[str]
    """What inject= named: the source's artifacts injected into the target before its search; else empty."""
    k: int
    """The depth of the rankings compared (search.k of the source's search)."""
    retrieval: dict
    """The rankings compared: status, counts and status per query, measure deltas (colbert.retrieval)."""
    computed_in: dict[str, str]
    """Run label -> the environment id its rankings (`ranked_pids`) were computed in."""
    qids: list[str]
    per_query: list[dict]
    """Per query, in the order of `qids`: overlap@k, pids in one top-k only, Kendall tau, same_order."""
    artifacts: dict[str, dict]
    """Every search artifact, source vs target: its comparison (status, stage, max_abs, mad, mismatches, ...)."""
    effectiveness: dict | None
    """Run label -> its R@k, RR@k and nDCG@k (mean and per query), when there are qrels; else null."""


def run(cfg) -> int:
    from colbert_swap.env.provenance import short

    store = Store(cfg.store.root)
    if cfg.run and not cfg.source:
        return search_one(cfg, store)
    result = search(cfg, store)
    s, t, k = result.source.label, result.target.label, result.k
    folder = proof.out_dir(cfg, "search")
    per, eff, qids = result.per_query, result.effectiveness, result.qids
    delta = [eff[1]["per_query"][q][f"nDCG@{k}"] - eff[0]["per_query"][q][f"nDCG@{k}"] for q in qids] if eff else None
    plot = retrieval_per_query([q["overlap"] for q in per], delta, k, folder / "per_query.png")
    rows = [[qids[i], _short(result.queries[i]), result.retrieval.per_query[i], f"{p['overlap']:.2f}", p["differing"],
             _tau(p["kendall_tau"]), *([f"{delta[i]:+.4f}"] if delta else [])]
            for i, p in enumerate(per) if not p["same_order"]][:25]
    where = [[run.label, f"`{run.computed_in('ranked_pids')}`", short(run.environments.get(
        run.computed_in("ranked_pids"), run.provenance))] for run in (result.source, result.target)]
    sections = ["## Where each side was searched (its queries encoded, its artifacts scored)\n\n"
                + table(["run", "computed in", "environment"], where),
                f"## Search artifacts ({s} vs {t})\n\n" + proof.comparison_table(result.comparison)]
    if eff:
        sections.append("## Effectiveness (ir-measures; synthetic qrels: each query's source passage)\n\n" + table(
            ["measure", s, t, "difference", "95% CI (paired bootstrap)", "Wilcoxon p", "beyond noise?"],
            [[d.measure, f"{d.a:.4f}", f"{d.b:.4f}", f"{d.delta:+.4f}", f"[{d.low:+.4f}, {d.high:+.4f}]",
              f"{d.p_value:.3g}", "yes" if d.significant else "no"] for d in result.retrieval.deltas]))
    sections.append(f"## Queries whose top-{k} differs (first 25)\n\n" + (table(
        ["qid", "query", "ranking", f"overlap@{k}", "differing pids", "Kendall tau", *(["ΔnDCG"] if delta else [])],
        rows) if rows else "None."))
    report = Report("search", f"search: {s} vs {t}", verdict(result), sections, runs=[result.source, result.target],
                    figures=[plot.name], data=SearchData(
        source=s, target=t, injected=as_names(cfg.inject), k=k, retrieval=result.retrieval.to_json(),
        computed_in={r.label: r.computed_in("ranked_pids") for r in (result.source, result.target)},
        qids=qids, per_query=per, artifacts=proof.artifact_json(result.comparison.results),
        effectiveness={s: eff[0], t: eff[1]} if eff else None))
    return finish(folder, report)


def _short(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def _tau(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.3f}"
