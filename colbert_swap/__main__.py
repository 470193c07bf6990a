"""`python -m colbert_swap [task=...] [overrides...]`: a thin Hydra shell over `run(cfg)`.

Before Hydra sees the command line, `--help` (or `help=NAME`) prints colbert_swap's own help, and every
override key is checked against the schema (colbert_swap/help.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra

from colbert_swap.config import Config, check_overrides, expand_aliases, register, task_name, validate
from colbert_swap.errors import UserError

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def run(cfg: Config) -> int:
    from colbert_swap.tasks import get

    cfg.task = task_name(cfg.task, cfg.inject)  # `inject=NAME source=RUN` is the inject task
    validate(cfg)
    return get(cfg.task).module().run(cfg)


register()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def _hydra_main(cfg: Config) -> int:
    try:
        status = run(cfg)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    if status:
        sys.exit(status)
    return status


def main() -> None:
    from colbert_swap import help as cli_help

    args = sys.argv[1:]
    wanted = next((a.split("=", 1)[1] for a in args if a.startswith("help=")), None)
    try:
        if wanted or "--help" in args or "-h" in args:
            task = wanted or next((a.split("=", 1)[1] for a in args if a.startswith("task=")), None)
            print(cli_help.task_help(task) if task else cli_help.main_help())
            return
        sys.argv[1:] = args = expand_aliases(args)  # module=X is drill.module=X: task options under their task
        if "--hydra-help" not in args:
            check_overrides([a for a in args if not a.startswith("-")])
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    _hydra_main()


if __name__ == "__main__":
    main()
