"""task=bisect envs=[...in order...]: the first adjacent pair that changes the final index, found with about
log2(N) captures instead of N, then `locate` on that pair.

    python -m colbert_swap task=bisect envs=[torch-2.0.1,torch-2.1.0,torch-2.2.2,torch-2.3.1,torch-2.4.1]

It assumes one change along the list (as `git bisect` does): the ends are captured first; when they give
the same index there is nothing to find.
"""

from __future__ import annotations

from colbert_swap.index_files import run_index_differences
from colbert_swap.errors import UserError
from colbert_swap.matrix import Study, cause_text, differing_text
from colbert_swap.report import proof
from colbert_swap.report.tables import table
from colbert_swap.store import Store
from colbert_swap.tasks.common import progress_printer


def run(cfg) -> int:
    if len(cfg.envs or []) < 2:
        raise UserError("task=bisect needs envs=[A,...,Z] (at least two specs from conf/env/, oldest first)")
    store = Store(cfg.store.root)
    study = Study(cfg, store, list(cfg.envs), progress_printer())
    names, memo, steps = study.names, {}, []

    def capture(i: int) -> str:
        if not study.capture(names[i]):
            raise UserError(f"bisect stops: {study.failures[names[i]]}")
        return names[i]

    def index_same(i: int, j: int) -> bool:
        differing = run_index_differences(store, store.load(capture(i)), store.load(capture(j)))
        if differing is None:
            raise UserError(f"bisect stops: run {names[i]!r} or {names[j]!r} has no index folder to compare")
        same = not differing  # colbert-ai's index files themselves
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
        verdict = (f"The first change of the final index is {names[lo]} -> {names[hi]} "
                   f"(root cause: {cause_text(pair)}).")
    captured = [n for n in names if study.captured(n)]
    verdict += f" {len(captured)} of {len(names)} environments captured."
    md = [f"# bisect: {' -> '.join(names)}", verdict, "## Steps", table(["compared", "result"], steps)]
    if pair is not None:
        chunks = store.get(store.load(pair.b), "num_chunks")
        md += [f"## {pair.a} -> {pair.b}", f"Artifacts that differ: {differing_text(pair, chunks)}",
               (pair.locate or {}).get("verdict", "")]
    report = {"task": "bisect", "envs": names, "captured": captured, "steps": steps, "verdict": verdict,
              "pair": pair.to_json() if pair else None}
    path = proof.write(folder, report, "\n\n".join(md) + "\n")
    print(verdict)
    print(f"\nreport: {path}")
    return 0
