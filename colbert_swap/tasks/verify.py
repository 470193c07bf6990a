"""task=verify: check a whole store (manifests, blob hashes, orphans) and change nothing.

    python -m colbert_swap task=verify          # exit status 1 when it finds a problem
"""

from __future__ import annotations

from colbert_swap.errors import UserError
from colbert_swap.store import Store


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
        for name, record in manifest.artifacts.items():
            refs[record.ref.hash] = record.ref
            try:
                store.blobs.get(record.ref, what=f"run {label!r} artifact {name!r}")
            except UserError as exc:
                found.append(str(exc))
        if not manifest.complete and manifest.origin.get("kind") == "capture":
            found.append(f"run {label!r} is incomplete (a capture that stopped; run the same command to resume it)")
    try:
        referenced = store.referenced()
    except UserError:
        referenced = refs
    known = {store.blobs.path(ref) for ref in referenced.values()}
    orphans = [str(p) for p in store.blob_files() if p not in known]
    return found, orphans, len(refs)


def run(cfg) -> int:
    store = Store(cfg.store.root)
    found, orphans, checked = problems(store)
    for line in found:
        print(f"problem: {line}")
    print(f"{len(store.runs())} runs, {checked} artifact blobs checked against their hashes: "
          f"{len(found)} problems, {len(orphans)} unreferenced files (task=gc removes them)")
    return 1 if found else 0
