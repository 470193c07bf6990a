"""The proof report: report.json (machine) and report.md (the seed posts' tables and a verdict)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from colbert_swap.compare.comparators import Comparison
from colbert_swap.compare.runs import RunComparison
from colbert_swap.report.tables import table
from colbert_swap.store.blobs import atomic_write


def out_dir(cfg, task: str) -> Path:
    """cfg.out_dir, else Hydra's output folder for this job, else <store>/reports/<task>-<time>."""
    if cfg.get("out_dir"):
        path = Path(cfg.out_dir)
    else:
        try:
            from hydra.core.hydra_config import HydraConfig

            path = Path(HydraConfig.get().runtime.output_dir)
        except ValueError:  # not under @hydra.main (a library call, a test)
            path = Path(cfg.store.root) / "reports" / f"{task}-{time.strftime('%Y%m%d-%H%M%S')}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def num(x: float | None) -> str:
    if x is None:
        return ""
    return "0" if x == 0 else f"{x:.3g}"


def comparison_table(comparison: RunComparison, names: list[str] | None = None) -> str:
    rows = []
    for r in comparison.results:
        if names is not None and r.name not in names:
            continue
        mark = lambda ok: "" if not r.allclose else ("True" if ok else "**False**")  # noqa: E731
        mismatch = f"{r.mismatches:,} ({r.fraction:.2%})" if r.mismatches else "0"
        status = r.status if r.same else f"**{r.status}**"
        rows.append([f"`{r.name}`", r.stage, r.dtype, r.shape, status, mark(r.allclose.get("torch")),
                     mark(r.allclose.get("bnb")), mismatch, num(r.max_abs), num(r.mad),
                     "" if r.max_ulp is None else str(r.max_ulp)])
    return table(["artifact", "stage", "dtype", "shape", "status", "allclose", "bnb", "mismatches", "max abs",
                  "MAD", "max ULP"], rows)


def artifact_json(results: list[Comparison] | tuple[Comparison, ...]) -> dict:
    return {r.name: r.to_json() for r in results}


def describe(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(f"`{n}`" for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def injection_verdict(injected: list[str], source: str, target: str, after: RunComparison,
                      downstream: list[str]) -> str:
    results = [after[n] for n in downstream]
    equal = [r.name for r in results if r.status == "equal"]
    order = [r for r in results if r.status == "order_only"]
    left = [r.name for r in results if not r.same]
    what = f"Injecting {describe(injected)} from {source} into {target}"
    if not downstream:
        return f"{what} changes nothing downstream: no stage reads it."
    if not left:
        text = f"{what} makes all {len(results)} downstream artifacts identical to {source}'s"
        if order:
            text += " except the order of " + "; ".join(f"`{r.name}` ({r.note})" for r in order)
            text += f"; {len(equal)} are bitwise equal"
        return text + "."
    return (f"{what} leaves {len(left)} of {len(results)} downstream artifacts different from {source}'s: "
            f"{describe(left)}. They also read artifacts that still differ, upstream of or beside the injection.")


def write(folder: Path, report: dict, markdown: str) -> Path:
    atomic_write(folder / "report.json", (json.dumps(report, indent=1, default=str) + "\n").encode())
    atomic_write(folder / "report.md", markdown.encode())
    return folder / "report.md"
