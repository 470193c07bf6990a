"""The "What this means" section of report.md and report.json: one paragraph per diverging artifact,
and a histogram figure per diverging float artifact (ULP distances and absolute differences)."""

from __future__ import annotations

from pathlib import Path

from colbert_swap.compare.runs import RunComparison
from colbert_swap.explain.magnitude import Magnitude
from colbert_swap.explain.runs import Explanation, explain_runs
from colbert_swap.store import RunManifest, Store


def explain(store: Store, a: RunManifest, b: RunManifest, comparison: RunComparison, folder: Path,
            title: str = "What this means", names: list[str] | None = None) -> tuple[str, dict]:
    """The hook the tasks call: the markdown section ("" when nothing diverges) and its report.json part."""
    explanations = explain_runs(store, a, b, comparison, folder, names)
    return section(explanations, title), to_json(explanations)


def section(explanations: list[Explanation], title: str = "What this means") -> str:
    if not explanations:
        return ""
    lines = [f"## {title}"]
    for e in explanations:
        text = f"**`{e.name}`**: {e.text}"
        if e.figure:
            text += f" ![{e.name}]({e.figure})"
        lines.append(text)
    return "\n\n".join(lines)


def to_json(explanations: list[Explanation]) -> dict:
    return {e.name: e.to_json() for e in explanations}


def histogram(m: Magnitude, path: Path) -> str:
    """ULP distances (power-of-two bins) and absolute differences (decades) of the mismatching elements,
    with the expected rounding noise marked."""
    from colbert_swap.report.plots import _pyplot

    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    left.bar([k.split("-")[0] for k in m.ulp_hist], list(m.ulp_hist.values()), color="#4575b4")
    left.set_xlabel(f"ULP at scale ({m.dtype}), bins <1, 1, 2-3, 4-7, ...")
    left.set_ylabel("elements")
    left.set_yscale("log")
    right.set_yscale("log")
    left.tick_params(axis="x", rotation=45, labelsize=7)
    left.axvline(_bound_bin(m), color="black", linestyle="--", linewidth=1)
    left.set_title(f"bound from rounding: {m.bound_units:.3g} ULP at scale (dashed)")
    right.bar(list(m.abs_hist), list(m.abs_hist.values()), color="#d73027")
    right.set_xlabel("|a - b| (decade's lower edge)")
    right.tick_params(axis="x", rotation=45, labelsize=7)
    right.set_title(f"median |value| {m.scale:.3g}")
    verdict = {"within": "within", "beyond": "beyond", "far_beyond": "far beyond"}[m.verdict]
    fig.suptitle(f"{m.name}: {m.mismatches:,} of {m.numel:,} elements differ, max {m.max_units:.3g} ULP at scale: "
                 f"{verdict} {m.dtype} rounding" + (f" (histograms of {m.sampled:,} of them)"
                                                    if m.sampled < m.mismatches else ""))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return str(path)


def _bound_bin(m: Magnitude) -> float:
    """The x position (bar index) of the bin that holds the rounding bound."""
    keys = list(m.ulp_hist)
    for i, key in enumerate(keys):
        low = 0.0 if key == "<1" else float(key.split("-")[0])
        high = 1.0 if key == "<1" else float(key.split("-")[-1]) + 1
        if low <= m.bound_units < high:
            return i
    return len(keys) - 0.5 if keys and m.bound_units >= 1 else -0.5
