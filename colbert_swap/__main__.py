"""`python -m colbert_swap [task=...] [overrides...]`: a thin Hydra shell over `run(cfg)`.

Before Hydra sees the command line, `--help` (or `help=NAME`) prints colbert_swap's own help, and every
override key is checked against the schema (colbert_swap/tasks/help.py)."""

from __future__ import annotations

import sys

import hydra

from colbert_swap.config import CONF, Config, check_overrides, expand_aliases, register
from colbert_swap.tasks import run
from colbert_swap.errors import UserError


register()


@hydra.main(version_base="1.3", config_path=str(CONF), config_name="config")
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
    from colbert_swap.tasks import help as cli_help

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
