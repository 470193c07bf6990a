"""Operation traces are aligned by operation and input content, not by position (known answers)."""

from __future__ import annotations

import pytest
import torch

from colbert_swap.study.drill import COPY_OPS, VERDICTS, VIEW_OPS, align_ops, computes


def test_the_same_steps_in_another_order_are_not_a_difference():
    # q, k, v projections recorded in another order (transformers 4.38 vs 4.57), then one kernel differs
    a = [("aten.linear", ("x", "Wq"), "q"), ("aten.linear", ("x", "Wk"), "k"), ("aten.linear", ("x", "Wv"), "v"),
         ("aten.sdpa", ("q", "k", "v"), "ctx")]
    b = [("aten.linear", ("x", "Wk"), "k"), ("aten.linear", ("x", "Wv"), "v"), ("aten.linear", ("x", "Wq"), "q"),
         ("aten.sdpa", ("q", "k", "v"), "ctx'")]
    found = align_ops(a, b)
    assert found["kind"] == "equal inputs, different output"
    assert (found["index"], found["other_index"], found["op"], found["agreeing_before"]) == (3, 3, "aten.sdpa", 3)


def test_another_implementation_is_a_span_on_each_side():
    shared = [("aten.linear", ("x", "Wq"), "q"), ("aten.linear", ("x", "Wk"), "k"), ("aten.linear", ("x", "Wv"), "v")]
    eager = shared + [("aten.transpose", ("k",), "kT"), ("aten.matmul", ("q", "kT"), "s"), ("aten.div", ("s",), "s2"),
                      ("aten.softmax", ("s2",), "p"), ("aten.matmul", ("p", "v"), "ctx")]
    sdpa = shared + [("aten.scaled_dot_product_attention", ("q", "k", "v"), "ctx2")]
    found = align_ops(eager, sdpa)
    assert found["kind"] == "different operations" and found["index"] == 3 and found["agreeing_before"] == 3
    assert found["span"] == ["aten.transpose", "aten.matmul", "aten.div", "aten.softmax", "aten.matmul"]
    assert found["other_span"] == ["aten.scaled_dot_product_attention"] and found["inputs_in_other"]
    assert (found["op"], found["op_index"], found["verdict"]) == ("aten.matmul", 4, "another implementation")


# The op sequences of transformers' BERT self-attention after q, k, v (as the drill records them under
# inference_mode): eager attention computes scores, mask, softmax, dropout and context around views; SDPA runs
# one fused operation. Views and copies (transpose, permute, contiguous, view, reshape) compute nothing.
SHARED = [("aten.linear.default", ("x", "Wq", "bq"), "q0"), ("aten.view.default", ("q0",), "q1"),
          ("aten.transpose.int", ("q1",), "q"), ("aten.linear.default", ("x", "Wk", "bk"), "k0"),
          ("aten.view.default", ("k0",), "k1"), ("aten.transpose.int", ("k1",), "k"),
          ("aten.linear.default", ("x", "Wv", "bv"), "v0"), ("aten.view.default", ("v0",), "v1"),
          ("aten.transpose.int", ("v1",), "v")]
EAGER = SHARED + [("aten.transpose.int", ("k",), "kT"), ("aten.matmul.default", ("q", "kT"), "s"),
                  ("aten.div.Tensor", ("s",), "s2"), ("aten.add.Tensor", ("s2", "mask"), "s3"),
                  ("aten.softmax.int", ("s3",), "p"), ("aten.dropout.default", ("p",), "p2"),
                  ("aten.matmul.default", ("p2", "v"), "c"), ("aten.permute.default", ("c",), "c1"),
                  ("aten.contiguous.default", ("c1",), "c2"), ("aten.view.default", ("c2",), "out")]
SDPA = SHARED + [("aten.scaled_dot_product_attention.default", ("q", "k", "v", "mask4"), "c'"),
                 ("aten.transpose.int", ("c'",), "c1'"), ("aten.reshape.default", ("c1'",), "out'")]
EAGER_COMPUTES = ["aten.matmul.default", "aten.div.Tensor", "aten.add.Tensor", "aten.softmax.int",
                  "aten.dropout.default", "aten.matmul.default"]


def test_another_implementation_is_named_by_the_operations_that_compute():
    found = align_ops(EAGER, SDPA)  # the span starts with a view on both sides: neither is named
    assert (found["kind"], found["verdict"], found["index"], found["agreeing_before"]) == (
        "different operations", "another implementation", 9, 9)
    assert found["span"][0] == "aten.transpose.int" and len(found["span"]) == 10  # the whole span is kept
    assert (found["op"], found["op_index"]) == ("aten.matmul.default", 10)
    assert found["computing"] == EAGER_COMPUTES
    assert found["other_computing"] == ["aten.scaled_dot_product_attention.default"]
    assert found["other_op"] == "`aten.scaled_dot_product_attention.default`"  # not its transpose, reshape

    back = align_ops(SDPA, EAGER)
    assert (back["op"], back["op_index"], back["verdict"]) == ("aten.scaled_dot_product_attention.default", 9,
                                                               "another implementation")
    assert back["other_computing"] == EAGER_COMPUTES
    assert back["other_op"] == ", ".join(f"`{o}`" for o in EAGER_COMPUTES)
    assert "transpose" not in back["other_op"] and "permute" not in back["other_op"]


def test_a_span_that_only_views_is_named_by_its_views():
    a = [("aten.view.default", ("x",), "x2"), ("aten.relu.default", ("x2",), "y")]
    b = [("aten.reshape.default", ("x",), "x2"), ("aten.relu.default", ("x2",), "y")]
    found = align_ops(a, b)
    assert (found["kind"], found["op"], found["computing"], found["other_computing"]) == (
        "different operations", "aten.view.default", [], [])
    assert found["other_op"] == "`aten.reshape.default`"


def test_each_kind_has_the_op_reports_verdict():
    assert VERDICTS == {"equal inputs, different output": "the kernel differs",
                        "same operation, different inputs": "other inputs",
                        "different operations": "another implementation",
                        "no operation differs on equal inputs": None}
    kernel = align_ops([("aten.mm", ("x", "W"), "y")], [("aten.mm", ("x", "W"), "y'")])
    inputs = align_ops([("aten.mm", ("x", "W"), "y")], [("aten.mm", ("x", "W'"), "y'")])
    nothing = align_ops([("aten.mm", ("x", "W"), "y")], [("aten.mm", ("x", "W"), "y")])
    assert [f["verdict"] for f in (kernel, inputs, nothing)] == ["the kernel differs", "other inputs", None]
    assert (kernel["op"], inputs["op"], nothing["op"]) == ("aten.mm", "aten.mm", None)


@pytest.mark.parametrize("op,compute", [
    ("aten.transpose.int", False), ("aten.t.default", False), ("aten._unsafe_view.default", False),
    ("aten.expand.default", False), ("aten.slice.Tensor", False), ("aten.view_copy.default", False),
    ("aten.clone.default", False), ("aten.detach.default", False), ("aten.transpose", False),
    ("aten.matmul.default", True), ("aten.bmm.default", True), ("aten.addmm.default", True),
    ("aten._softmax.default", True), ("aten.dropout.default", True), ("aten.copy_.default", True),
    ("aten.to.dtype", True), ("aten._to_copy.default", True), ("aten._autocast_to_reduced_precision.default", True),
    ("aten.scaled_dot_product_attention.default", True), ("aten._scaled_dot_product_flash_attention_for_cpu.default", True),
])
def test_views_and_copies_compute_nothing(op, compute):
    assert computes(op) is compute


def test_every_view_op_aliases_its_input_in_torchs_schema():
    """The name set agrees with torch's alias annotations: each view's output aliases its input (the copies
    do not; unsafe_split and unsafe_chunk return views that torch leaves unannotated)."""
    unannotated = COPY_OPS | {"unsafe_split", "unsafe_chunk"}
    for name in VIEW_OPS - unannotated:
        packet = getattr(torch.ops.aten, name, None)
        if packet is None:  # not an op of this torch version
            continue
        returns = [r.alias_info for ov in packet.overloads() for r in getattr(packet, ov)._schema.returns]
        assert any(a is not None and not a.is_write for a in returns), name


def test_a_differing_parameter_is_named():
    a = [("aten.view", ("x",), "x2"), ("aten.addmm", ("b", "x2", "W"), "y")]
    b = [("aten.view", ("x",), "x2"), ("aten.addmm", ("b", "x2", "W'"), "y'")]
    found = align_ops(a, b, params={"W": "bert.encoder.layer.0.output.dense.weight"})
    assert found["kind"] == "same operation, different inputs" and found["index"] == 1
    assert found["inputs_differing"] == [2] and found["parameters_differing"] == ["bert.encoder.layer.0.output.dense.weight"]


def test_identical_traces():
    a = [("aten.view", ("x",), "x2"), ("aten.relu", ("x2",), "y")]
    found = align_ops(a, list(a))
    assert found["kind"] == "no operation differs on equal inputs" and found["index"] is None and found["ops"] == 2
