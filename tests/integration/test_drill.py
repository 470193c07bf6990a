"""task=drill names the first module whose output differs, in execution order."""

from __future__ import annotations

import json

import pytest

from colbert_swap.errors import UserError
from colbert_swap.store import Store
from colbert_swap.tasks import drill
from colbert_swap.tasks.capture import capture
from tests.conftest import quiet_progress


@pytest.fixture(scope="module")
def runs(tiny_cfg):
    return {"target": capture(tiny_cfg("run=target"), progress=quiet_progress),
            "eager": capture(tiny_cfg("run=eager", "perturb=eager"), progress=quiet_progress),
            "twin": capture(tiny_cfg("run=twin"), progress=quiet_progress)}


def test_drill_names_the_attention_of_the_first_layer(runs, tiny_cfg, tmp_path):
    store = Store(tiny_cfg().store.root)
    assert drill.run(tiny_cfg("task=drill", "run=eager", "probes=40")) == 0  # eager's own drill capture
    with pytest.raises(UserError, match="has no drill capture"):
        drill.run(tiny_cfg("task=drill", "source=target", "target=eager"))
    drill.run(tiny_cfg("task=drill", "source=eager", "target=target", "probes=40", f"out_dir={tmp_path}"))
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["first_module"] == "bert.encoder.layer.0.attention.self"
    before = [r for r in report["modules"][: [r["module"] for r in report["modules"]].index(report["first_module"])]]
    assert before and all(r["mismatches"] == 0 for r in before)  # embeddings, query, key, value: equal
    assert {r["module"] for r in report["modules"] if r.get("only_in")} == {
        "bert.encoder.layer.0.attention.self.dropout", "bert.encoder.layer.1.attention.self.dropout"}
    assert len(report["batches"]) == 3 and {b["size"] for b in report["batches"]} == {16, 8}  # index_bsize 16
    assert "padded length" in report["verdict"]
    assert store.load("eager+drill").origin["probes"] == 40


def test_drill_of_identical_environments_finds_nothing(runs, tiny_cfg, tmp_path):
    drill.run(tiny_cfg("task=drill", "run=twin"))
    drill.run(tiny_cfg("task=drill", "source=twin", "target=target", f"out_dir={tmp_path}"))
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["first_module"] is None and all(r["mismatches"] == 0 for r in report["modules"])
