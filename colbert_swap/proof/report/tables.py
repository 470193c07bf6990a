"""Plain-text tables for the terminal and markdown."""

from __future__ import annotations

from colbert_swap.core.store import RunManifest


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A markdown table whose columns line up in a terminal too."""
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def artifact_table(manifest: RunManifest, order: list[str]) -> str:
    rows = []
    for name in order:
        rec = manifest.artifacts.get(name)
        if rec is None:
            rows.append([name, "-", "missing", "", ""])
            continue
        ref = rec.ref
        kind = ref.dtype if ref.kind == "tensor" else "json"
        shape = "x".join(map(str, ref.shape)) if ref.shape else ("scalar" if ref.kind == "tensor" else "")
        rows.append([name, rec.stage, kind, shape or "()", ref.hash[:12]])
    return table(["artifact", "stage", "dtype", "shape", "hash"], rows)
