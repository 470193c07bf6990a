"""Operation traces are aligned by operation and input content, not by position (known answers)."""

from __future__ import annotations

from colbert_swap.drill import align_ops


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
