"""colbert-ai's C++ extensions: torch compiles each the first time it is needed, under a lock file in its build
folder (`<TORCH_EXTENSIONS_DIR>/<name>/lock`, torch.utils.file_baton). A process killed while it held that lock
(Ctrl-C in a compile, a test's timeout, a session's end) leaves the file behind, and every later process that
loads the extension waits on it forever, silently: the one wait measured here lasted until a test's 900 s
timeout. The lock holds no process id, so its age decides: no compile of these extensions takes `STALE_AFTER`,
even on two loaded cores (about 30-90 s each measured), so an older lock is removed, and said so."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterable

STALE_AFTER = 15 * 60  # seconds


def clear_stale_locks(names: Iterable[str], progress: Callable[[str], None], now: float | None = None) -> list[Path]:
    """Remove the build locks of extensions `names` older than STALE_AFTER; the locks removed."""
    from torch.utils.cpp_extension import _get_build_directory

    removed = []
    for name in names:
        lock = Path(_get_build_directory(name, verbose=False)) / "lock"
        try:
            seen = lock.stat()
        except FileNotFoundError:
            continue
        age = (now or time.time()) - seen.st_mtime
        if age <= STALE_AFTER:
            continue
        try:
            again = lock.stat()
            if (again.st_ino, again.st_mtime) == (seen.st_ino, seen.st_mtime):  # not a new compile's lock
                lock.unlink()
        except FileNotFoundError:  # another process removed it first
            continue
        progress(f"removed {lock}: left {age / 60:.0f} min ago by a process that stopped while compiling {name} "
                 "(torch would wait on it forever)")
        removed.append(lock)
    return removed
