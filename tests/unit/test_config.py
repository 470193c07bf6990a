"""Every config option and experiment composes; bad values fail naming their key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf.errors import ValidationError

from colbert_swap.colbert.stages import DAG
from tests.conftest import make_cfg

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("group", ["model", "collection", "index", "store"])
def test_every_option_of_every_group_composes(group):
    for option in sorted((REPO / "conf" / group).glob("*.yaml")):
        cfg = make_cfg(f"{group}={option.stem}")
        assert cfg[group] is not None


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (REPO / "experiments").glob("*.yaml")))
def test_every_experiment_composes_with_its_values(experiment):
    import yaml

    text = (REPO / "experiments" / f"{experiment}.yaml").read_text()
    assert text.startswith("# @package _global_\n# python -m colbert_swap"), "header: package line, then its command"
    cfg = make_cfg(f"+experiments={experiment}")

    def check(expected, actual, path):
        for key, value in expected.items():
            if isinstance(value, dict):
                check(value, actual[key], f"{path}{key}.")
            else:
                assert actual[key] == value, f"{path}{key}"

    check({k: v for k, v in yaml.safe_load(text).items() if k not in ("defaults", "hydra")}, cfg, "")


def test_default_is_the_tiny_seeded_model_on_synthetic_passages():
    cfg = make_cfg()
    assert (cfg.task, cfg.model.name, cfg.model.kind, cfg.collection.kind) == ("capture", "tiny", "random_bert", "synthetic")
    assert cfg.store.root == "outputs" and cfg.seed == 12345


@pytest.mark.parametrize("override,key", [("index.nbits=abc", "index.nbits"), ("index.amp=maybe", "index.amp"),
                                          ("collection.num_passages=1.5", "collection.num_passages")])
def test_a_value_of_the_wrong_type_names_its_key(override, key):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as info:
        make_cfg(override)
    cause = info.value.__cause__
    assert isinstance(cause, ValidationError) and f"full_key: {key}" in str(cause)


def test_cli_lists_the_stages_without_a_model():
    out = subprocess.run([sys.executable, "-m", "colbert_swap", "task=stages"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for s in DAG.stages:
        assert f" {s.name}" in out.stdout
    assert "local_sample_embs, sample_doclens" in out.stdout


def test_cli_rejects_an_unknown_task_and_a_bad_run_name(tmp_path):
    for args, message in ((["task=nope"], "task='nope' is unknown"), (["run=../x"], "is not allowed")):
        out = subprocess.run([sys.executable, "-m", "colbert_swap", *args, f"store.root={tmp_path}"], cwd=REPO,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 2 and message in out.stderr
