"""task=isolate stage=STAGE source=A: run one stage here on run A's own inputs and compare its outputs
with A's (the shadow comparison of torch.ao.ns: B's stage fed A's inputs).

    python -m colbert_swap task=isolate stage=local_sample_embs source=2.0.1

Equal inputs and different outputs mean the stage itself depends on the environment. "Here" is this
invocation: its installed packages and its `perturb` knobs; model, collection and index settings are A's.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import NamedTuple

from omegaconf import OmegaConf

from colbert_swap.colbert.stages import DAG
from colbert_swap.core.dag import PHASES
from colbert_swap.core.store import RunManifest, Store, check_label
from colbert_swap.core.store.origin import Isolate
from colbert_swap.errors import UserError
from colbert_swap.proof.compare.runs import RunComparison, compare_runs
from colbert_swap.proof.report import proof
from colbert_swap.proof.report.report import Report, ReportData
from colbert_swap.runs.execute import Overrides, Policy, RunSpec, Write, execute, plan
from colbert_swap.tasks.common import progress_printer
from colbert_swap.tasks.common import environments_section, finish, source_run, tolerance


def find_stage(name: str | None):
    names = [s.name for s in DAG.stages]
    if not name:
        raise UserError(f"task=isolate needs stage=STAGE, the stage to run alone; stages: {', '.join(names)}")
    if name in names:
        return DAG.stages[names.index(name)]
    close = difflib.get_close_matches(str(name), names, n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise UserError(f"stage={name!r} is not a stage.{hint} Stages: {', '.join(names)}")


class Isolation(NamedTuple):
    """task=isolate's result: the source, the run of the stage done here, and its outputs compared."""

    source: RunManifest
    isolated: RunManifest
    comparison: RunComparison  # the stage's outputs, here vs the source's

    @property
    def stage(self) -> str:
        return self.isolated.origin.stage

    @property
    def verdict(self) -> str:
        return verdict(self.stage, self.source.label, self.comparison)


def isolate(cfg, store: Store, progress=None) -> Isolation:
    progress = progress or progress_printer()
    source = source_run(cfg, store)
    stage = find_stage(cfg.isolate.stage)
    nodes = [n for n in plan(store, source).nodes(PHASES) if n.stage is stage]
    if not nodes:
        raise UserError(f"run {source.label!r} has no stage {stage.name!r}: it runs only with capture.{stage.option}=true")
    here = OmegaConf.merge(cfg, {k: v for k, v in source.config.items() if k != "perturb"})
    label = check_label(f"{source.label}+isolate.{stage.name}")
    config = {**source.config, "perturb": OmegaConf.to_container(here.perturb)}

    outputs = [o for n in nodes for o in n.outputs]
    progress(f"running stage {stage.name} ({len(nodes)} node{'s' if len(nodes) > 1 else ''}) here on the inputs "
             f"of run {source.label!r}")
    manifest = execute(here, store, RunSpec(label, Isolate(source.label, stage.name), config, source.config_hash),
                       targets=outputs, overrides=Overrides(source, [i for n in nodes for i in n.input_names()]),
                       policy=Policy(write=Write.FRESH, rng=source.rng, index=False), progress=progress)
    return Isolation(source, manifest, compare_runs(store, manifest, source, names=outputs, force=True,
                                                    tol=tolerance(cfg)))


def verdict(stage: str, source: str, comparison: RunComparison) -> str:
    left = comparison.diverged()
    if not left:
        return (f"Stage `{stage}` run here on {source}'s inputs reproduces {source}'s outputs bit for bit: the "
                "stage does not depend on what differs between the environments.")
    worst = max((comparison[n] for n in left), key=lambda r: r.max_abs or 0)
    return (f"Stage `{stage}` run here on {source}'s own inputs gives different outputs ({proof.describe(left)}; "
            f"up to {proof.num(worst.max_abs)} in `{worst.name}`): the inputs are equal, so the stage itself "
            "depends on the environment.")


@dataclass(frozen=True)
class IsolateData(ReportData):
    """report.json of task=isolate: one stage run here on the source's own inputs."""

    source: str
    target: str
    """The label of the run of the stage done here (`SOURCE+isolate.STAGE`)."""
    stage: str
    injected: list[str]
    """Always empty (a key every comparing report has)."""
    root_cause: list[str]
    """Always empty (a key every comparing report has)."""
    stage_depends_on_environment: bool
    """True when an output of the stage here is not the source's (bitwise, or up to an order without meaning)."""
    artifacts: dict[str, dict]
    """The stage's outputs, here vs the source: their comparison (status, stage, max_abs, mad, mismatches, ...)."""


def run(cfg) -> int:
    store = Store(cfg.store.root)
    result = isolate(cfg, store)
    s, stage = result.source.label, result.stage
    report = Report("isolate", f"isolate {stage}: here vs {s}", result.verdict, runs=[result.source, result.isolated],
                    sections=[environments_section(result.source, result.isolated, labels=[s, "here"]),
                              f"## Outputs of `{stage}` (here vs {s})\n\n" + proof.comparison_table(result.comparison)],
                    data=IsolateData(source=s, target=result.isolated.label, stage=stage, injected=[],
                                     root_cause=[], stage_depends_on_environment=bool(result.comparison.diverged()),
                                     artifacts=proof.artifact_json(result.comparison.results)))
    return finish(proof.out_dir(cfg, "isolate"), report)
