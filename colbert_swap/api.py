"""colbert_swap as a library: the config a command line runs with, and a task run on it.

    from colbert_swap.api import compose, run
    cfg = compose("run=a", "collection.num_passages=200")    # as `python -m colbert_swap run=a ...` would
    status = run(cfg)                                         # the task's exit status; its report under store.root
"""

from __future__ import annotations

from colbert_swap.config import CONF, Config, check_overrides, expand_aliases, register, validate
from colbert_swap.tasks import run, stage_names

__all__ = ["compose", "run"]


def compose(*overrides: str) -> Config:
    """The config `python -m colbert_swap OVERRIDES...` would run with, checked as it checks it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register()
    overrides = expand_aliases(list(overrides))
    check_overrides(overrides)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra_compose("config", overrides=overrides)
    validate(cfg, stage_names())
    return cfg
