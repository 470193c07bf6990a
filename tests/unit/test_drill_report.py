"""The drill's sentences state what ran: the passages each batch held, the operations that compute."""

from __future__ import annotations

from colbert_swap.study.drill import align_ops
from colbert_swap.tasks.drill import BatchRow, ModuleDrill, ModuleRow, op_verdict
from tests.unit.test_align_ops import EAGER, SDPA

ROW = ModuleRow("bert.encoder.layer.0.attention.self", 5, 10, 1e-7, 3, [0])


def batch(b, bsize, size, padded_len, mismatches=4):
    return BatchRow(b, bsize, size, padded_len, mismatches, 10, 1e-7 if mismatches else 0.0)


def test_the_batch_sentence_states_the_passages_each_batch_held():
    # 24 probes in 3 calls of 8: a batch size setting of 32 runs batches of 8 passages
    drill = ModuleDrill("a", "b", [ROW], [batch(0, 32, 8, 20), batch(1, 32, 8, 41, 0), batch(2, 32, 8, 64)])
    assert ("The final output differs in batches of padded length [20, 64] (batches of 8 passages; batch size "
            "setting 32) and is equal in batches of padded length [41].") in drill.verdict
    assert "[32]" not in drill.verdict


def test_several_batch_sizes_and_settings():
    # calls of 4 probes at settings 12 and 3: batches of 4, then of 3 and 1
    rows = [batch(3 * c + k, bsize, size, 16 * (c + 1)) for c in range(3)
            for k, (bsize, size) in enumerate([(12, 4), (3, 3), (3, 1)])]
    drill = ModuleDrill("a", "b", [ROW], rows)
    assert "(batches of 4, 3 or 1 passages; batch size settings 3, 12)." in drill.verdict
    single = ModuleDrill("a", "b", [ROW], [batch(0, 16, 1, 8)])
    assert "(batches of 1 passage; batch size setting 16)." in single.verdict


def test_another_implementation_sentence_names_what_computes_on_both_sides():
    text = op_verdict("bert.encoder.layer.0.attention.self", "eager", "sdpa", align_ops(EAGER, SDPA))
    assert ("eager computes `aten.matmul.default`, `aten.div.Tensor`, `aten.add.Tensor`, `aten.softmax.int`, "
            "`aten.dropout.default`, `aten.matmul.default` (ops 9-18, with 4 views or copies) where sdpa computes "
            "`aten.scaled_dot_product_attention.default` (ops 9-11, with 2 views or copies)") in text
    assert "transpose" not in text and text.endswith("another implementation of the same step, not another kernel "
                                                     "result.")
    back = op_verdict("bert.encoder.layer.0.attention.self", "sdpa", "eager", align_ops(SDPA, EAGER))
    assert "sdpa computes `aten.scaled_dot_product_attention.default` (ops 9-11, with 2 views or copies) where " \
           "eager computes `aten.matmul.default`" in back


def test_a_side_that_only_views_or_runs_nothing():
    a = [("aten.view.default", ("x",), "x2"), ("aten.relu.default", ("x2",), "y")]
    b = [("aten.reshape.default", ("x",), "x2"), ("aten.relu.default", ("x2",), "y")]
    assert "a only views or copies: `aten.view.default` (op 0) where b only views or copies: " \
           "`aten.reshape.default` (op 0)" in op_verdict("m", "a", "b", align_ops(a, b))
    extra = [("aten.relu.default", ("x",), "y"), ("aten.mul.Tensor", ("y",), "z")]
    text = op_verdict("m", "a", "b", align_ops(extra, extra[:1]))
    assert "a computes `aten.mul.Tensor` (op 1) where b runs nothing" in text
