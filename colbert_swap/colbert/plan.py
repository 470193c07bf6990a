"""A run's plan: its chunks, its phases and its optional stages, kept in its manifest (`RunManifest.plan`) when
the run is executed (colbert_swap/runs/execute.py), and read with `plan(store, run)`.

    p = plan(store, store.load("2.1.0"))
    p.num_chunks, p.phases, p.options        # 2, ('setup', 'train', 'index', 'finalize'), ()
    p.nodes()                                # the run's DAG nodes, in colbert-ai's order
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from colbert_swap.colbert.stages import DAG
from colbert_swap.config import capture_options
from colbert_swap.core.dag import INDEXING, Node
from colbert_swap.core.store import RunManifest, Store


@dataclass(frozen=True)
class Plan:
    """What a run computes: its chunks, its phases (indexing, and search when it searched) and the optional
    stages it was captured with (capture.batches)."""

    num_chunks: int
    phases: tuple[str, ...] = INDEXING
    options: tuple[str, ...] = ()

    def nodes(self, phases: Iterable[str] | None = None) -> list[Node]:
        return DAG.nodes(self.num_chunks, self.phases if phases is None else phases, self.options)

    def artifacts(self) -> list[str]:
        return [o for n in self.nodes() for o in n.outputs]

    def to_json(self) -> dict:
        return {"num_chunks": self.num_chunks, "phases": list(self.phases), "options": list(self.options)}


def plan(store: Store, run: RunManifest) -> Plan:
    """The plan of a stored run: from its manifest (runs written before it was kept: from its artifacts)."""
    kept = run.plan or {}
    if "num_chunks" in kept:
        phases = tuple(kept["phases"])
    else:
        kept = {"num_chunks": store.get(run, "num_chunks"), "options": sorted(capture_options(run.config))}
        phases = INDEXING
    if "query_texts" in run.artifacts and "search" not in phases:  # searched after its capture
        phases = (*phases, "search")
    return Plan(int(kept["num_chunks"]), phases, tuple(kept.get("options", ())))
