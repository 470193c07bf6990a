"""`python -m colbert_swap [task=...] [overrides...]`: a thin Hydra shell over `run(cfg)`.

Before Hydra sees the command line, `--help` (or `help=NAME`) prints colbert_swap's own help, and every
override key is checked against the schema (colbert_swap/tasks/help.py)."""

from __future__ import annotations

import os
import sys

import hydra

from colbert_swap.config import CONF, Config, check_overrides, expand_aliases, register
from colbert_swap.tasks import run
from colbert_swap.env.venvs import END_WITH_PARENT, end_with_parent
from colbert_swap.errors import UserError


register()


# The process that ran main(): a job that runs in another process (a joblib sweep's worker) ends with it.
MAIN_PID = "COLBERT_SWAP_MAIN_PID"

JSON = "--json"  # the verdict as one JSON object on stdout; everything else the task prints goes to stderr


@hydra.main(version_base="1.3", config_path=str(CONF), config_name="config")
def _hydra_main(cfg: Config) -> int:
    status, error = 0, None
    if os.environ.get(MAIN_PID) == str(os.getppid()):  # a job in a child of the command (a joblib worker, a
        end_with_parent()                               # submitit_local job): it ends with the command
    try:
        with _stdout_to_stderr(_JSON_MODE):
            status = run(cfg)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        status, error = 2, str(exc)
    except KeyboardInterrupt:  # what finished is stored (the run writer saves after every node)
        print("\ninterrupted; run the same command to resume", file=sys.stderr)
        status, error = 130, "interrupted; run the same command to resume"
    if _JSON_MODE:
        _print_json(cfg, status, error)
    if status:
        sys.exit(status)
    return status


_JSON_MODE = False


def _stdout_to_stderr(on: bool):
    import contextlib

    return contextlib.redirect_stdout(sys.stderr) if on else contextlib.nullcontext()


def _print_json(cfg, status: int, error: str | None) -> None:
    """{"task", "exit", "error", "report", ...the report's report.json}: the last report this job wrote."""
    import json

    from colbert_swap.tasks import common

    out = {"task": str(cfg.task), "exit": status, "error": error, "report": None}
    if common.WRITTEN and error is None:
        path = common.WRITTEN[-1]
        out["report"] = str(path)
        out.update({k: v for k, v in json.loads(path.with_name("report.json").read_text()).items() if k != "task"})
    print(json.dumps(out, default=str), flush=True)


def check_composes(overrides: list[str]) -> None:
    """Compose the config as Hydra will, each value of a sweep (`-m index.nbits=1,2`) in turn: a value Hydra
    cannot merge (`index.nbits=abc`, `index=nope`) is a UserError of one line here, not Hydra's report of six
    and exit 1."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    parser = OverridesParser.create()
    for override in overrides:
        try:
            parser.parse_overrides([override])
        except HydraException as exc:
            key, _, value = override.partition("=")
            hint = f" (a value with '=' in it is quoted: '{key}=\"{value}\"')" if "=" in value else ""
            raise UserError(_one_line(exc, override) + hint) from exc
    parsed = parser.parse_overrides(overrides)
    first = [f"{o.input_line.split('=', 1)[0]}={next(o.sweep_string_iterator())}" if o.is_sweep_override()
             else o.input_line for o in parsed]
    tries = [first] + [first[:i] + [f"{o.input_line.split('=', 1)[0]}={value}"] + first[i + 1:]
                       for i, o in enumerate(parsed) if o.is_sweep_override()
                       for value in list(o.sweep_string_iterator())[1:]]  # the first value is in `first`
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for attempt in tries:
            try:
                compose("config", overrides=attempt)
            except (HydraException, OmegaConfBaseException) as exc:
                merging = str(exc).startswith("Error merging override ")
                raise UserError(_one_line(exc, str(exc).splitlines()[0].split(" override ", 1)[1] if merging else None)) \
                    from exc


def _one_line(exc: BaseException, override: str | None = None) -> str:
    """Hydra's and OmegaConf's messages in one line, `OVERRIDE: why`, without their key/type trailer."""
    lines = [line.strip() for text in (str(exc), str(exc.__cause__ or "")) for line in text.splitlines()]
    kept = [line for line in lines if line and not line.startswith(("full_key:", "reference_type=", "object_type=",
                                                                    "Set the environment variable HYDRA_FULL_ERROR",
                                                                    "Error merging override"))]
    why = " ".join(dict.fromkeys(kept))
    return f"{override}: {why}" if override else why


def main() -> None:
    from colbert_swap.tasks import help as cli_help

    global _JSON_MODE

    if os.environ.get(END_WITH_PARENT) == "1":  # started by a study for one job: it ends with its starter
        end_with_parent()
    os.environ[MAIN_PID] = str(os.getpid())
    args = sys.argv[1:]
    if JSON in args:
        _JSON_MODE = True
        sys.argv[1:] = args = [a for a in args if a != JSON]
    wanted = next((a.split("=", 1)[1] for a in args if a.startswith("help=")), None)
    try:
        if wanted or "--help" in args or "-h" in args:
            task = wanted or next((a.split("=", 1)[1] for a in args if a.startswith("task=")), None)
            print(cli_help.task_help(task) if task else cli_help.main_help())
            return
        sys.argv[1:] = args = expand_aliases(args)  # module=X is drill.module=X: task options under their task
        if "--hydra-help" not in args:
            check_overrides([a for a in args if not a.startswith("-")])
            check_composes([a for a in args if not a.startswith("-")])
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if _JSON_MODE:
            import json

            print(json.dumps({"task": None, "exit": 2, "error": str(exc), "report": None}))
        sys.exit(2)
    _hydra_main()


if __name__ == "__main__":
    main()
