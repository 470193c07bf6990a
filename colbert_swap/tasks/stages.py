"""task=stages: print the DAG (stages, inputs, outputs) in execution order. Needs no model or data."""

from __future__ import annotations

from colbert_swap.config import Config
from colbert_swap.proof.report.tables import table
from colbert_swap.colbert.stages import DAG


def rows() -> list[list[str]]:
    out = []
    for s in DAG.stages:
        optional = {a for _, a in s.inputs if DAG.optional(a) and DAG.optional(a) != s.option}
        inputs = [f"[{a}]" if a in optional else a for _, a in s.inputs] + [f"<{r}>" for r in s.resources]
        name = s.name + (".N" if s.per_chunk else "") + (f" (capture.{s.option}=true)" if s.option else "")
        out.append([s.phase, name, ", ".join(inputs) or "-", ", ".join(s.outputs)])
    return out


def run(cfg: Config) -> int:
    print(table(["phase", "stage", "inputs (<resource>)", "outputs"], rows()))
    print("\n.N: one per chunk; .*: every chunk, in order; (capture.X=true): a stage only of runs captured with it;"
          " [x]: read only in those runs.")
    return 0
