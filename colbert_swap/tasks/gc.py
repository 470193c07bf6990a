"""task=gc: remove blob files no run points at (left by deleted runs or interrupted writes).

    python -m colbert_swap task=gc
"""

from __future__ import annotations

import fcntl
from contextlib import ExitStack
from pathlib import Path

from colbert_swap.errors import UserError
from colbert_swap.store import Store
from colbert_swap.tasks.verify import problems


def _no_run_being_written(store: Store, stack: ExitStack) -> None:
    """Take every run's lock, or refuse: a run being written by another process has files on disk that its
    manifest does not name yet (it names a file once it is written), and gc would remove them."""
    for path in sorted((store.root / "runs").glob(".*.lock")) if (store.root / "runs").exists() else []:
        f = stack.enter_context(open(path, "a"))
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            label = path.name[1:].removesuffix(".lock")
            raise UserError(f"run {label!r} is being written by another process: its newest files are not in its "
                            "manifest yet, and gc would remove them. Run gc once it has ended") from None
        stack.callback(fcntl.flock, f, fcntl.LOCK_UN)


def run(cfg) -> int:
    store = Store(cfg.store.root)
    with ExitStack() as stack:
        _no_run_being_written(store, stack)
        return _collect(store)


def _collect(store: Store) -> int:
    _, orphans, _ = problems(store)
    freed = 0
    for path in orphans:
        freed += Path(path).stat().st_size
        Path(path).unlink()
    print(f"removed {len(orphans)} unreferenced files ({freed / 2**20:.1f} MiB)")
    return 0
