"""task=compare: two stored runs, artifact by artifact, in pipeline order.

    python -m colbert_swap task=compare source=2.0.1 target=2.1.0
"""

from __future__ import annotations

from colbert_swap.compare.runs import RunComparison, WholeRun, compare_runs, whole_run
from colbert_swap.report import proof
from colbert_swap.report.explain import explain
from colbert_swap.report.tables import table
from colbert_swap.dag import template
from colbert_swap.stages import DAG
from colbert_swap.store import Store
from colbert_swap.tasks.common import environment_rows, source_run, target_label, tolerance


def verdict(comparison: RunComparison, whole: WholeRun) -> str:
    n = len(comparison.results)
    left = comparison.diverged()
    order = [r.name for r in comparison.results if r.status == "order_only"]
    if not left:
        text = f"Runs {comparison.a} and {comparison.b} are identical: all {n} artifacts are bitwise equal"
        text += (f" ({len(order)} up to an order that carries no meaning: {proof.describe(order)})." if order
                 else ".")
        return text + " " + proof.index_sentence(whole)
    first = comparison.first_diverged()
    stage = DAG.producer(first[0])
    inputs = [a for _, a in stage.inputs]
    inputs_same = all(r.same for r in comparison.results if any(template(r.name) == template(i) for i in inputs))
    why = ("its input artifacts are identical in both runs, so the stage itself depends on the environment"
           if inputs_same else "some of its inputs differ too")
    return (f"{len(left)} of {n} artifacts {proof.differ(len(left))} between {comparison.a} and {comparison.b}. The "
            f"first divergence "
            f"is {proof.describe(first)} (stage `{stage.name}`): {why}. To test whether it explains everything "
            f"downstream: `python -m colbert_swap inject={stage.outputs[0].removesuffix('.N')} "
            f"source={comparison.a} target={comparison.b}`. " + proof.index_sentence(whole))


def run(cfg) -> int:
    store = Store(cfg.store.root)
    source = source_run(cfg, store)
    target = store.load(target_label(cfg))
    comparison = compare_runs(store, source, target, force=cfg.force, tol=tolerance(cfg))
    whole = whole_run(store, comparison, source, target)
    text = verdict(comparison, whole)
    folder = proof.out_dir(cfg, "compare")
    meaning, meaning_json = explain(store, source, target, comparison, folder)
    md = "\n\n".join([
        f"# compare: {source.label} vs {target.label}", text, "## Environments",
        table(["", source.label, target.label, "differs?"], environment_rows(source, target)),
        f"## Artifacts ({source.label} vs {target.label})", proof.comparison_table(comparison),
        *([meaning] if meaning else []), ""])
    report = {"task": "compare", "source": source.label, "target": target.label, "injected": [], "root_cause": [],
              "first_diverged": comparison.first_diverged(), "counts": comparison.counts(), "verdict": text,
              "whole_run": whole.to_json(), "tolerance": comparison.tolerance.to_json(),
              "artifacts": proof.artifact_json(comparison.results), "explain": meaning_json}
    path = proof.write(folder, report, md, (source, target))
    print(text)
    print(f"\nreport: {path}")
    return 0
