"""`python -m colbert_swap --help` (and `task=NAME --help`, `help=NAME`): the tasks, the main keys and the
config groups, from the code itself (every override key is checked against the schema by
`config.check_overrides`)."""

from __future__ import annotations

import dataclasses
import typing

from colbert_swap.config import GROUPS, Config, options

MAIN_KEYS = {
    "task": "what to do (default: capture); see Tasks",
    "run": "the run's label (default: this environment's torch version, e.g. 2.13.0)",
    "source": "the run whose tensors are the reference, or are injected",
    "target": "the run compared with it, or injected into (default: run, else the torch version)",
    "inject": "artifact names to swap from source into target: inject=local_sample_embs, inject=[a,b]",
    "stage": "task=isolate: the stage to run alone",
    "stages": "task=determinism: the stages to run again (default: every stage of the run): stages=[a,b]",
    "target_artifact": "task=locate: only what changes this artifact (ranked_pids: what changes retrieval)",
    "module": "task=drill: record the aten operations inside this module (or colbert.doc)",
    "envs": "task=matrix|bisect: environment specs of conf/env/, in order: envs=[torch-2.0.1,torch-2.1.0]",
    "reference": "task=matrix: the environment every other is compared with in the compatibility table",
    "environment": "task=env_capture: one environment spec",
    "force": "replace a run of another config, compare runs of different configs",
    "reuse": "a replay reuses outputs of unchanged stages computed in this environment (default true)",
    "out_dir": "where report.md and report.json go (default: the Hydra output folder)",
    "store.root": "the store: runs, blobs, models, collections (default: outputs)",
    "compare.tolerance": "what the status `allclose` means: assert_close (per dtype), torch or bnb",
    "capture.batches": "task=capture: also keep each encoder batch's output and D (sample_batches, batches.N, D.N)",
}
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
    from colbert_swap.env.venvs import available

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
