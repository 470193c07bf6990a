"""What the comparing tasks share: resolving the runs named on the command line."""

from __future__ import annotations

from colbert_swap.compare.tolerances import Tolerance
from colbert_swap.errors import UserError
from colbert_swap.provenance import default_run_label
from colbert_swap.store import RunManifest, Store

# Provenance facts shown side by side in reports.
ENV_KEYS = ("python", "torch", "cuda", "cudnn", "gpu", "cpu_capability", "transformers", "colbert-ai", "faiss",
            "numpy", "env")


def source_run(cfg, store: Store) -> RunManifest:
    if not cfg.source:
        raise UserError(f"this task needs source=RUN (runs in {store.root}: {', '.join(store.runs()) or 'none'})")
    return store.load(str(cfg.source))


def target_label(cfg) -> str:
    return str(cfg.target or cfg.run or default_run_label())


def environment_rows(*runs: RunManifest) -> list[list[str]]:
    rows = []
    for key in ENV_KEYS:
        values = [str(r.provenance.get(key)) for r in runs]
        rows.append([key, *values, "" if len(set(values)) == 1 else "differs"])
    perturb = [str(r.config.get("perturb")) for r in runs]
    rows.append(["perturb", *perturb, "" if len(set(perturb)) == 1 else "differs"])
    return rows


def tolerance(cfg) -> Tolerance:
    """compare.tolerance and compare.per_artifact of this invocation."""
    return Tolerance.from_config(cfg.get("compare"))
