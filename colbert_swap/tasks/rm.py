"""task=rm run=NAME: remove run NAME from the store (its manifest, index and log; blobs stay until task=gc).

    python -m colbert_swap task=rm run=local             # an incomplete run (a capture that failed or stopped)
    python -m colbert_swap task=rm run=2.1.0 force=true  # a complete run too

A complete run is only removed with force=true: it may be the evidence of a proof. Runs derived from it
(replays, drills, searches) keep their own manifests.
"""

from __future__ import annotations

import shutil

from colbert_swap.errors import UserError
from colbert_swap.core.store import Store


def run(cfg) -> int:
    if not cfg.run:
        raise UserError("task=rm needs run=NAME (python -m colbert_swap task=verify lists the store's runs)")
    store = Store(cfg.store.root)
    label = str(cfg.run)
    folder = store.run_dir(label)
    if not folder.exists():
        store.load(label)  # the usual error: not in the store, with its runs and did-you-mean
    with store.lock(label):
        try:
            complete = store.has_run(label) and store.load(label).complete
        except UserError:  # a damaged manifest: not evidence of anything
            complete = False
        if complete and not cfg.force:
            raise UserError(f"run {label!r} is complete; pass force=true to remove it anyway")
        shutil.rmtree(folder)
    print(f"removed run {label!r} ({'complete' if complete else 'incomplete'}) from {store.root}; "
          "`task=gc` frees the blobs no other run uses")
    return 0
