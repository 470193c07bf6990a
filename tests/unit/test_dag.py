"""The indexing DAG: artifact order, chunk expansion, downstream sets, and the topological-order check."""

from __future__ import annotations

import pytest

from colbert_swap.colbert.resources import stage
from colbert_swap.core.dag import INDEXING, Dag
from colbert_swap.colbert.stages import DAG

EXPECTED_ARTIFACTS_2 = [
    "num_passages", "num_chunks", "sample_pids", "sample_tokens", "sample_token_masks", "sample_token_order",
    "local_sample_embs", "sample_doclens", "avg_doclen_est",
    "num_embeddings_est", "num_partitions",
    "sample", "sample_heldout", "prenorm_centroids", "postnorm_centroids", "centroids", "heldout_residual",
    "avg_residual", "bucket_cutoffs", "bucket_weights", "half_centroids",
    "tokens.0", "token_masks.0", "token_order.0", "embs.0", "doclens.0", "codes.0", "residuals.0",
    "tokens.1", "token_masks.1", "token_order.1", "embs.1", "doclens.1", "codes.1", "residuals.1",
    "all_codes", "num_embeddings", "ivf", "values", "ivf_lengths", "ivf_pid", "ivf_pid_lengths",
]
SEARCH_ARTIFACTS = ["query_texts", "query_tokens", "query_mask", "Q", "search_settings", "centroid_scores", "cells",
                    "cell_counts", "candidate_pids", "candidate_counts", "scored_pids", "scored_scores",
                    "scored_counts", "ranked_pids", "ranked_scores"]


def names(nodes):
    return [n.name for n in nodes]


def test_artifacts_golden_two_chunks():
    assert DAG.artifacts(num_chunks=2, phases=INDEXING) == EXPECTED_ARTIFACTS_2
    assert DAG.artifacts(num_chunks=2) == EXPECTED_ARTIFACTS_2 + SEARCH_ARTIFACTS  # the search graph after the index


def test_the_search_is_downstream_of_the_index_and_of_its_queries():
    assert names(DAG.downstream_of(["half_centroids"], 1, ("search",))) == ["centroid_scores", "cells",
                                                                          "candidate_pids", "scored_pids",
                                                                          "ranked_pids"]
    assert names(DAG.downstream_of(["Q"], 1)) == ["centroid_scores", "cells", "candidate_pids", "scored_pids",
                                                  "ranked_pids"]
    assert names(DAG.downstream_of(["ivf_pid"], 1)) == ["candidate_pids", "scored_pids", "ranked_pids"]
    assert "embs.0" not in DAG.upstream_of(["Q"], 1) and "query_texts" in DAG.upstream_of(["Q"], 1)
    assert {"codes.0", "residuals.0", "doclens.0", "half_centroids"} <= DAG.upstream_of(["ranked_pids"], 1)


def test_artifacts_are_unique():
    arts = DAG.artifacts(num_chunks=3)
    assert len(arts) == len(set(arts))


def test_nodes_are_chunk_major():
    """The nodes make the one list of artifacts above, in its order: every chunk's nodes before the next chunk's."""
    nodes = DAG.nodes(2, INDEXING)
    assert [o for n in nodes for o in n.outputs] == EXPECTED_ARTIFACTS_2
    chunks = [n.chunk for n in nodes if n.chunk is not None]
    assert chunks == sorted(chunks) and set(chunks) == {0, 1}
    assert [n.name for n in nodes if n.chunk == 1] == ["tokens.1", "embs.1", "codes.1", "residuals.1"]


def test_nodes_bind_chunk_inputs():
    by_name = {n.name: n for n in DAG.nodes(2)}
    assert dict(by_name["residuals.1"].inputs)["embs"] == "embs.1"
    assert dict(by_name["residuals.1"].inputs)["codes"] == "codes.1"
    assert by_name["codes.0"].chunk == 0 and by_name["all_codes"].chunk is None
    assert dict(by_name["all_codes"].inputs)["chunk_codes"] == ("codes.0", "codes.1")
    assert dict(by_name["ivf_pid"].inputs)["chunk_doclens"] == ("doclens.0", "doclens.1")
    assert by_name["embs.1"].outputs == ("embs.1", "doclens.1")


def test_every_node_input_is_produced_earlier():
    produced: set[str] = set()
    for node in DAG.nodes(3):
        for name in node.input_names():
            assert name in produced, f"{node.name} reads {name} before it is produced"
        produced.update(node.outputs)


def test_downstream_of_half_centroids():
    assert names(DAG.downstream_of(["half_centroids"], 2, INDEXING)) == [
        "codes.0", "residuals.0", "codes.1", "residuals.1",
        "all_codes", "num_embeddings", "ivf", "ivf_lengths", "ivf_pid",
    ]


def test_downstream_of_local_sample_embs():
    got = names(DAG.downstream_of(["local_sample_embs"], 1, INDEXING))
    all_names = names(DAG.nodes(1, INDEXING))
    from_sample = all_names[all_names.index("sample"):]
    assert "embs.0" not in got and "tokens.0" not in got
    assert got == [n for n in from_sample if n not in ("tokens.0", "embs.0")]
    # avg_doclen_est reads sample_doclens, not the embeddings: not dirty
    assert "avg_doclen_est" not in got and "num_partitions" not in got


def test_the_encoder_reads_the_tokenizers_output():
    assert names(DAG.downstream_of(["sample_tokens"], 1, INDEXING))[0] == "local_sample_embs"
    assert names(DAG.downstream_of(["tokens.0"], 1, INDEXING))[0] == "embs.0"
    assert DAG.together("token_masks.1") == ["tokens.1", "token_masks.1", "token_order.1"]
    assert DAG.together("embs.1") == ["embs.1"]


def test_downstream_of_nothing_is_empty():
    assert DAG.downstream_of([], 2) == []


def test_downstream_of_one_chunk_only():
    assert names(DAG.downstream_of(["embs.1"], 2, INDEXING)) == [
        "codes.1", "residuals.1", "all_codes", "num_embeddings", "ivf", "ivf_lengths", "ivf_pid",
    ]


def test_expand():
    assert DAG.expand(["embs"], 3) == ["embs.0", "embs.1", "embs.2"]
    assert DAG.expand(["all_codes", "codes"], 2) == ["all_codes", "codes.0", "codes.1"]
    assert DAG.expand(["codes.1"], 2) == ["codes.1"]
    with pytest.raises(KeyError):
        DAG.expand(["no_such_artifact"], 2)
    with pytest.raises(KeyError):
        DAG.expand(["embs.5"], 2)


def test_producer():
    assert DAG.producer("codes.7").name == "codes"
    assert DAG.producer("sample_heldout").name == "sample"
    assert DAG.producer("doclens.0").name == "embs"


# --- toy DAGs ---------------------------------------------------------------------------------------------


@stage("setup")
def alpha(corpus):
    return 1


@stage("train")
def beta(alpha):
    return alpha + 1


@stage("index", per_chunk=True, inputs={"beta": "beta"})
def gamma(beta, chunk):
    return beta * chunk


@stage("finalize", inputs={"parts": "gamma.*"})
def delta(parts):
    return sum(parts)


def test_stage_decorator_splits_artifacts_and_resources():
    assert alpha.inputs == () and alpha.resources == ("corpus",)
    assert beta.inputs == (("alpha", "alpha"),)
    assert gamma.outputs == ("gamma.N",) and gamma.per_chunk and gamma.resources == ("chunk",)
    assert delta.inputs == (("parts", "gamma.*"),)


def test_toy_dag_in_order():
    dag = Dag([alpha, beta, gamma, delta])
    assert dag.artifacts(2) == ["alpha", "beta", "gamma.0", "gamma.1", "delta"]
    assert names(dag.downstream_of(["alpha"], 2)) == ["beta", "gamma.0", "gamma.1", "delta"]
    assert names(dag.downstream_of(["gamma.0"], 2)) == ["delta"]


def test_dag_reading_before_produced_fails():
    with pytest.raises(AssertionError, match="beta reads alpha before it is produced"):
        Dag([beta, alpha])


def test_dag_reading_chunks_before_produced_fails():
    with pytest.raises(AssertionError, match="delta reads gamma"):
        Dag([alpha, beta, delta, gamma])


def test_dag_reading_unknown_artifact_fails():
    @stage("train")
    def lonely(missing):
        return missing

    with pytest.raises(AssertionError, match="lonely reads missing"):
        Dag([alpha, lonely])


def test_dag_artifact_produced_twice_fails():
    @stage("train", outputs=("alpha",))
    def again(corpus):
        return 2

    with pytest.raises(AssertionError, match="produced twice"):
        Dag([alpha, again])


def test_every_fact_names_artifacts_that_exist():
    """Facts about artifacts live on their stages; the artifacts they name must exist in the DAG."""
    from colbert_swap.colbert.stages import DAG
    from colbert_swap.core.dag import Reduction

    templates = set(DAG.artifact_templates())
    declared = DAG.declared()
    assert declared and set(declared) <= templates
    for name, facts in declared.items():
        if facts.order_free:
            assert facts.order_free in templates, name
        if facts.reduction:
            assert isinstance(facts.reduction, Reduction), name  # its length is checked where it is declared
    assert {n for n, f in declared.items() if f.centroid_set} == {"prenorm_centroids", "postnorm_centroids",
                                                                   "centroids", "half_centroids"}
    assert DAG.facts("ivf").order_free == "ivf_lengths" and DAG.facts("codes.3") == type(DAG.facts("ivf"))()
    assert DAG.facts("num_passages") == type(DAG.facts("ivf"))()  # no facts: the defaults


def test_a_tolerance_declared_on_a_stage_is_what_allclose_means_for_its_artifact():
    import torch

    from colbert_swap.proof.compare.comparators import compare
    from colbert_swap.proof.compare.tolerances import Tolerance
    from colbert_swap.colbert.resources import stage
    from colbert_swap.core.dag import Dag, Facts

    @stage("setup", facts=Facts(tolerance=(1e-2, 0.0)))
    def loose(x):
        return x

    @stage("setup")
    def x():
        return torch.ones(3)

    dag = Dag([x, loose])
    assert dag.tolerances() == {"loose": (1e-2, 0.0)}
    a, b = torch.ones(3), torch.tensor([1.0, 1.0, 1.005])
    assert compare("loose", a, b, tol=Tolerance(per_artifact=dag.tolerances())).status == "allclose"
    assert compare("loose", a, b, tol=Tolerance()).status == "diverged"
    overridden = Tolerance.from_config({"per_artifact": {"loose": [0.0, 0.0]}}, dag.tolerances())
    assert overridden.rtol_atol("loose", torch.float32) == (0.0, 0.0)  # compare.per_artifact wins
    assert loose(x=a) is a  # a stage is callable like the function it wraps


def test_a_stage_is_added_by_writing_one_function():
    """Every @stage function of a phase module, in definition order, is a node; helpers and stages imported
    from elsewhere are not."""
    import types

    from colbert_swap.colbert.resources import stage
    from colbert_swap.colbert.stages import _stages

    module = types.ModuleType("fake_phase")
    module.__dict__["__name__"] = "fake_phase"
    exec('''
from colbert_swap.colbert.resources import stage

def helper(x):
    return x

@stage("setup")
def first(num_passages):
    return num_passages

@stage("setup")
def second(first):
    return helper(first)
''', module.__dict__)
    imported = stage("setup")(lambda: 0)  # defined elsewhere: not this module's stage
    module.borrowed = imported
    assert [s.name for s in _stages([module])] == ["first", "second"]
