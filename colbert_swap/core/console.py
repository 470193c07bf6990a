"""The terminal while a stage runs: colbert-ai, faiss and tqdm print freely, so a stage's prints go to the run's
log (`quiet`) and the package's own progress to the terminal it kept (`console`)."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_CONSOLE = []


def console():
    """The terminal's stderr, kept open beside fd 2, which `quiet` points at the log while a stage runs."""
    if not _CONSOLE:
        _CONSOLE.append(os.fdopen(os.dup(2), "w", buffering=1))
    return _CONSOLE[0]


@contextmanager
def quiet(log: Path) -> Iterator[None]:
    """Send everything written to fd 1 and 2 (Python, C++ faiss, tqdm, warnings) to the run's log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        with open(log, "ab") as f:
            os.dup2(f.fileno(), 1)
            os.dup2(f.fileno(), 2)
            try:
                yield
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        os.close(saved[0])
        os.close(saved[1])
