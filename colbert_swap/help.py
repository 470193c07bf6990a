"""`python -m colbert_swap --help` (and `task=NAME --help`, `help=NAME`): the tasks, the main keys and the
config groups, from the code itself; and the check of every override key against the schema, so that a
typo fails with a did-you-mean instead of being appended (`+index.nbit=2`) and read by nothing.

    >>> check_overrides(["index.nbits=4", "model=base", "+experiments=sweep", "hydra/launcher=joblib"])
    >>> check_overrides(["index.nbit=2"])
    Traceback (most recent call last):
    ...
    colbert_swap.errors.UserError: unknown key 'index.nbit'. Did you mean 'index.nbits'? Keys of index: nbits, doc_maxlen, kmeans_niters, index_bsize, chunksize, device, amp, kmeans_backend
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from pathlib import Path

from colbert_swap.config import Config
from colbert_swap.errors import UserError

CONF = Path(__file__).resolve().parent.parent / "conf"
EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
MAIN_KEYS = {
    "task": "what to do (default: capture); see Tasks",
    "run": "the run's label (default: this environment's torch version, e.g. 2.13.0)",
    "source": "the run whose tensors are the reference, or are injected",
    "target": "the run compared with it, or injected into (default: run, else the torch version)",
    "inject": "artifact names to swap from source into target: inject=local_sample_embs, inject=[a,b]",
    "stage": "task=isolate: the stage to run alone",
    "module": "task=drill: record the aten operations inside this module (or colbert.doc)",
    "envs": "task=matrix|bisect: environment specs of conf/env/, in order: envs=[torch-2.0.1,torch-2.1.0]",
    "environment": "task=env_capture: one environment spec",
    "force": "replace a run of another config, compare runs of different configs",
    "reuse": "a replay reuses outputs of unchanged stages computed in this environment (default true)",
    "out_dir": "where report.md and report.json go (default: the Hydra output folder)",
    "store.root": "the store: runs, blobs, models, collections (default: outputs)",
    "compare.tolerance": "what the status `allclose` means: assert_close (per dtype), torch or bnb",
}
# Config groups chosen with GROUP=OPTION; `env` is conf/env/, read by envs= and environment=, not a group.
GROUPS = ("model", "collection", "index", "perturb", "store")


def options(group: str) -> list[str]:
    folder = EXPERIMENTS if group == "experiments" else CONF / group
    return sorted(p.stem for p in folder.glob("*.yaml"))


def main_help() -> str:
    from colbert_swap.tasks import TASKS

    width = max(map(len, TASKS)) + 2
    tasks = "\n".join(f"  {name:<{width}}{t.summary}" for name, t in TASKS.items())
    kw = max(map(len, MAIN_KEYS)) + 2
    keys = "\n".join(f"  {k:<{kw}}{v}" for k, v in MAIN_KEYS.items())
    groups = "\n".join(f"  {g}={'|'.join(options(g))}" for g in GROUPS)
    return f"""colbert_swap: prove which tensor makes two ColBERT indexing runs diverge.

usage: python -m colbert_swap [task=NAME] [KEY=VALUE ...]     (Hydra overrides; -m runs a sweep)
       python -m colbert_swap task=NAME --help               (or help=NAME: one task in detail)

Tasks:
{tasks}

Main keys:
{keys}

Config groups (GROUP=OPTION), each with its own keys (index.nbits=4, model.path=..., perturb.attn=eager):
{groups}
  +experiments={'|'.join(options('experiments'))}   (experiments/: one question each)
  environment specs (envs=, environment=): {', '.join(_specs())}

Every key: python -m colbert_swap --cfg job        Hydra's own help: --hydra-help
The README walks through every task: README.md (section "A tour").
"""


def _specs() -> list[str]:
    from colbert_swap.environments import available

    return available()


def task_help(name: str) -> str:
    from colbert_swap.tasks import get

    task = get(name)
    keys = "\n".join(f"  {k:<14}{MAIN_KEYS.get(k, _describe(k))}" for k in task.keys)
    return f"task={name}: {task.summary}\n\n{task.doc()}\n" + (f"\nKeys it reads:\n{keys}\n" if keys else "")


def _describe(key: str) -> str:
    node = _schema_node(key.split("."))
    if dataclasses.is_dataclass(node):
        return "keys: " + ", ".join(f.name for f in dataclasses.fields(node))
    return ""


def _schema_node(path: list[str]):
    node = Config
    for part in path:
        if not dataclasses.is_dataclass(node):
            return None
        fields = {f.name: f for f in dataclasses.fields(node)}
        if part not in fields:
            return None
        node = typing.get_type_hints(node)[part]
    return node


def check_overrides(overrides: list[str]) -> None:
    """Every override names a key of the schema, a config group or a Hydra setting; else a UserError with
    the closest names. `+key=value` is checked too: appending a key nothing reads is a typo."""
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~").split("@", 1)[0]
        if "=" not in override or not key or key.startswith("hydra") or override.startswith("-"):
            continue
        if key in GROUPS or key == "experiments":
            _check_option(key, override.split("=", 1)[1])
            continue
        _check_key(key)


def _check_option(group: str, value: str) -> None:
    known = options(group)
    for choice in value.strip("[]").split(","):
        choice = choice.strip()
        if choice and choice not in known and not choice.startswith("$"):
            close = difflib.get_close_matches(choice, known, n=3, cutoff=0.5)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise UserError(f"{group}={choice!r} is not an option of {group}.{hint} Options: {', '.join(known)}")


def _check_key(key: str) -> None:
    parts = key.split(".")
    node = Config
    for i, part in enumerate(parts):
        if not dataclasses.is_dataclass(node):
            return  # inside a free-form value (a dict or Any): compare.per_artifact.embs
        fields = [f.name for f in dataclasses.fields(node)]
        if part not in fields:
            prefix = ".".join(parts[:i])
            where = f"{prefix}." if prefix else ""
            close = [where + c for c in difflib.get_close_matches(part, fields, n=2, cutoff=0.7)]
            hint = f" Did you mean {' or '.join(repr(c) for c in dict.fromkeys(close))}?" if close else ""
            listing = f"Keys of {prefix}: " if prefix else "Top-level keys: "
            raise UserError(f"unknown key {key!r}.{hint} {listing}{', '.join(fields)}")
        node = typing.get_type_hints(node)[part]
        if typing.get_origin(node) is typing.Union:  # Optional[X]
            node = next(a for a in typing.get_args(node) if a is not type(None))
