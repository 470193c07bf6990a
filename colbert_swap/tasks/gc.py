"""task=gc: remove blob files no run points at (left by deleted runs or interrupted writes).

    python -m colbert_swap task=gc
"""

from __future__ import annotations

from colbert_swap.store import Store
from colbert_swap.tasks.verify import problems


def run(cfg) -> int:
    store = Store(cfg.store.root)
    _, orphans, _ = problems(store)
    freed = 0
    for path in orphans:
        from pathlib import Path

        freed += Path(path).stat().st_size
        Path(path).unlink()
    print(f"removed {len(orphans)} unreferenced files ({freed / 2**20:.1f} MiB)")
    return 0
