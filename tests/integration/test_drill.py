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
    assert {b["bsize"] for b in report["batches"]} == {16}  # index_bsize
    assert sum(b["size"] for b in report["batches"]) == 40
    assert "padded length" in report["verdict"]
    assert store.load("eager+drill").origin["probes"] == 40
    assert report["plots"] == ["layers.png", "padded_lengths.png"]
    for png in report["plots"]:
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in (tmp_path / "report.md").read_text()


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
    assert report["first_op"]["kind"] == "different operations"
    assert "scaled_dot_product_attention" in report["first_op"]["other_op"]  # target: SDPA; eager: matmuls


def test_operation_drill_finds_the_kernel_under_another_cpu_capability(tiny_cfg, store_root, tmp_path):
    """ATEN_CPU_CAPABILITY is read when torch loads: the other environment is a subprocess."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import torch

    if torch.backends.cpu.get_cpu_capability() != "AVX512":
        pytest.skip("needs a CPU whose best kernels are AVX512, to compare with AVX2")
    repo = Path(__file__).resolve().parents[2]
    from tests.conftest import TINY

    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))}
    module = "module=bert.encoder.layer.0.attention.self"
    for args in (["run=avx2"], ["task=drill", "run=avx2", module]):
        out = subprocess.run([sys.executable, "-m", "colbert_swap", *args, f"store.root={store_root}", *TINY],
                             cwd=repo, env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
    assert Store(store_root).load("avx2").provenance["cpu_capability"] == "AVX2"
    capture(tiny_cfg("run=target"), progress=quiet_progress)
    drill.run(tiny_cfg("task=drill", "source=avx2", "target=target", module, f"out_dir={tmp_path}"))
    found = json.loads((tmp_path / "report.json").read_text())["first_op"]
    assert found["kind"] == "equal inputs, different output" and "scaled_dot_product_attention" in found["op"]
    assert 0 < found["mismatches"] < found["numel"] and found["max_ulp"] <= 16


def test_drill_reports_each_batch_size(runs, tiny_cfg, tmp_path):
    drill.run(tiny_cfg("task=drill", "run=eager", "probes=12", "bsizes=[12,3]"))
    drill.run(tiny_cfg("task=drill", "source=eager", "target=target", f"out_dir={tmp_path}"))
    report = json.loads((tmp_path / "report.json").read_text())
    # 3 calls of 4 probes (short, medium, long), each batched at 12 (1 batch) and at 3 (2 batches)
    assert [b["bsize"] for b in report["batches"]] == [12, 3, 3] * 3  # the target used the source's batching
    assert [b["size"] for b in report["batches"]] == [4, 3, 1] * 3
    lengths = [b["padded_len"] for b in report["batches"]]
    assert lengths[0] == lengths[1] == lengths[2]  # colbert-ai pads the whole call, whatever the batch size
    assert lengths[0] <= lengths[3] <= lengths[6] <= 64  # short to long calls, capped by doc_maxlen
    assert "batch sizes" in report["verdict"]


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
    assert report["first_module"] == module
    if module:
        drill.run(tiny_cfg("task=drill", f"run={preset}", f"module={module}"))
        drill.run(tiny_cfg("task=drill", f"source={preset}", "target=target", f"module={module}",
                           f"out_dir={tmp_path / 'ops'}"))
        found = json.loads((tmp_path / "ops" / "report.json").read_text())["first_op"]
        # the same aten op on bitwise equal inputs, another SDPA backend: the kernel itself differs
        assert found["kind"] == "equal inputs, different output" and first_op in found["op"]
