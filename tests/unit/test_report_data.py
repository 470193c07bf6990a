"""Each task's report data is a ReportData dataclass defined in the task's module: every `Report(` of a task passes
one, and its to_json() is report.json's keys, its fields in order, exactly as the dict literal it replaced."""

from __future__ import annotations

import ast
import importlib
import json
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest

from colbert_swap.proof.report.report import RESERVED, Report, ReportData

TASKS = Path(__file__).resolve().parents[2] / "colbert_swap" / "tasks"
DATA_POSITION = 4  # Report(task, title, verdict, sections, data, runs, figures)


def report_calls() -> dict[str, list[ast.Call]]:
    """Module name -> its calls of `Report(...)`, for every module of colbert_swap/tasks that makes one."""
    out = {}
    for path in sorted(TASKS.glob("*.py")):
        calls = [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call)
                 and isinstance(n.func, ast.Name) and n.func.id == "Report"]
        if calls:
            out[path.stem] = calls
    return out


def data_classes(module_name: str) -> list[type]:
    module = importlib.import_module(f"colbert_swap.tasks.{module_name}")
    return [c for c in vars(module).values() if isinstance(c, type) and issubclass(c, ReportData)
            and c is not ReportData and c.__module__ == module.__name__]


def every_data_class() -> list[type]:
    return [c for m in report_calls() for c in data_classes(m)]


def assignments(tree: ast.AST) -> dict[str, ast.expr]:
    return {t.id: n.value for n in ast.walk(tree) if isinstance(n, ast.Assign) for t in n.targets
            if isinstance(t, ast.Name)}


def test_the_tasks_that_write_a_report_are_found():
    assert {"capture", "compare", "inject", "locate", "isolate", "determinism", "drill", "search", "matrix", "bisect",
            "verify", "env_capture"} <= set(report_calls())


@pytest.mark.parametrize("module_name", sorted(report_calls()))
def test_every_report_of_a_task_gets_a_report_data_of_its_module(module_name):
    tree = ast.parse((TASKS / f"{module_name}.py").read_text())
    named = assignments(tree)
    own = {c.__name__ for c in data_classes(module_name)}
    assert own, f"tasks/{module_name}.py writes a Report but defines no ReportData"
    for call in report_calls()[module_name]:
        data = next((k.value for k in call.keywords if k.arg == "data"), None)
        if data is None and len(call.args) > DATA_POSITION:
            data = call.args[DATA_POSITION]
        assert data is not None, f"tasks/{module_name}.py line {call.lineno}: Report( without data"
        if isinstance(data, ast.Name):  # data = XData(...); Report(..., data, ...)
            data = named[data.id]
        assert isinstance(data, ast.Call) and isinstance(data.func, ast.Name) and data.func.id in own, \
            f"tasks/{module_name}.py line {call.lineno}: Report's data is not one of {sorted(own)}"


def sample(cls: type) -> ReportData:
    """An instance whose every field holds a value of its own (its name, and a list to tell them apart)."""
    return cls(**{f.name: [f.name] for f in fields(cls)})


@pytest.mark.parametrize("cls", every_data_class(), ids=lambda c: c.__name__)
def test_to_json_keys_are_the_fields_in_order(cls):
    assert is_dataclass(cls) and cls.__dataclass_params__.frozen
    names = [f.name for f in fields(cls)]
    assert names and not set(names) & set(RESERVED)
    out = sample(cls).to_json()
    assert list(out) == names and all(out[n] == [n] for n in names)


@pytest.mark.parametrize("cls", every_data_class(), ids=lambda c: c.__name__)
def test_every_field_whose_meaning_is_not_its_name_has_a_docstring(cls):
    """Fields read by a machine from report.json: their docstrings are the documentation. A field without one is
    only allowed for the obvious (source, target, run, stage, k, qids, captured, module)."""
    obvious = {"source", "target", "run", "stage", "k", "qids", "captured", "module", "config"}
    tree = ast.parse(Path(importlib.import_module(cls.__module__).__file__).read_text())
    body = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls.__name__).body
    documented = {a.target.id for a, d in zip(body, body[1:]) if isinstance(a, ast.AnnAssign)
                  and isinstance(d, ast.Expr) and isinstance(d.value, ast.Constant) and isinstance(d.value.value, str)}
    missing = [f.name for f in fields(cls) if f.name not in documented | obvious]
    assert not missing, f"{cls.__name__}: fields without a docstring: {missing}"


# The dict literals the dataclasses replaced, keys in their order then: the value of each key is its name.
LITERALS = {
    "CaptureData": ["run", "config", "artifacts"],
    "CompareData": ["source", "target", "injected", "root_cause", "first_diverged", "counts", "whole_run", "tolerance",
                    "artifacts", "explain"],
    "EnvCaptureData": ["env", "run", "captured", "failure", "injected"],
    "InjectData": ["source", "target", "injected", "injected_artifacts", "root_cause", "replay_run", "downstream",
                   "whole_run", "tolerance", "computed_in", "replay_environments", "artifacts", "before", "vs_target",
                   "explain"],
    "IsolateData": ["source", "target", "stage", "injected", "root_cause", "stage_depends_on_environment", "artifacts"],
    "LocateData": ["source", "target", "injected", "root_cause", "goal", "harmless", "root_cause_stages", "noise",
                   "noise_checks", "rounds", "replay_run", "whole_run", "tolerance", "artifacts", "before", "explain"],
    "DeterminismData": ["run", "reproducible", "not_reproducible", "stages", "costs", "thread_count", "fresh", "here"],
    "SearchData": ["source", "target", "injected", "k", "retrieval", "computed_in", "qids", "per_query", "artifacts",
                   "effectiveness"],
    "VerifyData": ["store", "problems", "unreferenced", "blobs_checked", "runs"],
    "DrillData": ["source", "target", "injected", "root_cause", "first_module", "modules", "batches", "next_steps",
                  "warnings", "artifacts", "plots"],
    "DrillCaptureData": ["run", "captures", "recorded_in", "warnings"],
    "OpsDrillData": ["source", "target", "module", "injected", "root_cause", "first_op", "contexts", "warnings",
                     "artifacts"],
    "MatrixData": ["envs", "reference", "reference_asked", "captured", "failures", "complete", "pairs",
                   "not_compared", "compatibility"],
    "BisectData": ["envs", "captured", "steps", "pair"],
}


def test_every_literal_was_replaced_by_a_data_class():
    assert set(LITERALS) <= {c.__name__ for c in every_data_class()}  # a new task's data class needs no literal


@pytest.mark.parametrize("cls", [c for c in every_data_class() if c.__name__ in LITERALS], ids=lambda c: c.__name__)
def test_report_json_is_the_literal_it_replaced(cls):
    """The same report.json, byte for byte, from the dataclass and from the dict literal it replaced."""
    literal = {k: [k] for k in LITERALS[cls.__name__]}
    old, new = (Report("t", "title", "verdict", ["## s"], data, figures=["f.png"]) for data in (literal, sample(cls)))
    assert json.dumps(new.to_json(), indent=1) == json.dumps(old.to_json(), indent=1)


def test_a_report_read_back_keeps_its_data_as_a_dict():
    from colbert_swap.tasks.verify import VerifyData

    data = VerifyData(store="/s", problems=[], unreferenced=["/s/blobs/x"], blobs_checked=3, runs=["a"])
    again = Report.from_json(json.loads(json.dumps(Report("verify", "verify /s", "ok", data=data).to_json())))
    assert again.data == data.to_json() and list(again.data) == list(data.to_json())
    assert again.to_json() == Report("verify", "verify /s", "ok", data=data).to_json()
