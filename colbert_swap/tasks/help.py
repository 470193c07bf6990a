"""`python -m colbert_swap --help` (and `task=NAME --help`, `help=NAME`): the tasks, the main keys and the
config groups, from the code itself: each key's line is what its field in colbert_swap/config.py says of it
(`option`, `knob`, `section`: its help, short form, values, default, the tasks that read it), and every
override key is checked against the schema by `config.check_overrides`."""

from __future__ import annotations

import dataclasses
import textwrap

from colbert_swap.config import GROUPS, OPTIONS, Option, options, task_options


def option_text(option: Option, short: bool = False) -> str:
    """What --help says of a key: its field's help, with the values it allows and its default where the help
    does not name them (and, with `short`, the key a short form stands for)."""
    allowed = ["null" if c is None else str(c) for c in option.choices or ()]
    notes = []
    if allowed and not all(a in option.help for a in allowed if a != "null"):
        notes.append(f"one of: {', '.join(allowed)}")
    if option.default not in (None, []) and "default" not in option.help:
        notes.append(f"default: {_value(option.default)}")
    if short and option.short:
        notes.append(f"short for {option.key}")
    return option.help + (f" ({'; '.join(notes)})" if notes else "")


def _value(value) -> str:
    """A value as the command line writes it: true, 24, outputs."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def main_text(option: Option) -> str:
    """A main key's line in --help: a task's own option (locate.target_artifact, capture.batches) names its tasks."""
    owned = "." in option.key and option.tasks
    return f"task={'|'.join(option.tasks)}: {option_text(option)}" if owned else option_text(option)


# The keys --help lists, with their text: every `option(main=True)` and every short form (config.py's fields).
MAIN_KEYS = {o.name: main_text(o) for o in OPTIONS if o.main}


def main_help() -> str:
    from colbert_swap.tasks import TASKS

    width = max(map(len, TASKS)) + 2
    tasks = "\n".join(f"  {name:<{width}}{t.summary}" for name, t in TASKS.items())
    keys = _lines(MAIN_KEYS)
    groups = "\n".join(f"  {g}={'|'.join(options(g))}" for g in GROUPS)
    return f"""colbert_swap: prove which tensor makes two ColBERT indexing runs diverge.

usage: python -m colbert_swap [task=NAME] [KEY=VALUE ...]     (Hydra overrides; -m runs a sweep)
       python -m colbert_swap task=NAME --help               (or help=NAME: one task in detail)
       python -m colbert_swap ... --json                     (the verdict and report.json as one JSON object
                                                              on stdout; progress and tables on stderr)
       from colbert_swap import api                          (Python: api.capture, compare, inject, locate, ...)

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
    keys = _lines({o.name: _task_text(o) for o in task_options(task.name)})
    doc = task.doc()
    if not doc.startswith(f"task={name}"):  # a module's doc that opens with its task says what the summary says
        doc = f"task={name}: {task.summary}\n\n{doc}"
    return f"{doc}\n" + (f"\nKeys it reads:\n{keys}\n" if keys else "")


def _lines(keys: dict[str, str], width: int = 118) -> str:
    """`  KEY  TEXT` lines, the texts in one column (as wide as the longest key needs), wrapped beneath it."""
    if not keys:
        return ""
    column = max(map(len, keys)) + 4
    return "\n".join(textwrap.fill(f"  {k:<{column - 2}}{v}", width, subsequent_indent=" " * column,
                                    break_long_words=False, break_on_hyphens=False) for k, v in keys.items())


def _task_text(option: Option) -> str:
    """A key's line in task=NAME --help: a section names its keys (a group its options too), a short form its key."""
    if option.section is None:
        return option_text(option, short=True)
    if option.expand:  # its keys follow, each on its line
        return f"{option.help}: {option.key}.KEY=VALUE"
    parts = [option.help] if option.help else []
    if option.key in GROUPS:
        parts.append(f"{option.key}={'|'.join(options(option.key))}")
    parts.append("keys: " + ", ".join(f.name for f in dataclasses.fields(option.section)))
    return "; ".join(parts)
