"""task=drill names the first module whose output differs, in execution order, and the first operation
inside a module. Known answers come from a planted cause that acts on every machine (one layer's weights
scaled); eager vs SDPA attention and the CPU's kernels are measured first, and skip where they agree."""

from __future__ import annotations

import json
import zipfile

import pytest
import torch

from colbert_swap.study.drill import computes
from colbert_swap.errors import UserError
from colbert_swap.core.store import Store
from colbert_swap.tasks import drill
from colbert_swap.tasks.capture import capture
from tests.conftest import quiet_progress

pytestmark = pytest.mark.numerics
SCALED = "bert.encoder.layer.0.output.dense"  # the layer perturb=scale_layer scales


@pytest.fixture(scope="module")
def runs(tiny_cfg):
    return {"target": capture(tiny_cfg("run=target"), progress=quiet_progress),
            "eager": capture(tiny_cfg("run=eager", "perturb=eager"), progress=quiet_progress),
            "scaled": capture(tiny_cfg("run=scaled", "perturb=scale_layer"), progress=quiet_progress),
            "twin": capture(tiny_cfg("run=twin"), progress=quiet_progress)}


def test_drill_names_the_scaled_layer(runs, tiny_cfg, tmp_path):
    store = Store(tiny_cfg().store.root)
    assert drill.run(tiny_cfg("task=drill", "run=scaled", "probes=40")) == 0  # the source's own drill capture
    with pytest.raises(UserError, match="has no drill capture"):
        drill.run(tiny_cfg("task=drill", "source=target", "target=scaled"))
    drill.run(tiny_cfg("task=drill", "source=scaled", "target=target", "probes=40", f"out_dir={tmp_path}"))
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["first_module"] == SCALED
    before = [r for r in report["modules"][: [r["module"] for r in report["modules"]].index(report["first_module"])]]
    assert before and all(r["mismatches"] == 0 for r in before)  # embeddings, attention, intermediate: equal
    assert {b["bsize"] for b in report["batches"]} == {16}  # index_bsize
    assert sum(b["size"] for b in report["batches"]) == 40
    assert "padded length" in report["verdict"] and f"module={SCALED}" in report["verdict"]
    # 40 probes in calls of 14, 14 and 12: each call is one batch of fewer passages than index_bsize
    assert [b["size"] for b in report["batches"]] == [14, 14, 12]
    held = sorted({b["size"] for b in report["batches"] if b["mismatches"]}, reverse=True)
    assert f"(batches of {' or '.join(map(str, held))} passages; batch size setting 16)" in report["verdict"]
    assert store.load("scaled+drill").origin.probes == 40
    assert report["plots"] == ["layers.png", "padded_lengths.png"]
    for png in report["plots"]:
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"*Figure `{png}`: inlined in report.html" in (tmp_path / "report.md").read_text()  # pasteable
        assert png in zipfile.ZipFile(tmp_path / "report.zip").namelist()


def test_operation_drill_names_the_parameter_that_differs(runs, tiny_cfg, tmp_path):
    module = f"module={SCALED}"
    drill.run(tiny_cfg("task=drill", "run=scaled", module))
    drill.run(tiny_cfg("task=drill", "source=scaled", "target=target", module, f"out_dir={tmp_path}"))
    found = json.loads((tmp_path / "report.json").read_text())["first_op"]
    assert found["kind"] == "same operation, different inputs"
    assert found["parameters_differing"] == [f"{SCALED}.weight"] and found["verdict"] == "other inputs"
    assert f"`{SCALED}.weight` differs" in (tmp_path / "report.md").read_text()


def test_eager_attention_is_drilled_to_the_attention_of_the_first_layer(runs, tiny_cfg, tmp_path):
    drill.run(tiny_cfg("task=drill", "run=eager"))
    drill.run(tiny_cfg("task=drill", "source=eager", "target=target", f"out_dir={tmp_path}"))
    report = json.loads((tmp_path / "report.json").read_text())
    if report["first_module"] is None:
        pytest.skip("eager and SDPA attention give bitwise equal module outputs on this machine")
    assert report["first_module"].startswith("bert.encoder.layer.0.attention")  # embeddings equal, attention not
    assert all("dropout" in r["module"] for r in report["modules"] if r.get("only_in"))


def test_drill_of_identical_environments_finds_nothing(runs, tiny_cfg, tmp_path):
    drill.run(tiny_cfg("task=drill", "run=twin"))
    drill.run(tiny_cfg("task=drill", "source=twin", "target=target", f"out_dir={tmp_path}"))
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["first_module"] is None and all(r["mismatches"] == 0 for r in report["modules"])


def test_operation_drill_sees_another_implementation(runs, tiny_cfg, tmp_path):
    module = "module=bert.encoder.layer.0.attention.self"
    drill.run(tiny_cfg("task=drill", "run=eager", module))
    drill.run(tiny_cfg("task=drill", "source=eager", "target=target", module, f"out_dir={tmp_path}"))
    report = json.loads((tmp_path / "report.json").read_text())
    found = report["first_op"]
    assert found["kind"] == "different operations" and found["agreeing_before"] > 0  # q, k, v agree first
    assert "scaled_dot_product_attention" in found["other_op"]  # target: SDPA; eager: matmuls and a softmax
    assert any("softmax" in op for op in found["span"]) and not any("scaled_dot" in op for op in found["span"])
    # named by the operations that compute, not by the views around them (eager's span opens with a transpose)
    assert found["verdict"] == "another implementation" and computes(found["op"]) and found["op"] in found["span"]
    assert found["computing"][0] == found["op"] and all(computes(op) for op in found["computing"])
    assert any("softmax" in op for op in found["computing"])
    assert found["other_computing"] and all(computes(op) for op in found["other_computing"])
    assert found["other_op"] == ", ".join(f"`{op}`" for op in found["other_computing"][:6]) + (
        " ..." if len(found["other_computing"]) > 6 else "")
    assert f"eager computes `{found['op']}`" in report["verdict"]
    eager, sdpa = report["contexts"]
    assert (eager["attention"], sdpa["attention"]) == ("eager", "sdpa")
    if not torch.cuda.is_available():
        assert eager["autocast"].startswith("off (CPU")  # colbert-ai's CUDA autocast does nothing on the CPU
    store = Store(tiny_cfg().store.root)
    ops, drilled = store.load("eager+ops.bert.encoder.layer.0.attention.self"), store.load("eager+drill")
    assert ops.origin.bsizes == drilled.origin.bsizes  # the very calls and batches of the module drill
    assert sorted(set(store.get(ops, "op_batches"))) == list(range(len(store.get(drilled, "batches"))))


def test_every_name_the_module_drill_reports_can_be_drilled_to_operations(runs, tiny_cfg, tmp_path):
    """colbert.doc is no nn.Module: its functional steps (the mask, the normalize) are traced instead."""
    drill.run(tiny_cfg("task=drill", "run=scaled", "module=colbert.doc"))
    drill.run(tiny_cfg("task=drill", "source=scaled", "target=target", "module=colbert.doc", f"out_dir={tmp_path}"))
    report = json.loads((tmp_path / "report.json").read_text())
    ops = Store(tiny_cfg().store.root).load("scaled+ops.colbert.doc")
    names = [r.stage for n, r in ops.artifacts.items() if n.startswith("op/")]
    assert any("norm" in n for n in names) and not any("addmm" in n or "linear" in n for n in names)
    assert report["first_op"]["kind"] == "same operation, different inputs"  # the linear layer's output differs
    assert "functional steps of `colbert.doc`" in report["verdict"]


def test_a_module_that_does_not_exist_leaves_nothing_behind(runs, tiny_cfg):
    store = Store(tiny_cfg().store.root)
    with pytest.raises(UserError, match="module='bert.nope' is not a module of this model; drillable names:"):
        drill.run(tiny_cfg("task=drill", "run=twin", "module=bert.nope"))
    assert not store.run_dir("twin+ops.bert.nope").exists()


def test_operation_drill_finds_the_kernel_under_another_cpu_capability(tiny_cfg, store_root, tmp_path):
    """The machine's best CPU kernels against ATEN_CPU_CAPABILITY=default, on any x86 CPU. The variable is
    read when torch loads, so both sides are subprocesses (whatever this process was started with)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.conftest import TINY

    repo = Path(__file__).resolve().parents[2]
    best = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    best["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))
    default = {**best, "ATEN_CPU_CAPABILITY": "default"}

    def cli(env, *args):
        out = subprocess.run([sys.executable, "-m", "colbert_swap", *args, f"store.root={store_root}", *TINY],
                             cwd=repo, env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]

    cli(default, "run=cpu-default")
    cli(best, "run=cpu-best")
    store = Store(store_root)
    assert store.load("cpu-default").provenance["cpu_capability"] == "DEFAULT"
    cli(default, "task=drill", "run=cpu-default")
    cli(best, "task=drill", "source=cpu-default", "target=cpu-best", f"out_dir={tmp_path / 'modules'}")
    module = json.loads((tmp_path / "modules" / "report.json").read_text())["first_module"]
    if module is None:
        pytest.skip("every module output is bitwise equal under the default and the "
                    f"{store.load('cpu-best').provenance['cpu_capability']} kernels on this machine")
    cli(default, "task=drill", "run=cpu-default", f"module={module}")
    cli(best, "task=drill", "source=cpu-default", "target=cpu-best", f"module={module}", f"out_dir={tmp_path}")
    found = json.loads((tmp_path / "report.json").read_text())["first_op"]
    # everything before the first diverging module is bitwise equal: inside it, an operation on equal inputs
    assert found["kind"] in ("equal inputs, different output", "different operations"), found
    if found["kind"] == "equal inputs, different output":
        assert 0 < found["mismatches"] <= found["numel"]


def test_drill_reports_each_batch_size(runs, tiny_cfg, tmp_path):
    drill.run(tiny_cfg("task=drill", "run=scaled", "probes=12", "bsizes=[12,3]"))
    drill.run(tiny_cfg("task=drill", "source=scaled", "target=target", f"out_dir={tmp_path}"))
    report = json.loads((tmp_path / "report.json").read_text())
    # 3 calls of 4 probes (short, medium, long), each batched at 12 (1 batch) and at 3 (2 batches)
    assert [b["bsize"] for b in report["batches"]] == [12, 3, 3] * 3  # the target used the source's batching
    assert [b["size"] for b in report["batches"]] == [4, 3, 1] * 3
    lengths = [b["padded_len"] for b in report["batches"]]
    assert lengths[0] == lengths[1] == lengths[2]  # colbert-ai pads the whole call, whatever the batch size
    assert lengths[0] <= lengths[3] <= lengths[6] <= 64  # short to long calls, capped by doc_maxlen
    # the sentence states the passages each differing batch held, not the setting it was cut with
    held = sorted({b["size"] for b in report["batches"] if b["mismatches"]}, reverse=True)
    assert held and f"(batches of {', '.join(map(str, held[:-1]))}{' or ' if len(held) > 1 else ''}{held[-1]} " \
                    f"passage{'s' if held != [1] else ''}; batch size settings 3, 12)" in report["verdict"]


@pytest.mark.parametrize("preset,module,first_op", [
    ("sdpa_math", "bert.encoder.layer.0.attention.self", "scaled_dot_product_attention"),
    ("kmeans_seed", None, None),  # k-means is outside the model: every module output is equal
    ("normalize_fp16", None, None),
])
def test_each_cpu_knob_is_drilled_to_the_right_place(tiny_cfg, tmp_path, preset, module, first_op):
    capture(tiny_cfg("run=target"), progress=quiet_progress)
    capture(tiny_cfg(f"run={preset}", f"perturb={preset}"), progress=quiet_progress)
    drill.run(tiny_cfg("task=drill", f"run={preset}"))
    drill.run(tiny_cfg("task=drill", f"source={preset}", "target=target", f"out_dir={tmp_path}"))
    report = json.loads((tmp_path / "report.json").read_text())
    if module and report["first_module"] is None:
        pytest.skip(f"perturb={preset} gives module outputs bitwise equal to the default SDPA backend's here")
    assert report["first_module"] == module
    if module:
        drill.run(tiny_cfg("task=drill", f"run={preset}", f"module={module}"))
        drill.run(tiny_cfg("task=drill", f"source={preset}", "target=target", f"module={module}",
                           f"out_dir={tmp_path / 'ops'}"))
        found = json.loads((tmp_path / "ops" / "report.json").read_text())["first_op"]
        # the same aten op on bitwise equal inputs, another SDPA backend: the kernel itself differs
        assert found["kind"] == "equal inputs, different output" and first_op in found["op"]
        assert found["verdict"] == "the kernel differs"
