"""`Reduction`: the reduction behind an artifact knows its own length. Every declared one resolves to the length
the rounding bound of its artifact has always used, and a length nobody can resolve is refused where it is
declared, not when a bound is computed (a stage once got a bound "for a length of 34,653" instead of 32)."""

from __future__ import annotations

import ast
import inspect

import pytest
import torch

from colbert_swap.colbert.resources import stage
from colbert_swap.colbert.stages import DAG
from colbert_swap.core import dag
from colbert_swap.core.dag import Facts, Reduction
from colbert_swap.proof.analysis.magnitude import noise_bound, reduction_length

# A small run: a checkpoint of hidden size 768, embeddings of dim 32, 1000 sample rows clustered into 16
# centroids, 150 x 32 heldout residuals. The sizes as divergence._Pair.sizes() gives them.
HIDDEN, DIM, SAMPLE_ROWS, CENTROIDS, HELDOUT = 768, 32, 1000, 16, 150 * 32
SIZES = {"hidden": HIDDEN, "clustered": SAMPLE_ROWS, "reduced": HELDOUT}  # those of `sample`, `heldout_residual`
SHAPES = {  # each artifact with a declared reduction, as such a run makes it
    "sample_batches": (4, 10, DIM),
    "sample_D": (40, 10, DIM),
    "local_sample_embs": (SAMPLE_ROWS + 150, DIM),
    "sample": (SAMPLE_ROWS, DIM),
    "sample_heldout": (150, DIM),
    "prenorm_centroids": (CENTROIDS, DIM),
    "postnorm_centroids": (CENTROIDS, DIM),
    "centroids": (CENTROIDS, DIM),
    "heldout_residual": (150, DIM),
    "avg_residual": (),
    "bucket_cutoffs": (3,),
    "bucket_weights": (4,),
    "half_centroids": (CENTROIDS, DIM),
    "batches.N": (3, 10, DIM),
    "D.N": (30, 10, DIM),
    "embs.N": (300, DIM),
    "Q": (2, 32, DIM),
}
ENCODER = "the ColBERT linear layer's dot products (one layer of a deeper network)"
# name -> (length with the run's sizes, length without them, what): pinned, the lengths behind today's bounds
PINNED = {
    "sample_batches": (HIDDEN, DIM, ENCODER),
    "sample_D": (HIDDEN, DIM, ENCODER),
    "local_sample_embs": (HIDDEN, DIM, ENCODER),
    "sample": (1, 1, "a cast to float16"),
    "sample_heldout": (1, 1, "a cast to float16"),
    "prenorm_centroids": (SAMPLE_ROWS // CENTROIDS, 1, "the mean over a cluster's members"),
    "postnorm_centroids": (DIM, DIM, "the norm over the embedding dimension"),
    "centroids": (1, 1, "a cast"),
    "heldout_residual": (1, 1, "a subtraction"),
    "avg_residual": (HELDOUT, 1, "the mean over every heldout residual"),
    "bucket_cutoffs": (1, 1, "a quantile's interpolation"),
    "bucket_weights": (1, 1, "a quantile's interpolation"),
    "half_centroids": (1, 1, "a cast to float16"),
    "batches.N": (HIDDEN, DIM, ENCODER),
    "D.N": (HIDDEN, DIM, ENCODER),
    "embs.N": (HIDDEN, DIM, ENCODER),
    "Q": (HIDDEN, DIM, ENCODER),
}


def _declared() -> dict[str, Reduction]:
    return {name: f.reduction for name, f in DAG.declared().items() if f.reduction is not None}


def test_every_declared_reduction_is_pinned():
    """A stage that declares a reduction gets a line here: its length on a small run is a decision to review."""
    assert set(_declared()) == set(PINNED) == set(SHAPES)
    assert all(isinstance(r, Reduction) for r in _declared().values())


@pytest.mark.parametrize("name", sorted(PINNED))
def test_each_declared_reduction_resolves_to_its_pinned_length(name):
    reduction, (with_sizes, without, what) = _declared()[name], PINNED[name]
    shape = SHAPES[name]
    assert reduction.what == what
    assert reduction.resolve(shape, hidden=HIDDEN, clustered=SAMPLE_ROWS, reduced=HELDOUT) == with_sizes
    assert reduction.resolve(shape) == without  # no run at hand: the artifact's own shape


@pytest.mark.parametrize("name", sorted(PINNED))
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_magnitude_asks_the_declared_reduction(name, dtype):
    """What the explanation of a diverging artifact uses: the pinned length, hence the same bound."""
    a = torch.zeros(SHAPES[name], dtype=dtype)
    concrete = name.replace(".N", ".3")
    with_sizes, without, what = PINNED[name]
    assert reduction_length(concrete, a, {}, SIZES) == (with_sizes, what)
    assert reduction_length(concrete, a, {}, {"hidden": None}) == (without, what)
    assert noise_bound(dtype, reduction_length(concrete, a, {}, SIZES)[0]) == noise_bound(dtype, with_sizes)


def test_an_artifact_without_a_declared_reduction_has_length_one():
    assert reduction_length("codes.0", torch.zeros(5, dtype=torch.float16), {}, SIZES) == (1, "no known reduction")
    assert reduction_length("num_passages", torch.zeros(()), {}, SIZES) == (1, "no known reduction")


def test_each_length_reads_only_what_it_needs():
    shape = (CENTROIDS, DIM)
    everything = {"hidden": HIDDEN, "clustered": SAMPLE_ROWS, "reduced": HELDOUT}
    assert Reduction.hidden("h").resolve(shape, **everything) == HIDDEN
    assert Reduction.dim("d").resolve(shape, **everything) == DIM
    assert Reduction.cluster("c").resolve(shape, **everything) == SAMPLE_ROWS // CENTROIDS
    assert Reduction.numel("n").resolve(shape, **everything) == HELDOUT
    assert Reduction.over(7, "seven").resolve(shape, **everything) == 7
    assert Reduction.cluster("c").resolve(shape, clustered=3) == 1  # fewer rows than clusters: at least 1
    assert Reduction.numel("n").resolve(shape) == CENTROIDS * DIM
    assert Reduction.hidden("h").resolve((), hidden=0) == Reduction.dim("d").resolve(()) == 1  # a scalar


@pytest.mark.parametrize("length", ["hiden", "32", "Hidden", 0, -1, 2.0, True, None, ("hidden",)])
def test_a_length_nobody_can_resolve_is_refused_where_it_is_declared(length):
    with pytest.raises(ValueError, match="neither a positive int nor one of"):
        Reduction("a dot product", length)
    with pytest.raises(ValueError):
        @stage("train", facts=Facts(reduction=Reduction("a dot product", length)))
        def never(sample):
            return sample


def test_a_reduction_says_what_it_is_and_a_bare_tuple_is_refused():
    with pytest.raises(ValueError, match="say what it is"):
        Reduction.over(1, "")
    with pytest.raises(TypeError, match="declare a Reduction"):
        Facts(reduction=("hidden", "the ColBERT linear layer's dot products"))  # the old form
    assert Reduction.over(32, "x") == Reduction("x", 32) and Reduction.hidden("x") == Reduction("x", "hidden")
    with pytest.raises(AttributeError):
        Reduction.dim("x").length = 3  # frozen: a declaration cannot change under a stage


def test_the_dag_module_knows_no_colbert_ai():
    imported = {n.module or "" for n in ast.walk(ast.parse(inspect.getsource(dag))) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(ast.parse(inspect.getsource(dag))) if isinstance(n, ast.Import)
                 for a in n.names}
    assert not any(m.startswith(("colbert_swap.colbert", "colbert")) for m in imported), imported


def test_a_reduction_names_the_input_it_reduces_and_the_dag_holds_it_to_its_stage():
    """`Reduction.of` is the input whose rows or elements make the length (not a fixed artifact of the run): a
    stage whose reduction names something it does not read is refused when the DAG is built."""
    from colbert_swap.colbert.resources import stage
    from colbert_swap.colbert.stages import DAG

    assert DAG.facts("prenorm_centroids").reduction.of == "sample"
    assert DAG.facts("avg_residual").reduction.of == "heldout_residual"

    @stage("setup")
    def xs():
        return 0

    @stage("setup", facts=Facts(reduction=Reduction.numel("a mean", of="ys")))
    def mean(xs):
        return xs

    with pytest.raises(AssertionError, match="reduction is of ys, not an input"):
        dag.Dag([xs, mean])
