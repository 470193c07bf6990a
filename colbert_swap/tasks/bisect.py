"""task=bisect envs=[...in order...]: the first adjacent pair that changes the final index, found with about
log2(N) captures instead of N, then `locate` on that pair.

    python -m colbert_swap task=bisect envs=[torch-2.0.1,torch-2.1.0,torch-2.2.2,torch-2.3.1,torch-2.4.1]
    python -m colbert_swap task=bisect envs=torch env_cache=/work/envcache     # a whole axis of axes.yaml

It assumes one change along the list (as `git bisect` does): the ends are captured first; when they give
the same index there is nothing to find. The pair it finds is explained as task=matrix explains a pair:
`locate` in the later environment, the module and op drill of an encoder change, and the packages that
differ between the two environments (reports linked, kept in STORE/matrix/<a>-vs-<b>/ for the next run).
"""

from __future__ import annotations

from dataclasses import dataclass

from colbert_swap.study.compatibility import packages_text
from colbert_swap.errors import UserError
from colbert_swap.colbert.index_files import data_differences, run_index_differences
from colbert_swap.study.matrix import Pair, Study, cause_text, differing_text, expand_envs
from colbert_swap.proof.report import proof
from colbert_swap.proof.report.report import Report, ReportData
from colbert_swap.proof.report.tables import table
from colbert_swap.core.store import Store
from colbert_swap.tasks.common import finish, progress_printer
from colbert_swap.tasks.matrix import drill_text, pair_section
from colbert_swap.colbert.plan import plan


@dataclass(frozen=True)
class BisectData(ReportData):
    """report.json of task=bisect envs=[...]: the first adjacent pair that changes the final index."""

    envs: list[str]
    """The environments, in the order asked (axes expanded)."""
    captured: list[str]
    """The environments captured to find it (about log2(N) of them)."""
    steps: list[list[str]]
    """Each comparison made, in order: [`A vs B`, `same index` | `index differs`]."""
    pair: dict | None
    """The pair found, explained as task=matrix explains a pair (study.matrix.Pair); null when the ends agree."""


def run(cfg) -> int:
    envs = expand_envs(cfg.matrix.envs)
    if len(envs) < 2:
        raise UserError("task=bisect needs envs=[A,...,Z] (at least two specs from conf/env/, oldest first, or an "
                        "axis of conf/env/axes.yaml: envs=torch)")
    store = Store(cfg.store.root)
    study = Study(cfg, store, envs, progress_printer())
    names, memo, steps = study.names, {}, []

    def capture(i: int) -> str:
        if not study.capture(names[i]):
            raise UserError(f"bisect stops: {study.failures[names[i]].text()}")
        return names[i]

    def index_same(i: int, j: int) -> bool:
        differing = run_index_differences(store, store.load(capture(i)), store.load(capture(j)))
        if differing is None:
            raise UserError(f"bisect stops: run {names[i]!r} or {names[j]!r} has no index folder to compare")
        same = not data_differences(differing)  # colbert-ai's index files themselves (their data, not the config)
        steps.append([f"{names[i]} vs {names[j]}", "same index" if same else "index differs"])
        study.progress(f"bisect: {names[i]} vs {names[j]}: {steps[-1][1]}")
        return same

    lo, hi = 0, len(names) - 1
    folder = proof.out_dir(cfg, "bisect")
    if index_same(lo, hi):
        verdict, pair = f"{names[lo]} and {names[hi]} give the same index: no change to find in this range.", None
    else:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if index_same(lo, mid):
                lo = mid
            else:
                hi = mid
        pair = study.pair(names[lo], names[hi], folder, memo)
        verdict = (f"The first change of the final index is {names[lo]} -> {names[hi]} (root cause: "
                   f"{cause_text(pair)}; module / op: {drill_text(pair)}; packages that differ: "
                   f"{packages_text(pair.packages)}).")
    captured = [n for n in names if study.captured(n)]
    verdict += f" {len(captured)} of {len(names)} environments captured."
    sections = ["## Steps\n\n" + table(["compared", "result"], steps),
                *(["\n\n".join(_pair_lines(store, pair))] if pair is not None else [])]
    return finish(folder, Report("bisect", f"bisect: {' -> '.join(names)}", verdict, sections,
                                 BisectData(envs=names, captured=captured, steps=steps,
                                            pair=pair.to_json() if pair else None)))


def _pair_lines(store: Store, pair: Pair) -> list[str]:
    """The pair's section as task=matrix writes it: locate verdict, drill, links, and what differs."""
    chunks = plan(store, store.load(pair.b)).num_chunks
    head, *rest = pair_section(pair)
    return [head, f"Artifacts that differ: {differing_text(pair, chunks)}. Packages that differ: "
                  f"{packages_text(pair.packages, 12)}.", *rest]
