"""task=matrix envs=[A,B,C,...]: capture one config in every environment, compare each adjacent pair, and
locate the root cause of every pair that differs (in the later environment of the pair).

    python -m colbert_swap task=matrix envs=[torch-2.0.1,torch-2.1.0,torch-2.13.0]

The report is the seed posts' headline as a table: which adjacent pair changes which artifacts, and why.
"""

from __future__ import annotations

from pathlib import Path

from colbert_swap.errors import UserError
from colbert_swap.matrix import Pair, Study, cause_text, differing_text
from colbert_swap.report import proof
from colbert_swap.report.tables import table
from colbert_swap.store import Store
from colbert_swap.tasks.capture import progress_printer
from colbert_swap.tasks.common import environment_rows


def pairs_table(study: Study, pairs: list[Pair]) -> str:
    rows = []
    for p in pairs:
        chunks = study.store.get(study.store.load(p.b), "num_chunks")
        first = ", ".join(f"`{n}`" for n in p.comparison.first_diverged()[:3]) or "-"
        rows.append([f"{p.a} -> {p.b}", "changed" if p.index_changed else "same", differing_text(p, chunks), first,
                     cause_text(p)])
    return table(["pair", "final index", "artifacts that differ", "first divergence", "root cause (locate)"], rows)


def run(cfg) -> int:
    if len(cfg.envs or []) < 2:
        raise UserError("task=matrix needs envs=[A,B,...] with at least two specs from conf/env/")
    progress = progress_printer()
    store = Store(cfg.store.root)
    study = Study(cfg, store, list(cfg.envs), progress)
    for name in study.names:
        study.capture(name)
    done = [n for n in study.names if n not in study.failures]
    folder = proof.out_dir(cfg, "matrix")
    memo: dict = {}
    pairs = [study.pair(a, b, folder, memo) for a, b in zip(done, done[1:])]
    headline = _headline(pairs)
    md = [f"# matrix: {' -> '.join(study.names)}", headline, "## Adjacent pairs", pairs_table(study, pairs)]
    if study.failures:
        md += ["## Environments that could not be captured",
               "\n".join(f"- `{n}`: {why.splitlines()[0]}" for n, why in study.failures.items()),
               "Their runs are missing from the table; fix the spec and run the same command again: runs already "
               "captured are kept."]
    md += ["## Environments", table(["", *done, "differs?"], environment_rows(*[store.load(n) for n in done]))]
    for p in pairs:
        if p.locate:
            md += [f"## {p.a} -> {p.b}", p.locate.get("verdict", ""),
                   f"The whole proof, with what each difference means: [locate-{p.a}-vs-{p.b}/report.md]"
                   f"(locate-{p.a}-vs-{p.b}/report.md)."]
    report = {"task": "matrix", "envs": study.names, "captured": done, "failures": study.failures,
              "pairs": [p.to_json() for p in pairs], "verdict": headline}
    path = proof.write(folder, report, "\n\n".join(md) + "\n", [store.load(n) for n in done])
    print(headline)
    print(f"\nreport: {path}")
    return 1 if study.failures else 0


def _headline(pairs: list[Pair]) -> str:
    changed = [p for p in pairs if p.differing]
    if not pairs:
        return "Fewer than two environments were captured: nothing to compare."
    if not changed:
        same_files = all(p.whole.index == {} for p in pairs)
        return (f"All {len(pairs) + 1} environments give bitwise identical artifacts"
                + (" and identical colbert-ai index files." if same_files else "; their index files were not all compared."))
    parts = []
    for p in changed:
        cause = ", ".join(f"`{c}`" for c in (p.locate or {}).get("root_cause") or []) or "not located"
        parts.append(f"{p.a} -> {p.b} {'changes the index' if p.index_changed else 'changes artifacts but not the index'}"
                     f" (root cause: {cause})")
    same = len(pairs) - len(changed)
    return "; ".join(parts) + f". {same} of {len(pairs)} adjacent pairs are identical."
