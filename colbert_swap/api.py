"""colbert_swap as a library: the config a command line runs with, and a task run on it.

    from colbert_swap.api import compose, run
    cfg = compose("run=a", "collection.num_passages=200")    # as `python -m colbert_swap run=a ...` would
    status = run(cfg)                                         # the task's exit status; its report under store.root
"""

from __future__ import annotations

from colbert_swap.tasks import compose, run

__all__ = ["compose", "run"]
