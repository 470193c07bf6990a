"""task=export run=NAME: one zip file that carries run NAME to another machine (task=import there).

    python -m colbert_swap task=export run=2.1.0                        # ./2.1.0.colbert-swap.zip
    python -m colbert_swap task=export run=2.1.0 artifacts=index out=/tmp/gpu.zip

The bundle holds the run's manifest (byte for byte), its folder (colbert-ai's index files, its log), every blob it
points at (each once), and the runs derived from it that read only it: its drill recordings (NAME+drill,
NAME+ops.MODULE) and searches (NAME.search-...). `artifacts=index` carries only the bytes of the artifacts
colbert-ai's index files are written from, and every JSON artifact (the manifests still name every artifact's
hash, and task=verify lists the others as not in the store by choice). Every blob is checked against its hash as it
goes in; the file appears whole (written beside it, then renamed) or not at all.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from colbert_swap.colbert.index_files import index_artifact
from colbert_swap.core.dag import template
from colbert_swap.core.store import RunManifest, Store
from colbert_swap.core.store.bundle import export_bundle
from colbert_swap.core.store.origin import Drill, Ops, Search
from colbert_swap.errors import UserError
from colbert_swap.proof.report import proof
from colbert_swap.tasks.common import progress_printer
SUFFIX = ".colbert-swap.zip"


def derived_from(store: Store, label: str) -> list[str]:
    """The runs made from run `label` alone: its drill recordings and searches (their origin names it)."""
    out = []
    for other in store.runs():
        if other != f"{label}+drill" and not other.startswith((f"{label}+ops.", f"{label}.search-")):
            continue
        origin = store.load(other).origin
        if (isinstance(origin, (Drill, Ops)) and origin.run == label) or \
                (isinstance(origin, Search) and origin.index == label and origin.Q_from in (None, label)):
            out.append(other)
    return out


def kept(value, runs: list[RunManifest]) -> set[str] | None:
    """The artifacts whose bytes go (None: all) for `artifacts=`: all, index, or names (`embs`: every embs.N)."""
    names = [str(value)] if isinstance(value, str) else [str(v) for v in value or []]
    if not names or "all" in names:
        return None
    present = {n for run in runs for n, record in run.artifacts.items()}
    out: set[str] = set()
    for name in names:
        if name == "index":
            out |= {n for run in runs for n, record in run.artifacts.items() if index_artifact(n, record.ref.kind)}
            continue
        found = {n for n in present if n == name or template(n) == f"{name}.N"}
        if not found:
            close = difflib.get_close_matches(name, sorted({template(n).removesuffix(".N") for n in present}), n=3,
                                              cutoff=0.5)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise UserError(f"artifacts={name!r}: no run exported has an artifact of that name.{hint} Use all, index "
                            "or artifact names (`python -m colbert_swap task=stages` lists them)")
        out |= found
    return out


def run(cfg) -> int:
    if not cfg.run:
        raise UserError("task=export needs run=NAME (python -m colbert_swap task=verify lists the store's runs)")
    store = Store(cfg.store.root)
    label = str(cfg.run)
    runs = [store.load(label)]
    runs += [store.load(other) for other in derived_from(store, label)]
    out = Path(str(cfg.transfer.out or f"{label}{SUFFIX}")).expanduser()  # relative: to where the command runs
    summary = export_bundle(store, [r.label for r in runs], out, keep=kept(cfg.transfer.artifacts, runs),
                            progress=progress_printer())
    print(f"bundle: {summary.path.resolve()} ({summary.size / 2**20:.1f} MiB, written in {summary.seconds:.1f} s)")
    print(f"runs: {', '.join(summary.runs)}")
    print(f"blobs: {summary.blobs:,} files ({summary.blob_bytes / 2**20:.1f} MiB), each checked against its hash")
    for name, left in summary.left_out.items():
        print(f"left out of run {name!r}: the bytes of {proof.plural(len(left), 'artifact')} "
              f"({', '.join(left[:8])}{' ...' if len(left) > 8 else ''}); its manifest keeps their hashes")
    print(f"on the other machine: python -m colbert_swap task=import bundle={summary.path.name}")
    return 0
