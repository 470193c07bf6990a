"""Comparators: statuses, numbers and tolerance tables on hand-made tensors with known answers."""

from __future__ import annotations

import torch

from colbert_swap.proof.compare.comparators import compare, ulp_distance
from colbert_swap.proof.compare.tolerances import ASSERT_CLOSE, BNB, TORCH_DEFAULT, Tolerance, tolerance


def test_equal_needs_same_bits_dtype_and_shape():
    a = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    assert compare("x", a, a.clone()).status == "equal"
    assert compare("x", a, a.double()).status == "diverged" and compare("x", a, a.double()).note == "dtype mismatch"
    c = compare("x", a, a.reshape(3, 2))
    assert c.status == "diverged" and c.note == "shape mismatch" and c.shape == "2x3 vs 3x2"


def test_numbers_of_a_divergence():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    b = torch.tensor([1.0, 2.5, 3.0, 3.0])
    c = compare("x", a, b)
    assert (c.status, c.mismatches, c.numel, c.fraction) == ("diverged", 2, 4, 0.5)
    assert c.max_abs == 1.0 and c.mad == 1.5 / 4 and c.first_mismatch == [1]


def test_allclose_status_and_tables():
    a = torch.ones(4)
    tiny = torch.nextafter(a, torch.full_like(a, 2.0))  # one ULP above 1.0
    c = compare("x", a, tiny)
    assert c.status == "allclose" and c.max_ulp == 1 and c.allclose == {"torch": True, "bnb": True, "assert_close": True}
    half = torch.tensor([1.0, 1.0], dtype=torch.float16)
    off = torch.tensor([1.0, 1.0009765625], dtype=torch.float16)  # 1 ULP in fp16
    c = compare("h", half, off)  # the status follows the dtype: assert_close's float16 pair by default
    assert c.status == "allclose" and c.tolerance == (1e-3, 1e-5)
    assert c.allclose["torch"] is False and c.allclose["bnb"] is True
    assert c.allclose["assert_close"] is True and c.max_ulp == 1 and c.max_ulp_scaled == 1
    strict = compare("h", half, off, tol=Tolerance("torch"))
    assert strict.status == "diverged" and strict.tolerance == (1e-5, 1e-8)
    own = compare("h", half, off, tol=Tolerance("torch", {"h": (1e-2, 0.0)}))
    assert own.status == "allclose" and own.tolerance == (1e-2, 0.0)


def test_two_ulp_scales_are_named_and_kept_apart():
    a = torch.tensor([0.5] * 9 + [1e-9])
    b = a.clone()
    b[-1] = -1e-9
    c = compare("x", a, b)
    assert c.max_ulp > 10**9  # bit distance: every float between -1e-9 and 1e-9
    assert c.max_ulp_scaled < 1  # at the artifact's scale (median 0.5) the difference is far below one ULP
    from colbert_swap.proof.analysis.magnitude import magnitude

    m = magnitude("x", a, b, n=1)
    assert (m.max_units, m.max_ulp_bits) == (c.max_ulp_scaled, c.max_ulp)  # one definition, one number


def test_an_unknown_tolerance_table_is_refused():
    import pytest

    from colbert_swap.errors import UserError

    with pytest.raises(UserError, match="compare.tolerance='loose' is unknown; expected one of: torch, bnb"):
        Tolerance("loose")


def test_ulp_distance_across_zero_and_signs():
    a = torch.tensor([0.0, -0.0, 1.0, -1.0], dtype=torch.float32)
    b = torch.tensor([-0.0, 0.0, 1.0, -1.0], dtype=torch.float32)
    assert ulp_distance(a, b).tolist() == [0, 0, 0, 0]
    smallest = torch.tensor([1e-45])
    assert ulp_distance(smallest, -smallest).tolist() == [2]
    bf = torch.tensor([1.0], dtype=torch.bfloat16)
    assert ulp_distance(bf, torch.nextafter(bf, torch.tensor([2.0], dtype=torch.bfloat16))).tolist() == [1]


def test_order_only_within_segments_but_not_across():
    a = torch.tensor([10, 11, 20, 30, 31, 32])
    same_sets = torch.tensor([11, 10, 20, 32, 30, 31])
    segments = torch.tensor([2, 1, 3])
    c = compare("ivf", a, same_sets, segments=segments)
    assert c.status == "order_only" and c.same and "3 segments" in c.note
    across = torch.tensor([10, 20, 11, 30, 31, 32])  # 20 moved into the first segment
    assert compare("ivf", a, across, segments=segments).status == "diverged"
    assert compare("ivf", a, same_sets).status == "diverged"  # without segments order counts


def test_integers_and_json():
    assert compare("codes", torch.tensor([1, 2], dtype=torch.int32), torch.tensor([1, 3], dtype=torch.int32)).status == "diverged"
    assert compare("n", 5, 5).status == "equal"
    c = compare("avg_doclen_est", 50.25, 50.5)
    assert c.status == "diverged" and c.max_abs == 0.25
    assert compare("x", None, torch.ones(1)).status == "missing"


def test_tolerance_tables():
    assert tolerance(TORCH_DEFAULT, torch.float16) == (1e-5, 1e-8)
    assert tolerance(BNB, torch.float32) == (1e-5, 1e-6) and tolerance(BNB, torch.float16) == (1e-3, 1e-4)
    assert tolerance(BNB, torch.bfloat16) == (1e-2, 1e-3)
    assert tolerance(ASSERT_CLOSE, torch.float16) == (1e-3, 1e-5) and tolerance(ASSERT_CLOSE, torch.int64) == (0.0, 0.0)


def test_results_serialize():
    c = compare("x", torch.zeros(3), torch.tensor([0.0, 1.0, 0.0]))
    d = c.to_json()
    assert d["status"] == "diverged" and d["fraction"] == 1 / 3 and d["mismatches"] == 1


def test_the_inject_verdict_speaks_of_the_whole_run():
    """Known answers for the verdict's three parts: downstream, elsewhere, index files."""
    from colbert_swap.proof.compare.comparators import Comparison
    from colbert_swap.proof.compare.runs import RunComparison, WholeRun
    from colbert_swap.proof.report.proof import injection_verdict

    def cmp(**status):
        return RunComparison("a", "b", tuple(Comparison(n, s) for n, s in status.items()))

    before = cmp(x="diverged", y="diverged", z="diverged")
    after = cmp(x="equal", y="equal", z="diverged")  # z is not downstream of x
    whole = WholeRun("r", "a", 3, ("z",), (), {"0.codes.pt": "3 of 9 elements differ"})
    text = injection_verdict(["x"], "a", "b", before, after, ["y"], whole)
    assert text.startswith("Injecting `x` from a into b makes all 1 downstream artifact identical to a's.")
    assert "Outside what the injection reaches, still different from a's: `z`" in text
    assert "does not explain the whole run" in text and "index files of r and a differ: `0.codes.pt`" in text
    fixed = injection_verdict(["x"], "a", "b", before, cmp(x="equal", y="equal", z="equal"), ["y"],
                              WholeRun("r", "a", 3, (), (), {}))
    assert "Every artifact of the replayed run now equals a's" in fixed and "index files of r and a are identical" in fixed
    nothing = injection_verdict(["x"], "a", "b", cmp(x="equal"), cmp(x="equal"), [], WholeRun("r", "a", 1, (), (), {}))
    assert nothing.startswith("Runs a and b do not differ") and "nothing for the injection to explain" in nothing


def test_status_prints_and_serializes_as_its_plain_word():
    """`Status` is a str: JSON, f-strings, tables, dict keys and `==` see "equal", never "Status.EQUAL"."""
    import json

    from colbert_swap.proof.compare.comparators import SAME, Comparison, Status
    from colbert_swap.proof.report.tables import table

    words = ["equal", "order_only", "allclose", "diverged", "unread", "missing"]
    assert [s.value for s in Status] == words
    for s, word in zip(Status, words):
        assert s == word and str(s) == word and f"{s}" == word and f"{s:>10}" == f"{word:>10}" and "%s" % s == word
        assert json.dumps({s: s}) == json.dumps({word: word}) and json.dumps([s], indent=1) == json.dumps([word], indent=1)
        assert {word: 1}[s] == 1 and {s: 1}[word] == 1 and Status(word) is s
    assert table(["status"], [[Status.ORDER_ONLY]]) == table(["status"], [["order_only"]])
    c = Comparison(name="x", status="order_only")  # a plain word is taken as its Status
    assert c.status is Status.ORDER_ONLY and c.same and type(c.to_json()["status"]) is str
    assert SAME == (Status.EQUAL, Status.ORDER_ONLY) and "equal" in SAME and "allclose" not in SAME


def test_the_facts_choose_the_comparator_first_that_applies_wins(monkeypatch):
    """COMPARATORS in order, the element-wise one last; a new comparator is one class in that list."""
    from colbert_swap.core.dag import Facts
    from colbert_swap.proof.compare import comparators
    from colbert_swap.proof.compare.comparators import (COMPARATORS, Comparator, Context, Elementwise, OrderFree,
                                                        Status, comparator)

    assert isinstance(COMPARATORS[-1], Elementwise) and all(c.applies(Facts()) is False for c in COMPARATORS[:-1])
    assert isinstance(comparator(Facts()), Elementwise) and isinstance(comparator(Facts(label_level=True)), Elementwise)
    chosen = comparator(Facts(order_free="ivf_lengths", label_level=True))
    assert isinstance(chosen, OrderFree) and chosen.reads(Facts(order_free="ivf_lengths")) == ("ivf_lengths",)
    a, b, lengths = torch.tensor([10, 11, 20]), torch.tensor([11, 10, 20]), torch.tensor([2, 1])
    facts = Facts(order_free="ivf_lengths")
    ctx = Context(facts=facts, a={"ivf_lengths": lengths}, b={"ivf_lengths": lengths.clone()})
    assert chosen.compare("ivf", a, b, ctx).status == Status.ORDER_ONLY
    other = Context(facts=facts, a={"ivf_lengths": lengths}, b={"ivf_lengths": torch.tensor([1, 2])})
    assert chosen.compare("ivf", a, b, other).status == Status.DIVERGED  # the runs' segments differ: order counts
    assert chosen.compare("ivf", a, b, Context(facts=facts, a={"ivf_lengths": lengths})).status == Status.DIVERGED

    class Sets(Comparator):  # a new comparator: one class, one place in the list
        def applies(self, facts):
            return facts.centroid_set

        def compare(self, name, a, b, ctx):
            return comparators.compare(name, a.sort().values, b.sort().values, stage=ctx.stage, tol=ctx.tol)

    monkeypatch.setattr(comparators, "COMPARATORS", (Sets(), *COMPARATORS))
    assert isinstance(comparator(Facts(centroid_set=True)), Sets) and isinstance(comparator(Facts()), Elementwise)
    assert comparator(Facts(centroid_set=True)).compare("c", a, b, Context()).status == Status.EQUAL
