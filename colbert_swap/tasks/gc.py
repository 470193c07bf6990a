"""task=gc: remove blob files no run points at (left by deleted runs or interrupted writes).

    python -m colbert_swap task=gc

An import that was killed is rolled back first; while an import is running, gc refuses (the import's blobs are
on disk before its manifests name them).
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

from colbert_swap.errors import UserError
from colbert_swap.core.store import Store
from colbert_swap.core.store.bundle import imports_paused
from colbert_swap.tasks.verify import problems


def _no_run_being_written(store: Store, stack: ExitStack) -> None:
    """Take every run's lock, or refuse: a run being written by another process has files on disk that its
    manifest does not name yet (it names a file once it is written), and gc would remove them."""
    for label in store.locked_labels():
        try:
            stack.enter_context(store.lock(label, wait=False))
        except BlockingIOError:
            raise UserError(f"run {label!r} is being written by another process: its newest files are not in its "
                            "manifest yet, and gc would remove them. Run gc once it has ended") from None


def run(cfg) -> int:
    store = Store(cfg.store.root)
    with ExitStack() as stack:
        removed = stack.enter_context(imports_paused(store))  # an import's blobs are on disk before its manifest
        if removed is not None:
            print(f"an interrupted import was rolled back: {removed} files removed")
        _no_run_being_written(store, stack)
        _, orphans, _ = problems(store)
        freed = 0
        for path in orphans:
            freed += Path(path).stat().st_size
            Path(path).unlink()
    print(f"removed {len(orphans)} unreferenced files ({freed / 2**20:.1f} MiB)")
    return 0
