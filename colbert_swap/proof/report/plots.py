"""PNG figures for the reports, where a person would rather look than read a table."""

from __future__ import annotations

import re
from pathlib import Path

from colbert_swap.proof.compare.comparators import Status

STATUS_COLORS = {Status.EQUAL: "#4daf4a", Status.ORDER_ONLY: "#a6d96a", Status.ALLCLOSE: "#fee08b",
                 Status.DIVERGED: "#d73027", Status.UNREAD: "#fdb863", Status.MISSING: "#bbbbbb", "injected": "#4393c3", "": "#ffffff"}
_LAYER = re.compile(r"^bert\.(embeddings|encoder\.layer\.\d+)$|^linear$|^colbert\.doc$")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def divergence_per_layer(rows: list, path: Path) -> Path | None:
    """Mismatching fraction and max abs difference of each layer's output, in execution order (rows: the
    drill's ModuleRow)."""
    layers = [r for r in rows if _LAYER.match(r.module) and r.numel]
    if not layers:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(layers)), 4))
    names = [re.sub(r"^bert\.(encoder\.layer\.)?", lambda m: "layer " if m.group(1) else "", r.module)
             for r in layers]
    ax.plot(names, [r.mismatches / r.numel for r in layers], marker="o", color="#d73027")
    ax.set_ylabel("fraction of elements that differ", color="#d73027")
    ax.set_ylim(0, 1)
    twin = ax.twinx()
    twin.plot(names, [r.max_abs or float("nan") for r in layers], marker="s", color="#4575b4")  # 0: no point
    twin.set_yscale("log")
    twin.set_ylabel("max abs difference", color="#4575b4")
    ax.tick_params(axis="x", rotation=45)
    ax.set_title("Divergence per layer")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def divergence_per_padded_length(batches: list, path: Path) -> Path | None:
    """The final output's mismatching fraction per probe batch (batches: the drill's BatchRow)."""
    if not batches:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(batches)), 3.5))
    labels = [f"b{b.batch}\nlen {b.padded_len}\nbsize {b.bsize}" for b in batches]
    ax.bar(labels, [b.mismatches / b.numel if b.numel else 0 for b in batches], color="#d73027")
    ax.set_ylabel("fraction of output\nelements that differ")
    ax.set_ylim(0, 1)
    ax.set_title("Final output per batch\n(padded length, batch size)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def sweep_heatmap(rows: list[tuple[str, list[str]]], columns: list[str], path: Path,
                  what: str = "injection point") -> Path | None:
    """Injection point (row) x artifact (column), coloured by status after the replay (or job x artifact)."""
    if not rows:
        return None
    from matplotlib.colors import to_rgb

    plt = _pyplot()
    grid = [[to_rgb(STATUS_COLORS.get(status, "#ffffff")) for status in statuses] for _, statuses in rows]
    fig, ax = plt.subplots(figsize=(max(6, 0.28 * len(columns)), max(2.5, 0.4 * len(rows) + 1.5)))
    ax.imshow(grid, aspect="auto")
    ax.set_xticks(range(len(columns)), columns, rotation=90, fontsize=7)
    ax.set_yticks(range(len(rows)), [name for name, _ in rows], fontsize=8)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for s, c in STATUS_COLORS.items() if s]
    ax.legend(handles, [s for s in STATUS_COLORS if s] + [], loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7)
    ax.set_ylabel(what)
    ax.set_title("Status against the source run" + (" after the replay (blue: injected)" if what == "injection point"
                                                    else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def retrieval_per_query(overlap: list[float], delta: list[float] | None, k: int, path: Path) -> Path | None:
    """One bar per query: overlap@k of the two rankings, and the change of nDCG@k where there are qrels."""
    plt = _pyplot()
    rows = 2 if delta is not None else 1
    fig, axes = plt.subplots(rows, 1, figsize=(max(6, len(overlap) * 0.18), 2.6 * rows), squeeze=False)
    queries = range(len(overlap))
    axes[0][0].bar(queries, overlap, color="#4c72b0")
    axes[0][0].set_ylim(0, 1.05)
    axes[0][0].set_ylabel(f"overlap@{k}")
    if delta is not None:
        axes[1][0].bar(queries, delta, color=["#c44e52" if d < 0 else "#55a868" for d in delta])
        axes[1][0].axhline(0, color="black", linewidth=0.5)
        axes[1][0].set_ylabel(f"nDCG@{k}: target - source")
    axes[-1][0].set_xlabel("query")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def histogram(m, path: Path) -> Path:
    """ULP distances (power-of-two bins) and absolute differences (decades) of the mismatching elements,
    with the expected rounding noise marked."""
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
    return path


def _bound_bin(m) -> float:
    """The x position (bar index) of the bin that holds the rounding bound."""
    keys = list(m.ulp_hist)
    for i, key in enumerate(keys):
        low = 0.0 if key == "<1" else float(key.split("-")[0])
        high = 1.0 if key == "<1" else float(key.split("-")[-1]) + 1
        if low <= m.bound_units < high:
            return i
    return len(keys) - 0.5 if keys and m.bound_units >= 1 else -0.5
