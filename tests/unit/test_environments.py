"""Environment specs: loading, validation, the cache key, and the overrides that carry the shared config."""

from __future__ import annotations

import pytest

from colbert_swap.config import compose
from colbert_swap.environments import available, load_spec
from colbert_swap.errors import UserError
from colbert_swap.matrix import config_overrides


def test_every_shipped_spec_loads():
    names = available()
    assert {"here", "here-eager", "torch-2.0.1", "torch-2.1.0"} <= set(names)
    for name in names:
        spec = load_spec(name)
        assert spec.name == name and len(spec.digest) == 12


def test_unknown_spec_suggests_close_names():
    with pytest.raises(UserError, match=r"'torch-2.0.2' not found.*Did you mean [^?]*'torch-2.0.1'"):
        load_spec("torch-2.0.2")


def test_a_spec_with_a_wrong_type_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nrequirements: torch==2.0.1\n")  # a string, not a list
    with pytest.raises(UserError, match=r"bad.yaml"):
        load_spec(str(path))


def test_the_cache_key_follows_requirements_not_env_vars(tmp_path):
    base = "name: x\npython: python3.11\nrequirements: [torch==2.0.1]\n"
    (tmp_path / "a.yaml").write_text(base)
    (tmp_path / "b.yaml").write_text(base + "env: {ATEN_CPU_CAPABILITY: avx2}\n")
    (tmp_path / "c.yaml").write_text(base.replace("2.0.1", "2.1.0"))
    a, b, c = (load_spec(str(tmp_path / f"{n}.yaml")) for n in "abc")
    assert a.digest == b.digest != c.digest


def test_config_overrides_rebuild_the_same_config(tmp_path):
    cfg = compose("collection=tsv", f"collection.path='{tmp_path}/it\\'s a [file].tsv'", "index.nbits=4", "seed=7")
    assert cfg.collection.path.endswith("it's a [file].tsv")
    again = compose(*config_overrides(cfg))
    for group in ("model", "collection", "index"):
        assert again[group] == cfg[group]
    assert again.seed == 7
