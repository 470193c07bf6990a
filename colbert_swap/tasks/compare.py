"""task=compare: two stored runs, artifact by artifact, in pipeline order.

    python -m colbert_swap task=compare source=2.0.1 target=2.1.0
"""

from __future__ import annotations

from dataclasses import dataclass

from colbert_swap.runs.recompute import readable
from colbert_swap.proof.compare.comparators import Status
from colbert_swap.proof.compare.runs import RunComparison, WholeRun, compare_runs, inputs_sentence, whole_run
from colbert_swap.proof.report import proof
from colbert_swap.proof.report.meaning import meaning
from colbert_swap.proof.report.report import Report, ReportData
from colbert_swap.core.dag import template
from colbert_swap.env.provenance import environment_differences
from colbert_swap.colbert.resources import config_read
from colbert_swap.colbert.stages import DAG
from colbert_swap.core.store import RunManifest, Store
from colbert_swap.tasks.common import environments_section, finish, source_run, target_label, progress_printer, tolerance


def verdict(comparison: RunComparison, whole: WholeRun) -> str:
    n = len(comparison.results)
    left = comparison.diverged()
    order = [r.name for r in comparison.results if r.status == Status.ORDER_ONLY]
    if not left:
        held = " both runs hold" if whole.alone else ""
        text = f"Runs {comparison.a} and {comparison.b} are identical: all {n} artifacts{held} are bitwise equal"
        text += (f" ({len(order)} up to an order that carries no meaning: {proof.describe(order)})." if order
                 else ".")
        return text + " " + proof.index_sentence(whole)
    first = comparison.first_diverged()
    stage = DAG.producer(first[0])
    inputs = [a for _, a in stage.inputs]
    inputs_same = all(r.same for r in comparison.results if any(template(r.name) == template(i) for i in inputs))
    keys = config_keys(comparison, stage) if inputs_same else []
    why = ("some of its inputs differ too" if not inputs_same else
           f"its input artifacts are identical in both runs, and the runs' configs differ in {'; '.join(keys)}, "
           f"which the stage reads: the difference is the config's, not the environment's" if keys else
           "its input artifacts are identical in both runs, so the stage itself depends on the environment")
    unread = [r.name for r in comparison.results if r.status == Status.UNREAD]
    unread_text = (f"{proof.plural(len(unread), 'artifact')} of them {'was' if len(unread) == 1 else 'were'} not "
                   f"compared, {proof.describe(unread)}: their hashes differ, but the bytes of one run are not in "
                   "this store (left out of the bundle it was imported from). " if unread else "")
    return (f"{len(left)} of {n} artifacts {proof.differ(len(left))} between {comparison.a} and {comparison.b}. "
            f"{unread_text}The "
            f"first divergence "
            f"is {proof.describe(first)} (stage `{stage.name}`): {why}. To test whether it explains everything "
            f"downstream: `python -m colbert_swap inject={stage.outputs[0].removesuffix('.N')} "
            f"source={comparison.a} target={comparison.b}`. " + proof.index_sentence(whole))


def config_keys(comparison: RunComparison, stage) -> list[str]:
    """The config differences of the two runs ('index.kmeans_backend: 'faiss' vs 'torch'') in keys the stage
    reads through its resources (resources.CONFIG_READ); keys of how a run is computed (config.HOW) excluded."""
    read = config_read(stage.resources)
    return [d for d in comparison.config_diffs
            if any(d.split(":", 1)[0] == k or d.startswith(k + ".") for k in read)]


@dataclass(frozen=True)
class RunsCompared:
    """task=compare's result: every artifact, and the runs as wholes (index files included)."""

    source: RunManifest
    target: RunManifest
    artifacts: RunComparison
    whole: WholeRun

    @property
    def verdict(self) -> str:
        return (inputs_sentence(self.source, self.target) + environment_differences(
            self.source.provenance, self.target.provenance, (self.source.label, self.target.label))
                + verdict(self.artifacts, self.whole))


def compare(cfg, store: Store) -> RunsCompared:
    source = source_run(cfg, store)
    target = store.load(target_label(cfg))
    readable(cfg, store, source, target, progress_printer())
    artifacts = compare_runs(store, source, target, force=cfg.force, tol=tolerance(cfg),
                             progress=progress_printer())
    return RunsCompared(source, target, artifacts, whole_run(store, artifacts, source, target))


@dataclass(frozen=True)
class CompareData(ReportData):
    """report.json of task=compare (source vs target)."""

    source: str
    target: str
    injected: list[str]
    """Always empty: nothing is injected (a key every comparing report has, for sweep summaries)."""
    root_cause: list[str]
    """Always empty: compare does not locate (task=locate does)."""
    first_diverged: list[str]
    """The earliest artifacts that differ, with every other output of their stage; empty when none differs."""
    counts: dict[str, int]
    """How many artifacts have each status (equal, order_only, allclose, diverged, ...)."""
    whole_run: dict
    """The runs as wholes: artifacts that differ anywhere, and colbert-ai's index files (WholeRun.to_json)."""
    tolerance: dict
    """The tolerance the status `allclose` stands for (table, per dtype, per artifact)."""
    artifacts: dict[str, dict]
    """Per artifact, in pipeline order: its comparison (status, stage, max_abs, mad, mismatches, ...)."""
    explain: dict
    """Per artifact that differs: what its difference means (proof.report.meaning)."""


def run(cfg) -> int:
    store = Store(cfg.store.root)
    result = compare(cfg, store)
    s, t = result.source.label, result.target.label
    folder = proof.out_dir(cfg, "compare")
    meaning_md, meaning_json = meaning(store, result.source, result.target, result.artifacts, folder)
    report = Report("compare", f"compare: {s} vs {t}", result.verdict, runs=[result.source, result.target], sections=[
        environments_section(result.source, result.target),
        f"## Artifacts ({s} vs {t})\n\n" + proof.comparison_table(result.artifacts), meaning_md], data=CompareData(
        source=s, target=t, injected=[], root_cause=[], first_diverged=result.artifacts.first_diverged(),
        counts=result.artifacts.counts(), whole_run=result.whole.to_json(),
        tolerance=result.artifacts.tolerance.to_json(), artifacts=proof.artifact_json(result.artifacts.results),
        explain=meaning_json))
    return finish(folder, report)
