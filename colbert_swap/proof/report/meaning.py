"""The "What this means" section of report.md and report.json: one paragraph per diverging artifact
(colbert_swap/proof/analysis computes them), and a histogram figure per diverging float artifact, drawn here.

    markdown, data = meaning(store, source, target, comparison, folder, "What this means (a vs b)")
"""

from __future__ import annotations

from pathlib import Path

from colbert_swap.proof.analysis.divergence import Explanation, analyze
from colbert_swap.proof.compare.runs import RunComparison
from colbert_swap.proof.report.plots import histogram
from colbert_swap.core.store import RunManifest, Store


def meaning(store: Store, a: RunManifest, b: RunManifest, comparison: RunComparison, folder: Path,
            title: str = "What this means", names: list[str] | None = None) -> tuple[str, dict]:
    """The markdown section ("" when nothing diverges) and its report.json part; figures go to `folder`."""
    explanations = analyze(store, a, b, comparison, names)
    figures = {e.name: histogram(e.magnitude, Path(folder) / f"explain-{e.name}.png").name
               for e in explanations if e.magnitude is not None and e.magnitude.mismatches}
    return section(explanations, figures, title), {e.name: {**e.to_json(), "figure": figures.get(e.name)}
                                                   for e in explanations}


def section(explanations: list[Explanation], figures: dict[str, str], title: str = "What this means") -> str:
    if not explanations:
        return ""
    lines = [f"## {title}"]
    for e in explanations:
        text = f"**`{e.name}`**: {e.text}"
        if e.name in figures:
            text += f" ![{e.name}]({figures[e.name]})"
        lines.append(text)
    return "\n\n".join(lines)
