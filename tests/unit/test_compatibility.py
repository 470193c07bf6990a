"""The compatibility verdict: pure functions over typed pair results (no runs, no environments)."""

from __future__ import annotations

import json
import re

from colbert_swap.study.compatibility import (DIFFERS, IDENTICAL, NO_VERDICT, NOT_CAPTURED, NOT_COMPARED, Change,
                                        DrillFinding, FirstOp, PackageChange, Parity, Skipped, in_encoder, index_row,
                                        packages_text, verdict)
from colbert_swap.env.venvs import package_differences
from colbert_swap.env.loaded import INSTALLED_ONLY, LOADED_NOT_USED, RAN, classify

SDPA = FirstOp("equal inputs, different output", "aten.scaled_dot_product_attention.default")
ENCODER = ("local_sample_embs", "embs")


def _change(a: str, b: str, **kw) -> Change:
    return Change(a, b, artifacts_differ=kw.pop("artifacts_differ", True), index_changed=kw.pop("index_changed", True),
                  **kw)


def test_the_encoder_is_local_sample_embs_and_every_chunk_of_embs():
    assert all(in_encoder(n) for n in ("local_sample_embs", "embs", "embs.0", "embs.12"))
    assert not any(in_encoder(n) for n in ("prenorm_centroids", "embs_x", "sample", "codes.0", "doclens.0"))
    assert _change("a", "b", root_cause=("prenorm_centroids", "embs")).encoder
    assert not _change("a", "b", root_cause=("prenorm_centroids",)).encoder


def test_packages_that_differ_from_two_freezes_and_the_ones_the_step_did_not_mean():
    old = {"torch": "2.12.1", "setuptools": "69.5.1", "Numpy": "1.26.4", "nvidia_cublas_cu12": "12.4.5.8"}
    new = {"torch": "2.13.0+cpu", "setuptools": "80.9.0", "numpy": "1.26.4"}
    moved = tuple(PackageChange(*d) for d in package_differences(old, new))
    assert moved == (PackageChange("nvidia-cublas-cu12", "12.4.5.8", None), PackageChange("setuptools", "69.5.1", "80.9.0"),
                     PackageChange("torch", "2.12.1", "2.13.0+cpu"))
    change = _change("torch-2.12.1", "torch-2.13.0", root_cause=("prenorm_centroids",), packages=moved,
                     intended=("torch",))
    assert [p.name for p in change.unintended] == ["nvidia-cublas-cu12", "setuptools"]  # not recorded: may have run
    assert change.unexplained() == ["torch-2.12.1 -> torch-2.13.0 moves more than torch: nvidia-cublas-cu12 "
                                    "12.4.5.8 -> (none), setuptools 69.5.1 -> 80.9.0"]
    # the op drill names a kernel of torch (SDPA gives other bits on equal inputs), and torch moved: explained
    assert _change("torch-2.12.1", "torch-2.13.0", root_cause=ENCODER, drill=DrillFinding("m", SDPA), packages=moved,
                   intended=("torch",)).unexplained() == []
    assert packages_text(moved, 2) == "nvidia-cublas-cu12 12.4.5.8 -> (none), setuptools 69.5.1 -> 80.9.0 and 1 more"
    assert packages_text(()) == "none" and packages_text(None) == "unknown"
    # a hand-written spec names no intended package: nothing is "unintended", every package is listed
    assert _change("a", "b", root_cause=ENCODER, packages=moved).unintended == ()


def test_first_op_from_a_drill_report_in_words():
    equal = FirstOp.from_report({"kind": "equal inputs, different output", "index": 9,
                                 "op": "aten.scaled_dot_product_attention.default"})
    assert equal == SDPA
    assert equal.text() == ("op `aten.scaled_dot_product_attention.default` gets equal inputs and gives different "
                            "outputs (the kernel differs)")
    weights = FirstOp.from_report({"kind": "same operation, different inputs", "op": "aten.linear.default",
                                   "inputs_differing": [1], "parameters_differing": ["layer.0.output.dense.weight"]})
    assert weights.parameters == ("layer.0.output.dense.weight",)
    assert weights.text() == ("op `aten.linear.default` runs on different inputs: `layer.0.output.dense.weight` differs "
                              "(other inputs)")
    other = FirstOp.from_report({"kind": "different operations", "op": "aten.softmax.int",
                                 "other_op": "`aten.scaled_dot_product_attention.default`"})
    assert "runs where the other side runs `aten.scaled_dot_product_attention.default`" in other.text()
    assert FirstOp.from_report({"kind": "no operation differs on equal inputs", "index": None}).op is None


def test_config_only_index_differences_do_not_count_as_a_changed_index():
    assert index_row("x", {}).index == IDENTICAL
    row = index_row("x", {"plan.json": "config: index_bsize 16 vs 8", "metadata.json": "config: index_bsize 16 vs 8"})
    assert row.index == IDENTICAL and row.config_only == ("metadata.json", "plan.json") and row.files == ()
    row = index_row("x", {"plan.json": "config: index_bsize 16 vs 8", "centroids.pt": "3 of 10 elements differ"})
    assert row.index == DIFFERS and row.files == ("centroids.pt",)
    assert index_row("x", None).index == NOT_COMPARED


def _study() -> tuple[list[str], dict, dict, dict]:
    """torch-1 .. torch-3 keep the index, torch-4 changes it in the encoder (drilled to SDPA), torch-5 keeps
    torch-4's, torch-6 could not be built, torch-7 changes the k-means only (not drilled)."""
    envs = [f"torch-{i}" for i in range(1, 8)]
    differs = {"centroids.pt": "650 of 8192 elements differ", "0.codes.pt": "120 of 5000 elements differ"}
    against = {"torch-1": {}, "torch-2": {}, "torch-3": {"plan.json": "config: index_bsize 16 vs 8"},
               "torch-4": differs, "torch-5": differs, "torch-7": differs}
    same = dict(artifacts_differ=False, index_changed=False, packages=())
    changes = {"torch-2": _change("torch-1", "torch-2", **same), "torch-3": _change("torch-2", "torch-3", **same),
               "torch-4": _change("torch-3", "torch-4", root_cause=ENCODER,
                                  drill=DrillFinding("bert.encoder.layer.0.attention.self", SDPA),
                                  packages=(PackageChange("torch", "3", "4"),), intended=("torch",)),
               "torch-5": _change("torch-4", "torch-5", **same),
               "torch-7": _change("torch-5", "torch-7", root_cause=("prenorm_centroids",), packages=(),
                                  intended=("torch",))}
    return envs, against, changes, {"torch-6": "environment 'torch-6': installing its requirements failed\n..."}


def test_the_verdict_table_one_row_per_environment_against_the_reference():
    envs, against, changes, failures = _study()
    v = verdict(envs, "torch-1", against, changes, failures)
    assert [(r.env, r.index) for r in v.rows] == [
        ("torch-1", IDENTICAL), ("torch-2", IDENTICAL), ("torch-3", IDENTICAL), ("torch-4", DIFFERS),
        ("torch-5", DIFFERS), ("torch-6", NOT_CAPTURED), ("torch-7", DIFFERS)]
    assert v.rows[3].change.drill.op.op == "aten.scaled_dot_product_attention.default"
    assert v.rows[3].files == ("0.codes.pt", "centroids.pt") and v.rows[2].config_only == ("plan.json",)
    assert all(r.retrieval is None for r in v.rows)  # the search stages will fill it
    table = v.table()
    assert "| `torch-1` (reference) | index identical" in table
    assert "index identical (config only: plan.json)" in table
    assert "installing its requirements failed" in table and "torch 3 -> 4" in table
    json.dumps(v.to_json())  # report.json holds it as it is
    assert v.to_json()["rows"][3]["change"]["drill"]["op"]["kind"] == "equal inputs, different output"


def test_the_summary_says_where_the_index_changes_why_and_what_is_not_explained():
    envs, against, changes, failures = _study()
    text = verdict(envs, "torch-1", against, changes, failures).summary
    assert text.startswith(
        "torch-1 .. torch-3 give an identical index; torch-4 changes it (root cause `local_sample_embs`, `embs`; "
        "module `bert.encoder.layer.0.attention.self`; op `aten.scaled_dot_product_attention.default` gets equal "
        "inputs and gives different outputs (the kernel differs)), and torch-5 keeps torch-4's; torch-7 changes it "
        "(root cause `prenorm_centroids`).")
    assert "Against the reference torch-1: the index is identical in torch-2, torch-3 and differs in torch-4, " \
           "torch-5, torch-7." in text
    assert "Not captured: torch-6 (environment 'torch-6': installing its requirements failed)." in text
    assert "Every change between the pairs compared is located, and every encoder change drilled" in text
    assert text.count("The study is incomplete.") == 1  # torch-6 was not captured


def test_changes_that_could_not_be_explained_are_named():
    log = "/s/matrix/a-vs-b/ops.log"
    changes = {"b": _change("a", "b", locate_error="locate failed (exit 1); see /s/locate.log", packages=()),
               "c": _change("b", "c", root_cause=ENCODER, drill=DrillFinding("m", error=f"`task=drill ...` failed; see {log}"),
                            packages=None),
               "d": _change("c", "d", artifacts_differ=True, index_changed=False, root_cause=("ivf",), packages=())}
    v = verdict(["a", "b", "c", "d"], "a", {e: {} for e in "abcd"}, changes, {})
    assert v.unexplained == ("a -> b is not located (locate failed (exit 1); see /s/locate.log)",
                             f"b -> c: the drill failed (`task=drill ...` failed; see {log})",
                             "b -> c: which packages differ is unknown (a freeze is missing)")
    assert "b changes it (not located: locate failed (exit 1); see /s/locate.log)" in v.summary
    assert "Changes that leave the index data as it was: c -> d (root cause `ivf`)." in v.summary
    assert "Not explained: a -> b is not located" in v.summary and "Every change" not in v.summary
    assert "incomplete" not in v.summary and v.complete


def test_a_reference_that_was_not_captured_compares_nothing():
    v = verdict(["a", "b"], "a", {}, {}, {"a": "the capture failed"})
    assert [r.index for r in v.rows] == [NOT_CAPTURED, NOT_COMPARED]
    assert v.summary.startswith("Fewer than two environments were captured")


def test_an_environment_compared_with_nothing_before_it_never_keeps_anything():
    """c was captured, but the pair b -> c was not compared: the summary must not say c keeps b's index."""
    same = dict(artifacts_differ=False, index_changed=False, packages=())
    changes = {"b": _change("a", "b", **same), "d": _change("c", "d", **same)}
    skipped = (Skipped("b", "c", "the comparison failed: KeyError: 'num_chunks'"),)
    v = verdict(["a", "b", "c", "d"], "a", {"a": {}, "b": {}, "c": {"centroids.pt": "3 of 8 differ"},
                                            "d": {"centroids.pt": "3 of 8 differ"}}, changes, {}, skipped=skipped)
    assert v.summary.startswith("a .. b give an identical index; c is not compared with the environment before it "
                                "(the comparison failed: KeyError: 'num_chunks'); d keeps c's index.")
    assert "c keeps" not in v.summary and "b's" not in v.summary
    assert "Not compared: b -> c (the comparison failed: KeyError: 'num_chunks')." in v.summary
    assert v.summary.count("The study is incomplete.") == 1 and not v.complete
    assert v.rows[2].not_compared == "the comparison failed: KeyError: 'num_chunks'"
    assert re.search(r"\| not compared: the comparison failed", v.table())
    assert v.to_json()["not_compared"] == [{"a": "b", "b": "c", "why": "the comparison failed: KeyError: 'num_chunks'"}]


def test_a_reference_that_failed_is_named_and_the_first_captured_stands_in():
    same = dict(artifacts_differ=False, index_changed=False, packages=())
    changes = {"c": _change("b", "c", **same)}
    skipped = (Skipped("a", "b", "a was not captured: colbert_swap crashed: AttributeError: nbytes"),)
    v = verdict(["a", "b", "c"], "b", {"b": {}, "c": {}}, changes, {"a": "colbert_swap crashed: AttributeError: nbytes"},
                skipped=skipped, asked="a")
    assert v.reference == "b" and v.asked == "a"
    assert "Against b (standing in for the reference a, which was not captured): the index is identical in c" in v.summary
    assert "No environment's index could be compared" not in v.summary
    assert "Not captured: a (colbert_swap crashed: AttributeError: nbytes)." in v.summary
    table = v.table()
    assert re.search(r"\| `b` \(stand-in reference\) +\|", table)
    assert re.search(r"\| `a` \(reference, not captured\) +\| not captured +\|", table)
    assert "not captured: colbert_swap crashed: AttributeError: nbytes" in table
    assert v.to_json()["reference_asked"] == "a" and v.to_json()["complete"] is False


def test_only_packages_a_capture_loaded_are_offered_as_causes():
    """torch-2.1.0 -> torch-2.4.1 on a CPU: the CUDA libraries moved too but computed nothing; a package no
    process loaded is installed only; the drill's kernel (aten.layer_norm, torch's) explains the change."""
    cpu_a = {"packages": {"torch": "2.1.0", "nvidia-cudnn-cu12": "8.9", "numpy": "1.26.4"}, "libraries": {}}
    cpu_b = {"packages": {"torch": "2.4.1", "nvidia-cudnn-cu12": "9.1", "numpy": "1.26.4"}, "libraries": {}}
    moved = tuple(PackageChange(n, o, v, use=classify(n, cpu_a, cpu_b, gpu_used=False)) for n, o, v in (
        ("torch", "2.1.0", "2.4.1"), ("nvidia-cudnn-cu12", "8.9", "9.1"), ("nvidia-nccl-cu12", "2.18", "2.20"),
        ("sympy", "1.12", "1.13")))
    assert [p.use for p in moved] == [RAN, LOADED_NOT_USED, INSTALLED_ONLY, INSTALLED_ONLY]
    assert packages_text(moved) == ("torch 2.1.0 -> 2.4.1; loaded, not used: no GPU computed: nvidia-cudnn-cu12 "
                                    "8.9 -> 9.1; installed only: nvidia-nccl-cu12 2.18 -> 2.20, sympy 1.12 -> 1.13")
    kernel = FirstOp("equal inputs, different output", "aten.layer_norm.default", verdict="the kernel differs")
    change = _change("torch-2.1.0", "torch-2.4.1", root_cause=ENCODER, drill=DrillFinding("bert.embeddings.LayerNorm", kernel),
                     packages=moved, intended=("torch",))
    assert change.unintended == () and change.kernel_explained and change.unexplained() == []
    # a loaded package that moved besides torch, with no kernel named: not pinned on torch alone
    numpy = moved + (PackageChange("numpy", "1.26.4", "2.0.0", use=RAN),)
    other = _change("a", "b", root_cause=("prenorm_centroids",), packages=numpy, intended=("torch",))
    assert [p.name for p in other.unintended] == ["numpy"]
    assert other.unexplained() == ["a -> b moves more than torch: numpy 1.26.4 -> 2.0.0"]
    # with a kernel of torch named, numpy's move does not make the encoder change unexplained
    assert _change("a", "b", root_cause=ENCODER, drill=DrillFinding("m", kernel), packages=numpy,
                   intended=("torch",)).unexplained() == []


def test_the_summary_quotes_the_op_reports_verdict_and_names_computing_ops():
    eager = FirstOp.from_report({"kind": "different operations", "verdict": "another implementation",
                                 "op": "aten.matmul.default", "computing": ["aten.matmul.default", "aten.div.Tensor",
                                                                             "aten.softmax.int"],
                                 "other_op": "`aten.scaled_dot_product_attention.default`"})
    assert eager.text() == ("ops `aten.matmul.default`, `aten.div.Tensor`, `aten.softmax.int` run where the other side "
                            "runs `aten.scaled_dot_product_attention.default` (another implementation)")
    weights = FirstOp.from_report({"kind": "same operation, different inputs", "verdict": "other inputs",
                                   "op": "aten.linear.default", "parameters_differing": ["w"]})
    assert weights.text().endswith("(other inputs)")


def test_a_root_cause_that_locate_found_to_be_noise_is_never_called_a_cause():
    change = _change("a", "b", root_cause=("prenorm_centroids",), noise=("prenorm_centroids",), packages=())
    assert change.cause_text() == ("no cause; noise, not a cause: `prenorm_centroids` (not reproducible in this "
                                   "environment on equal inputs)")
    assert change.unexplained() == ["a -> b: prenorm_centroids did not reproduce on equal inputs (noise of the "
                                    "environment, not evidence of a cause)"]
    v = verdict(["a", "b"], "a", {"a": {}, "b": {"centroids.pt": "3 of 8 differ"}}, {"b": change}, {})
    assert "root cause `prenorm_centroids`" not in v.summary and "Not explained: a -> b: prenorm_centroids" in v.summary


def test_no_verdict_for_an_environment_whose_capture_is_not_colbert_ais_indexer():
    """matrix.parity=true: b's capture differs from colbert-ai's Indexer there and c's parity check failed, so the
    verdict says nothing of their index; d is perturbed (not compared): its row never reads 'identical'."""
    same = dict(artifacts_differ=False, index_changed=False, packages=())
    changes = {e: _change(p, e, **same) for p, e in zip("abcd", "bcde")}
    parity = {"a": Parity("identical"), "e": Parity("identical"),
              "b": Parity.from_report({"status": "differs", "differences": {"centroids.pt": "3 of 8 elements differ"}}),
              "c": Parity("failed", "exit 1: EOFError; see /s/envs/logs/c.parity.log"),
              "d": Parity.from_report({"status": "not compared", "why": "perturbed (perturb.scale=1.0078125): "
                                                                       "colbert-ai's Indexer cannot be perturbed"})}
    v = verdict(list("abcde"), "a", {e: {} for e in "abcde"}, changes, {}, parity=parity)
    assert [(r.env, r.index) for r in v.rows] == [("a", IDENTICAL), ("b", NO_VERDICT), ("c", NO_VERDICT),
                                                  ("d", IDENTICAL), ("e", IDENTICAL)]
    assert v.rows[1].refused == "our capture differs from colbert-ai's Indexer there (centroids.pt)"
    assert "b: no verdict — our capture differs from colbert-ai's Indexer there (centroids.pt)" in v.summary
    assert ("c: no verdict — our capture could not be checked against colbert-ai's Indexer there (parity failed: "
            "exit 1: EOFError; see /s/envs/logs/c.parity.log)") in v.summary
    assert "the index is identical in d, e and differs in none." in v.summary  # b and c are in neither list
    # nothing is said to keep or change the index of b or c: a .. e do not "give an identical index"
    assert v.summary.startswith("a gives the index; b: no verdict; c: no verdict; d is not weighed against c (no "
                                "verdict there); e keeps d's index."), v.summary
    assert "a: no verdict" not in v.summary and not v.complete and "The study is incomplete." in v.summary
    table = v.table()
    assert re.search(r"\| `a` \(reference\) +\| index identical .*\| parity: identical +\|", table)
    assert re.search(r"\| `b` +\| no verdict — our capture differs .*\| parity: differs: `centroids.pt` \(3 of 8 "
                     r"elements differ\) +\|", table)
    assert re.search(r"\| `c` +\| no verdict — .*\| parity: failed: exit 1: EOFError", table)
    d_row = next(line for line in table.splitlines() if line.startswith("| `d`"))
    assert "parity: not compared: perturbed (perturb.scale=1.0078125)" in d_row
    assert "parity: identical" not in d_row and not parity["d"].refuses  # a perturbed run still gets its verdict
    assert [r["parity"]["status"] for r in v.to_json()["rows"]] == ["identical", "differs", "failed", "not compared",
                                                                    "identical"]
    # a reference whose capture is not colbert-ai's: nothing is said against it
    v = verdict(list("ab"), "a", {"a": {}, "b": {}}, {"b": changes["b"]}, {}, parity={"a": parity["b"],
                                                                                     "b": Parity("identical")})
    assert "No verdict against the reference a: our capture differs from colbert-ai's Indexer there" in v.summary
    assert "identical in" not in v.summary
    # without matrix.parity nothing changes: no parity column, and the study is complete
    v = verdict(list("ab"), "a", {"a": {}, "b": {}}, {"b": changes["b"]}, {})
    assert "parity" not in v.table() and v.complete and all(r.parity is None for r in v.rows)
