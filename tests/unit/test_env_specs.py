"""Specs generated from conf/env/axes.yaml: one package per step, axes in order, names that load_spec resolves."""

from __future__ import annotations

import pytest
from packaging.version import Version

from colbert_swap.env import specs as env_specs
from colbert_swap.env.venvs import available, load_spec
from colbert_swap.errors import UserError

TORCH = ["1.13.1", "2.0.0", "2.0.1", "2.1.0", "2.1.1", "2.1.2", "2.2.0", "2.2.1", "2.2.2", "2.3.0", "2.3.1", "2.4.0",
         "2.4.1", "2.5.0", "2.5.1", "2.6.0", "2.7.0", "2.7.1", "2.8.0", "2.9.0", "2.9.1", "2.10.0", "2.11.0", "2.12.0",
         "2.12.1", "2.13.0", "2.14.0", "2.14.1", "2.15.0"]


def pins(name: str) -> dict[str, str]:
    return dict(r.split("==", 1) for r in load_spec(name).requirements)


def test_the_torch_axis_is_every_release_from_1_13_1_to_2_15_0_in_order():
    names = env_specs.axis("torch")
    assert names == [f"torch-{v}" for v in TORCH]
    assert [Version(n.split("-")[1]) for n in names] == sorted(Version(v) for v in TORCH)


@pytest.mark.parametrize("axis", ["torch", "transformers", "faiss", "numpy", "colbert"])
def test_neighbours_differ_only_in_what_the_step_says_it_changes(axis):
    names = env_specs.axis(axis)
    assert len(names) >= 2
    for a, b in zip(names, names[1:]):
        before, after, spec = pins(a), pins(b), load_spec(b)
        moved = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
        unexplained = {p for p in moved - set(spec.changes) if not any(f"{p}=={after[p]}" in n for n in spec.notes)}
        assert not unexplained and set(spec.changes) <= moved, (a, b, moved)
        assert all(after[p] == v for p, v in spec.changes.items())


def test_the_old_stack_is_held_along_the_torch_axis():
    for name in env_specs.axis("torch"):
        p = pins(name)
        assert (p["transformers"], p["tokenizers"], p["numpy"], p["faiss-cpu"]) == ("4.38.2", "0.15.2", "1.26.4", "1.7.4")


def test_a_pin_that_depends_on_torch_is_in_the_notes():
    old, new = load_spec("torch-2.12.1"), load_spec("torch-2.13.0")
    assert pins("torch-2.12.1")["setuptools"] == "69.5.1" and pins("torch-2.13.0")["setuptools"] == "80.9.0"
    assert "setuptools==69.5.1" in old.notes[0] and "setuptools==80.9.0" in new.notes[0]
    assert "pkg_resources" in old.notes[0]


def test_the_other_axes_start_at_the_newest_torch():
    assert env_specs.axis("transformers")[0] == "torch-2.15.0"
    assert env_specs.axis("transformers")[-1] == "transformers-4.57.6"
    assert env_specs.axis("faiss")[-1] == "faiss-1.15.1"
    assert env_specs.axis("numpy") == ["faiss-1.15.1", "numpy-2"]
    assert pins("numpy-2")["numpy"].startswith("2.") and pins("numpy-2")["faiss-cpu"] == "1.15.1"
    assert pins("transformers-4.46.3")["tokenizers"] == "0.20.3"  # moved with it: 4.46 needs tokenizers 0.20
    assert load_spec("transformers-4.46.3").changes == {"transformers": "4.46.3", "tokenizers": "0.20.3"}


PYTHONS = ["3.9", "3.10", "3.11", "3.12", "3.13"]


def test_the_python_axis_is_3_9_to_3_13_in_order_at_one_torch():
    names = env_specs.axis("python")
    assert names == [f"python-{v}" for v in PYTHONS]
    assert [load_spec(n).python for n in names] == [f"python{v}" for v in PYTHONS]
    assert [load_spec(n).changes for n in names[1:]] == [{"python": v} for v in PYTHONS[1:]]
    assert {pins(n)["torch"] for n in names} == {"2.8.0"}  # the newest torch with cp39 ... cp313 wheels


def test_each_python_gets_pins_with_wheels_for_it():
    for version in PYTHONS:
        p = pins(f"python-{version}")
        assert (p["transformers"], p["tokenizers"], p["safetensors"], p["faiss-cpu"], p["pandas"], p["setuptools"]) \
            == ("4.38.2", "0.15.2", "0.4.2", "1.12.0", "2.2.3", "69.5.1")
        # numpy 2.0.2 and scipy 1.13.1 stop at cp312; numpy 2.1 and scipy 1.14 start without cp39
        assert (p["numpy"], p["scipy"]) == (("2.1.3", "1.14.1") if version == "3.13" else ("2.0.2", "1.13.1"))
    assert load_spec("python-3.9").changes == {"python": "3.9", "torch": "2.8.0", "numpy": "2.0.2",
                                               "faiss-cpu": "1.12.0", "pandas": "2.2.3"}


def test_python_neighbours_differ_only_in_python_and_the_pins_the_rule_names():
    names = env_specs.axis("python")
    for a, b in zip(names, names[1:]):
        before, after, spec = pins(a), pins(b), load_spec(b)
        moved = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
        assert load_spec(a).python != spec.python
        assert all(any(f"{p}=={after[p]}" in n for n in spec.notes) for p in moved), (a, b, moved)
        assert moved == ({"numpy", "scipy"} if b == "python-3.13" else set())
    rule = [n for n in load_spec("python-3.13").notes if n.startswith("python >=3.13")]
    assert len(rule) == 1 and "cp313" in rule[0]
    assert not any(n.startswith("python") for n in load_spec("python-3.12").notes)


def test_the_interpreter_is_keyed_and_the_other_specs_keep_python_3_11():
    assert len({load_spec(f"python-{v}").digest for v in PYTHONS}) == len(PYTHONS)
    for axis in ("torch", "transformers", "faiss", "numpy", "colbert"):
        assert {load_spec(n).python for n in env_specs.axis(axis)} == {"python3.11"}
        assert not any(n.startswith("python") for name in env_specs.axis(axis) for n in load_spec(name).notes)


def test_the_colbert_axis_pins_each_release_at_torch_2_13_0():
    names = env_specs.axis("colbert")
    assert names == ["torch-2.13.0", "colbert-ai-0.2.20", "colbert-ai-0.2.21", "colbert-ai-0.2.22"]
    for name, release in zip(names[1:], ["0.2.20", "0.2.21", "0.2.22"]):
        assert pins(name)["colbert-ai"] == release and pins(name)["torch"] == "2.13.0"
        assert load_spec(name).changes == {"colbert-ai": release}


def test_generated_and_hand_written_names_are_all_available():
    names = set(available())
    assert {"here", "here-eager", "cpu-avx2", "torch-2.0.1", "torch-2.1.0", "torch-2.13.0", "transformers-4.46.3",
            "faiss-1.8.0", "numpy-2", "torch-2.4.1"} <= names
    assert "axes" not in names  # the table is not a spec
    assert load_spec("faiss-1.8.0").python == "python3.11" and load_spec("here").python == "current"


def test_an_unknown_axis_is_refused_naming_the_axes():
    with pytest.raises(UserError, match=r"axis 'jax'.*torch, transformers, faiss, numpy"):
        env_specs.axis("jax")


def _table(tmp_path, body: str):
    path = tmp_path / "axes.yaml"
    path.write_text(body)
    return path


def test_a_small_table_generates_cumulative_steps(tmp_path):
    table = _table(tmp_path, """
python: python3.12
stack: {torch: 2.0.0, numpy: 1.26.4}
labels: {numpy: np}
by_torch:
  - {torch: ">=2.1", pins: {setuptools: "<70"}, why: because}
axes:
  - {axis: torch, package: torch, versions: [2.0.0, 2.1.0]}
  - axis: other
    from: torch-2.1.0
    steps: [{numpy: 2.0.0}, {numpy: 2.1.0, name: numpy-two-one}]
""")
    specs = env_specs.generated(table)
    assert list(specs) == ["torch-2.0.0", "torch-2.1.0", "np-2.0.0", "numpy-two-one"]
    assert specs["torch-2.0.0"]["requirements"] == ["torch==2.0.0", "numpy==1.26.4"]
    assert specs["np-2.0.0"]["requirements"] == ["torch==2.1.0", "numpy==2.0.0", "setuptools<70"]
    assert specs["torch-2.0.0"]["notes"] == []
    assert specs["torch-2.1.0"]["notes"] == ["torch >=2.1: setuptools<70 (because)"]
    assert specs["numpy-two-one"]["python"] == "python3.12" and specs["numpy-two-one"]["changes"] == {"numpy": "2.1.0"}
    assert env_specs.axis("other", table) == ["torch-2.1.0", "np-2.0.0", "numpy-two-one"]


def test_a_step_sets_the_interpreter_and_by_python_pins_follow_it(tmp_path):
    table = _table(tmp_path, """
python: python3.11
stack: {torch: 2.8.0, numpy: 2.0.2, scipy: 1.13.1}
by_python:
  - {python: ">=3.13", pins: {numpy: 2.1.3}, why: "no cp313 wheel"}
axes:
  - axis: py
    steps: [{python: "3.12"}, {python: "3.13"}, {python: /opt/py/bin/python3.13, name: custom}]
  - {axis: after, from: python-3.13, package: scipy, versions: [1.14.1]}
  - {axis: plain, package: torch, versions: [2.9.0]}
""")
    specs = env_specs.generated(table)
    assert list(specs) == ["python-3.12", "python-3.13", "custom", "scipy-1.14.1", "torch-2.9.0"]
    assert [specs[n]["python"] for n in specs] == ["python3.12", "python3.13", "/opt/py/bin/python3.13",
                                                  "python3.13", "python3.11"]
    assert specs["python-3.12"]["requirements"] == ["torch==2.8.0", "numpy==2.0.2", "scipy==1.13.1"]
    assert specs["python-3.13"]["requirements"] == ["torch==2.8.0", "scipy==1.13.1", "numpy==2.1.3"]
    assert specs["python-3.13"]["notes"] == ["python >=3.13: numpy==2.1.3 (no cp313 wheel)"]
    assert specs["python-3.13"]["changes"] == {"python": "3.13"}
    assert specs["custom"]["requirements"][-1] == "numpy==2.1.3"  # its version read from the path
    assert specs["scipy-1.14.1"]["requirements"][-1] == "numpy==2.1.3"  # the interpreter carries over `from`
    assert specs["torch-2.9.0"]["notes"] == []


def test_an_axis_starting_from_an_unknown_step_is_refused(tmp_path):
    table = _table(tmp_path, "stack: {torch: 2.0.0}\naxes:\n  - {axis: a, from: torch-9, steps: [{numpy: 2}]}\n")
    with pytest.raises(UserError, match=r"axis 'a' starts from 'torch-9'"):
        env_specs.generated(table)


def test_an_edited_table_is_read_again(tmp_path):
    table = _table(tmp_path, "stack: {torch: 2.0.0}\naxes:\n  - {axis: t, package: torch, versions: [2.0.0]}\n")
    assert env_specs.axis("t", table) == ["torch-2.0.0"]
    table.write_text("stack: {torch: 2.0.0}\naxes:\n  - {axis: t, package: torch, versions: [2.0.0, 2.0.1]}\n")
    import os

    os.utime(table, (1, 1))  # another mtime even within the file system's time resolution
    assert env_specs.axis("t", table) == ["torch-2.0.0", "torch-2.0.1"]
