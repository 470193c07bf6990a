"""task=verify: check a whole store (manifests, blob hashes, leftovers, orphans) and change nothing.

    python -m colbert_swap task=verify          # exit status 1 when it finds a problem

Problems: a manifest that cannot be read or was edited, a blob that is missing or does not match its
hash (`task=repair run=NAME` computes it again), a run that never finished (resume it with the same command, or remove it with `task=rm run=NAME`),
a run folder without a manifest. Unreferenced blob files are listed too (not a problem: `task=gc`
removes them), and the artifacts of runs imported from a bundle that left their bytes out (task=export
artifacts=index): not in this store by choice, not a problem. An import that was killed is rolled back first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from colbert_swap.errors import UserError
from colbert_swap.proof.report import proof
from colbert_swap.proof.report.report import Report, ReportData
from colbert_swap.core.store import Store
from colbert_swap.core.store.bundle import recover_interrupted_import
from colbert_swap.tasks.common import finish

SHOWN = 20  # unreferenced files listed by name; the rest counted


def problems(store: Store) -> tuple[list[str], list[str], int]:
    """(problems, orphan blob files, blobs checked)."""
    found: list[str] = []
    refs = {}
    for label in store.runs():
        try:
            manifest = store.load(label)
        except UserError as exc:
            found.append(str(exc))
            continue
        absent = store.absent_by_choice(manifest)  # not in this store by choice (by_choice)
        refs.update({r.ref.hash: r.ref for n, r in manifest.artifacts.items() if n not in absent})
        found += [f"{why}: `python -m colbert_swap task=repair run={label}` computes it again"
                  for why in store.lost(manifest).values()]
        if not manifest.complete:
            kind = manifest.origin.kind
            found.append(f"run {label!r} is incomplete (a {kind} that stopped): run the same command to resume it, "
                         f"or `python -m colbert_swap task=rm run={label}` to remove it")
    for folder in leftovers(store):
        found.append(f"folder {folder} holds no manifest (a run that failed before its first stage): "
                     f"`python -m colbert_swap task=rm run={folder.name}` removes it")
    try:
        referenced = store.referenced()
    except UserError:
        referenced = refs
    known = {store.blobs.path(ref) for ref in referenced.values()}
    orphans = [str(p) for p in store.blob_files() if p not in known]
    return found, orphans, len(refs)


def absent_by_choice(store: Store, label: str) -> tuple[list[str], list[str]]:
    """The artifacts of run `label` whose files are not here by choice: (those its capture kept only the hash of,
    those the bundle it was imported from left out)."""
    try:
        manifest = store.load(label)
    except UserError:
        return [], []  # a problem of its own
    absent = store.absent_by_choice(manifest)
    return sorted(absent & set(manifest.hash_only)), sorted(absent - set(manifest.hash_only))


def by_choice(store: Store, labels: list[str] | None = None) -> list[str]:
    """One line per run with artifacts whose bytes are not here by choice: which, and why (store.keep, a bundle)."""
    def listed(names: list[str]) -> str:
        return ", ".join(names[:10]) + (f" and {len(names) - 10:,} more" if len(names) > 10 else "")

    out = []
    for label in store.runs() if labels is None else labels:
        hashed, left = absent_by_choice(store, label)
        if hashed:
            out.append(f"run {label!r}: {proof.plural(len(hashed), 'artifact')} kept as their hash only (its capture's "
                       f"store.keep; computed again when a comparison or replay reads them): {listed(hashed)}")
        if left:
            bundle = (store.imported(label) or {}).get("bundle", "a bundle")
            out.append(f"run {label!r}: {proof.plural(len(left), 'artifact')} not in this store by choice "
                       f"(imported from {bundle} without them): {listed(left)}")
    return out


def leftovers(store: Store) -> list[Path]:
    base = store.root / "runs"
    return sorted(p for p in base.iterdir() if p.is_dir() and not (p / "manifest.json").exists()) \
        if base.exists() else []


@dataclass(frozen=True)
class VerifyData(ReportData):
    """report.json of task=verify."""

    store: str
    """The store's root, resolved."""
    problems: list[str]
    """One sentence per problem (a manifest edited or unreadable, a blob missing or damaged, a run incomplete, ...)."""
    unreferenced: list[str]
    """Blob files no manifest refers to (task=gc removes them): every one, not only those printed."""
    blobs_checked: int
    """Distinct artifact blobs (by hash) read and checked against their hashes."""
    runs: list[str]
    """The store's run labels."""


def run(cfg) -> int:
    store = Store(cfg.store.root)
    removed = recover_interrupted_import(store)
    if removed is not None:
        print(f"an interrupted import was rolled back: {removed} files removed")
    found, orphans, checked = problems(store)
    chosen = by_choice(store)
    for line in found:
        print(f"problem: {line}")
    for line in chosen:
        print(f"by choice: {line}")
    for path in orphans[:SHOWN]:
        print(f"unreferenced: {path}")
    if len(orphans) > SHOWN:
        print(f"unreferenced: ... and {len(orphans) - SHOWN:,} more")
    verdict = (f"{proof.plural(len(store.runs()), 'run')}, {proof.plural(checked, 'artifact blob')} checked against "
               f"their hashes: {proof.plural(len(found), 'problem')}, {proof.plural(len(orphans), 'unreferenced file')}"
               + (" (task=gc removes them)" if orphans else ""))
    report = Report("verify", f"verify {store.root}", verdict, [
        "## Problems\n\n" + ("\n".join(f"- {p}" for p in found) or "None."),
        "## Unreferenced files\n\n" + ("\n".join(f"- `{p}`" for p in orphans) or "None."),
        *(["## Not in this store by choice\n\n" + "\n".join(f"- {line}" for line in chosen)] if chosen else [])],
        VerifyData(store=str(store.root.resolve()), problems=found, unreferenced=orphans, blobs_checked=checked,
                   runs=store.runs()))
    finish(proof.out_dir(cfg, "verify"), report)
    return 1 if found else 0
