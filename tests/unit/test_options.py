"""Each option is described once, by its field in colbert_swap/config.py (`option`, `knob`, `section`): the short
forms (ALIASES), the keys and texts of `--help` and `task=NAME --help`, and the checked values of the perturb
knobs (CHOICES, MINIMUM, LATER_KNOBS) all come from there."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from colbert_swap.config import (ALIASES, CHOICES, GROUPS, LATER_KNOBS, MINIMUM, OPTIONS, Config, PerturbConfig,
                                 check_overrides, expand_aliases, task_options)
from colbert_swap.tasks import TASKS
from colbert_swap.tasks.help import MAIN_KEYS, main_help, task_help
from tests.conftest import make_cfg

REPO = Path(__file__).resolve().parents[2]
SHORT = [o for o in OPTIONS if o.short]

# What --help listed before the keys were described by their fields: each must stay listed.
LISTED = {
    "capture": ("run", "force", "model", "collection", "index", "perturb"),
    "compare": ("source", "target", "force"),
    "inject": ("inject", "source", "target", "reuse", "force"),
    "locate": ("source", "target", "target_artifact", "force"),
    "isolate": ("stage", "source"),
    "determinism": ("run", "stages", "determinism"),
    "drill": ("run", "source", "target", "module", "probes", "bsizes", "force"),
    "search": ("source", "target", "run", "inject", "search"),
    "matrix": ("envs", "reference", "env_cache"),
    "bisect": ("envs", "env_cache"),
    "env_capture": ("environment", "env_cache"),
    "rm": ("run", "force"),
}
MAIN = ("task", "run", "source", "target", "inject", "stage", "stages", "target_artifact", "module", "envs",
        "reference", "environment", "force", "reuse", "out_dir", "store.root", "compare.tolerance", "capture.batches")


def entries(text: str, section: str) -> dict[str, str]:
    """The `  KEY  TEXT` lines under `section:` (a text wrapped onto indented lines joined back), by key: a key
    that runs into its text (`target_artifacttask=locate: ...`) is read as another key."""
    out, key = {}, None
    for line in text.split(f"\n{section}:\n", 1)[1].split("\n\n", 1)[0].splitlines():
        match = re.match(r"  (\S+)  +(\S.*)$", line)
        if match:
            key = match.group(1)
            out[key] = match.group(2)
        else:
            assert key and line.startswith("    ") and line.strip(), f"not a key line: {line!r}"
            out[key] += " " + line.strip()
    return out


def value_for(key: str) -> tuple[str, object]:
    """A command-line value the schema accepts for `key`, and what the config then holds."""
    node: typing.Any = Config
    for part in key.split("."):
        node = typing.get_type_hints(node)[part]
    args = [a for a in typing.get_args(node) if a is not type(None)]
    node = args[0] if typing.get_origin(node) is typing.Union else node
    if node is bool:
        return "true", True
    if node is int:
        return "3", 3
    if typing.get_origin(node) is list:
        return "[8,16]", [8, 16]
    return "xyz", "xyz"


def test_every_short_form_reaches_its_key():
    assert ALIASES == {o.short: o.key for o in SHORT} and len(ALIASES) == len(SHORT)
    assert set(ALIASES) >= {"target_artifact", "stage", "stages", "probes", "module", "bsizes", "envs", "reference",
                            "environment"}  # today's short forms stay (a new task may add its own)
    top = {f.name for f in dataclasses.fields(Config)}
    assert not set(ALIASES) & (top | set(GROUPS)), "a short form would hide a top-level key or a group"
    overrides, expected = [], {}
    for option in SHORT:
        text, value = value_for(option.key)
        assert expand_aliases([f"{option.short}={text}"]) == [f"{option.key}={text}"]
        assert expand_aliases([f"+{option.short}={text}"]) == [f"+{option.key}={text}"]
        overrides.append(f"{option.short}={text}")
        expected[option.key] = value
    check_overrides(expand_aliases(overrides))
    cfg = make_cfg(*overrides)
    for key, value in expected.items():
        got = OmegaConf.select(cfg, key)
        assert (OmegaConf.to_container(got) if OmegaConf.is_config(got) else got) == value, key


def test_every_task_help_lists_its_keys_with_their_help():
    named = {t for o in OPTIONS for t in o.tasks}
    assert named <= set(TASKS), f"fields name unknown tasks: {named - set(TASKS)}"
    for name, task in TASKS.items():
        text = task_help(name)
        assert text.startswith(f"task={name}") and text.count(f"task={name}:") <= 1, name  # what it does, once
        listed = entries(text, "Keys it reads") if task.keys else {}
        assert tuple(listed) == task.keys == tuple(o.name for o in task_options(name)), name
        assert set(LISTED.get(name, ())) <= set(listed), f"task={name} --help no longer lists a key"
        for option in task_options(name):
            assert option.help or option.section is not None, f"{option.key} (read by task={name}) has no help"
            assert " ".join(option.help.split()) in listed[option.name], (name, option.key)
            if option.short:
                assert option.key in listed[option.name], (name, option.key)
            if option.section is not None and not option.expand:
                assert all(f.name in listed[option.name] for f in dataclasses.fields(option.section))


def test_main_help_lists_every_main_key_and_short_form_with_its_help():
    listed = entries(main_help(), "Main keys")
    assert set(MAIN) | set(ALIASES) <= set(listed) and set(listed) == set(MAIN_KEYS)
    for option in OPTIONS:
        if option.main:
            assert option.help and " ".join(option.help.split()) in listed[option.name], option.key
            if option.short:  # a task's own option names its task: task=drill: ...
                assert listed[option.name].startswith(f"task={'|'.join(option.tasks)}: ")


def perturb_fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(PerturbConfig)}


def test_the_perturb_choices_minimum_and_later_knobs_come_from_the_fields():
    fields = perturb_fields()
    for key, allowed in CHOICES.items():
        group, name = key.split(".", 1)
        if group == "perturb":
            assert allowed == fields[name].metadata["choices"] and allowed[0] is None, key
    for name, f in fields.items():
        assert f.metadata.get("help"), f"perturb.{name} has no help"
        if f.metadata.get("choices") is not None:
            assert CHOICES[f"perturb.{name}"] is f.metadata["choices"]
        if f.metadata.get("minimum") is not None:
            assert MINIMUM[f"perturb.{name}"] == f.metadata["minimum"]
    assert LATER_KNOBS == tuple(n for n, f in fields.items() if f.metadata.get("later"))
    # the values checked before the knobs were described by their fields (still checked; a new knob adds its own)
    assert {k: v for k, v in CHOICES.items() if k.startswith("perturb.")}.items() >= {
        "perturb.attn": (None, "eager", "sdpa", "sdpa_math"), "perturb.normalize": (None, "fp16"),
        "perturb.tokenizer": (None, "slow", "fast")}.items()
    assert MINIMUM.items() >= {"perturb.threads": 1}.items() and set(LATER_KNOBS) >= {"threads", "noise"}
    assert CHOICES.items() >= {
        "model.kind": ("random_bert", "minilm", "path"), "collection.kind": ("synthetic", "tsv", "jsonl"),
        "index.device": ("auto", "cpu", "cuda"), "index.kmeans_backend": ("faiss", "torch", "fastkmeans", "flash"),
        "perturb.attn": (None, "eager", "sdpa", "sdpa_math"), "perturb.normalize": (None, "fp16"),
        "perturb.tokenizer": (None, "slow", "fast"), "compare.tolerance": ("assert_close", "torch", "bnb")}.items()


@pytest.mark.parametrize("preset", sorted(p.stem for p in (REPO / "conf" / "perturb").glob("*.yaml")))
def test_every_perturb_preset_sets_only_knobs_and_allowed_values(preset):
    values = yaml.safe_load((REPO / "conf" / "perturb" / f"{preset}.yaml").read_text()) or {}
    fields = perturb_fields()
    assert set(values) <= set(fields), f"perturb={preset} sets what is no knob"
    for name, value in values.items():
        assert value in CHOICES.get(f"perturb.{name}", (value,)), (preset, name)
        assert value is None or value >= MINIMUM.get(f"perturb.{name}", value), (preset, name)
    cfg = make_cfg(f"perturb={preset}")
    assert {k: cfg.perturb[k] for k in values} == values
    assert all(cfg.perturb[k] is None for k in set(fields) - set(values)), "a knob a preset leaves is null"
