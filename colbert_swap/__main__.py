"""`python -m colbert_swap [task=...] [overrides...]`: a thin Hydra shell over `run(cfg)`."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import hydra

from colbert_swap.config import Config, register, task_name
from colbert_swap.errors import UserError

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
# Every module of colbert_swap/tasks/ with a `run(cfg)` is a task; `common` holds their shared helpers.
TASKS = tuple(sorted(p.stem for p in (Path(__file__).resolve().parent / "tasks").glob("*.py")
                     if p.stem not in ("__init__", "common")))


def run(cfg: Config) -> int:
    cfg.task = task_name(cfg.task, cfg.inject)  # `inject=NAME source=RUN` is the inject task
    if cfg.task not in TASKS:
        raise UserError(f"task={cfg.task!r} is unknown; expected one of: {', '.join(TASKS)}")
    return importlib.import_module(f"colbert_swap.tasks.{cfg.task}").run(cfg)


register()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: Config) -> int:
    try:
        status = run(cfg)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    if status:
        sys.exit(status)
    return status


if __name__ == "__main__":
    main()
