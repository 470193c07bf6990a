"""task=locate: find the smallest set of injected tensors that explains all divergence.

    python -m colbert_swap task=locate source=2.0.1

Round by round: compare the (replayed) target with the source, inject the first diverging artifacts
(every output of that stage, every chunk), replay, repeat until nothing downstream differs. Then drop
each injected group whose removal still leaves nothing different: what remains is minimal.
"""

from __future__ import annotations

from colbert_swap.compare.runs import RunComparison, check_comparable, compare_runs, whole_run
from colbert_swap.errors import UserError
from colbert_swap.report import proof
from colbert_swap.report.explain import explain
from colbert_swap.report.tables import table
from colbert_swap.replay import compact, replay
from colbert_swap.stages import DAG
from colbert_swap.store import Store
from colbert_swap.tasks.common import progress_printer
from colbert_swap.tasks.common import environment_rows, source_run, tolerance
from colbert_swap.tasks.inject import ensure_target


def _groups(names: list[str]) -> list[list[str]]:
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(DAG.producer(n).name, []).append(n)
    return list(groups.values())


def locate(cfg, store: Store, progress=None) -> dict:
    progress = progress or progress_printer()
    source = source_run(cfg, store)
    target = ensure_target(cfg, store, progress)
    check_comparable(source, target, cfg.force)
    num_chunks = store.get(target, "num_chunks")
    memo: dict = {}  # every pair of blobs is read and compared once over all rounds
    tol = tolerance(cfg)
    before = compare_runs(store, source, target, force=True, memo=memo, tol=tol)
    injected: list[str] = []
    current, comparison, rounds = target, compare_runs(store, target, source, force=True, memo=memo, tol=tol), []
    while comparison.first_diverged():
        first = comparison.first_diverged()
        rounds.append({"round": len(rounds) + 1, "run": current.label, "diverged": len(comparison.diverged()),
                       "inject": compact(first, num_chunks)})
        if any(n in injected for n in first):
            raise UserError(f"injecting {first} did not make them equal to the source; the store is inconsistent")
        injected += first
        progress(f"round {len(rounds)}: {proof.plural(len(comparison.diverged()), 'artifact')} "
                 f"{proof.differ(len(comparison.diverged()))}; injecting "
                 f"{', '.join(compact(first, num_chunks))}")
        current = replay(cfg, store, target, source, injected, progress=progress)
        comparison = compare_runs(store, current, source, force=True, memo=memo, tol=tol)
    rounds.append({"round": len(rounds) + 1, "run": current.label, "diverged": 0, "inject": []})
    minimal = _prune(cfg, store, source, target, _groups(injected), progress, memo, tol)
    final = replay(cfg, store, target, source, [n for g in minimal for n in g], progress=progress) if minimal else target
    final_cmp = compare_runs(store, final, source, force=True, memo=memo, tol=tol)
    return {"source": source, "target": target, "before": before, "rounds": rounds, "minimal": minimal,
            "final": final, "final_cmp": final_cmp, "num_chunks": num_chunks,
            "whole": whole_run(store, final_cmp, final, source)}


def _prune(cfg, store, source, target, groups: list[list[str]], progress, memo: dict, tol) -> list[list[str]]:
    """Drop every group whose removal still leaves the replay identical to the source."""
    kept = list(groups)
    for group in list(groups):
        if len(kept) == 1:
            break
        trial = [n for g in kept if g is not group for n in g]
        run = replay(cfg, store, target, source, trial, progress=progress)
        if not compare_runs(store, run, source, force=True, memo=memo, tol=tol).diverged():
            progress(f"{group[0]} is not needed: dropped")
            kept = [g for g in kept if g is not group]
    return kept


def verdict(result: dict) -> str:
    source, target, minimal = result["source"].label, result["target"].label, result["minimal"]
    final: RunComparison = result["final_cmp"]
    index = proof.index_sentence(result["whole"])
    if not minimal:
        order = [r for r in final.results if r.status == "order_only"]
        if order:
            return (f"Runs {source} and {target} do not diverge: every artifact is bitwise equal except the order "
                    "of " + "; ".join(f"`{r.name}` ({r.note})" for r in order) + f". Nothing to locate. {index}")
        return f"Runs {source} and {target} do not diverge: nothing to locate. {index}"
    names = [compact(g, result["num_chunks"]) for g in minimal]
    causes = "; ".join(f"{proof.describe(n)} (stage `{DAG.producer(g[0]).name}`)" for n, g in zip(names, minimal))
    order = [r for r in final.results if r.status == "order_only"]
    left = [r.name for r in final.results if not r.same]
    text = (f"Root cause: {causes}. Injecting {'it' if len(minimal) == 1 else 'these'} from {source} into {target} "
            f"makes every artifact identical to {source}'s")
    if order:
        text += " except the order of " + "; ".join(f"`{r.name}` ({r.note})" for r in order)
    text += "." if not left else f"; still different: {proof.describe(left)}."
    return f"{text} {index}"


def run(cfg) -> int:
    store = Store(cfg.store.root)
    result = locate(cfg, store)
    text = verdict(result)
    s, t = result["source"].label, result["target"].label
    root = [compact(g, result["num_chunks"]) for g in result["minimal"]]
    folder = proof.out_dir(cfg, "locate")
    meaning, meaning_json = explain(store, result["source"], result["target"], result["before"], folder,
                                    f"What this means ({s} vs {t})")
    cause_rows = [[", ".join(f"`{n}`" for n in names), f"`{DAG.producer(g[0]).name}`",
                   result["before"][g[0]].status, f"{result['before'][g[0]].mismatches:,}",
                   proof.num(result["before"][g[0]].max_abs)] for names, g in zip(root, result["minimal"])]
    md = "\n\n".join([
        f"# locate: {s} vs {t}", text,
        "## Environments", table(["", s, t, "differs?"], environment_rows(result["source"], result["target"])),
        "## Rounds", table(["round", "run compared with source", "artifacts differing", "injected next"],
                           [[r["round"], r["run"], r["diverged"], ", ".join(r["inject"])] for r in result["rounds"]]),
        "## Root cause", table(["artifacts", "stage", f"status ({s} vs {t})", "mismatches", "max abs"], cause_rows),
        f"## Before ({s} vs {t})", proof.comparison_table(result["before"]),
        f"## After injecting the root cause (`{result['final'].label}` vs {s})",
        proof.comparison_table(result["final_cmp"], legend=False), *([meaning] if meaning else []), ""])
    report = {"task": "locate", "source": s, "target": t, "injected": [n for g in result["minimal"] for n in g],
              "root_cause": [n for names in root for n in names],
              "root_cause_stages": [DAG.producer(g[0]).name for g in result["minimal"]],
              "rounds": result["rounds"], "replay_run": result["final"].label, "verdict": text,
              "whole_run": result["whole"].to_json(), "tolerance": result["before"].tolerance.to_json(),
              "artifacts": proof.artifact_json(result["final_cmp"].results),
              "before": proof.artifact_json(result["before"].results), "explain": meaning_json}
    path = proof.write(folder, report, md, (result["source"], result["target"], result["final"]))
    print(text)
    print(f"\nreport: {path}")
    return 0
