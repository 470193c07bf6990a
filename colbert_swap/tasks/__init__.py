"""The tasks, listed explicitly: `task=NAME` runs `colbert_swap.tasks.NAME.run(cfg) -> int` (the exit status; the
module is `Task.module_name` where NAME is a Python keyword: task=import is tasks/import_.py).

To add a task: write `colbert_swap/tasks/NAME.py` with a module docstring (its first line is the task's
one-line summary in `--help`; the rest is `task=NAME --help`) and a `run(cfg)`, then add a `Task` line here.
The keys a task reads are named by their fields in colbert_swap/config.py (`option(..., tasks=(NAME, ...))`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    name: str
    summary: str
    module_name: str = ""  # its module under colbert_swap/tasks/ where that is not its name (`import` is a keyword)

    @property
    def keys(self) -> tuple[str, ...]:
        """The keys it reads, as `task=NAME --help` lists them: from the schema's fields (config.task_options)."""
        from colbert_swap.config import task_options

        return tuple(o.name for o in task_options(self.name))

    def module(self):
        return importlib.import_module(f"colbert_swap.tasks.{self.module_name or self.name}")

    def doc(self) -> str:
        return (self.module().__doc__ or self.summary).strip()


TASKS = {t.name: t for t in [
    Task("capture", "capture a run: every intermediate of colbert-ai's indexing, and its index files (the default)"),
    Task("stages", "print the DAG: every stage, what it reads, what it produces"),
    Task("compare", "compare two runs artifact by artifact, and their index files"),
    Task("inject", "swap artifacts of one run into another and replay what is downstream (`inject=NAME` alone)"),
    Task("locate", "find the smallest set of artifacts whose injection explains every difference"),
    Task("isolate", "run one stage here on another run's inputs: does the stage itself depend on the environment?"),
    Task("determinism", "run a run's stages again on its own inputs: reproducible, or do they differ run to run, "
         "between processes, with the thread count?"),
    Task("drill", "inside the model: the first module, then the first operation, whose output differs"),
    Task("search", "search both runs (the search stages: colbert-ai's Searcher on their artifacts), compare rankings"),
    Task("matrix", "capture in several environments (torch versions), compare neighbours, locate each change"),
    Task("bisect", "the first environment of a list that changes colbert-ai's index files"),
    Task("parity", "colbert-ai's own Indexer here on a run's checkpoint, collection and config: is our capture "
         "its index, file for file?"),
    Task("env_capture", "capture in one environment of conf/env/ (one per Hydra job: sweeps over a cluster)"),
    Task("repair", "compute a run's missing or damaged blob files again, each checked against its recorded hash"),
    Task("verify", "check every manifest and blob of the store against its hash; change nothing (but roll back an "
         "import that was killed)"),
    Task("gc", "remove blob files no run points at"),
    Task("rm", "remove a run from the store (an incomplete one, or any with force=true)"),
    Task("export", "write a run (and the runs derived from it) into one zip file that carries it to another machine"),
    Task("import", "bring the runs of a bundle that task=export wrote into this store, every file checked first",
         module_name="import_"),
]}


def stage_names() -> list[str]:
    from colbert_swap.colbert.stages import DAG

    return [s.name for s in DAG.stages]


def compose(*overrides: str):
    """The config `python -m colbert_swap OVERRIDES...` would run with, checked as it checks it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from colbert_swap.config import CONF, check_overrides, expand_aliases, register, validate

    register()
    overrides = expand_aliases(list(overrides))
    check_overrides(overrides)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra_compose("config", overrides=overrides)
    validate(cfg, stage_names())
    return cfg


def run(cfg) -> int:
    """Run the task `cfg` names (`inject=NAME` alone is task=inject) on it: its exit status."""
    from colbert_swap.config import task_name, validate

    cfg.task = task_name(cfg.task, cfg.inject)
    validate(cfg, stage_names())
    return get(cfg.task).module().run(cfg)


def get(name: str) -> Task:
    import difflib

    from colbert_swap.errors import UserError

    if name not in TASKS:
        close = difflib.get_close_matches(str(name), list(TASKS), n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise UserError(f"task={name!r} is unknown.{hint} Tasks: {', '.join(TASKS)} (python -m colbert_swap --help)")
    return TASKS[name]
