"""The pipelined encoder (index.pipeline, the default) computes what colbert-ai's own per-batch
`Checkpoint.doc` computes: every artifact's hash is the same either way, over several chunks, and the
chunks' tokens are made ahead of their turn in the worker thread."""

from __future__ import annotations

import threading

import pytest
import torch

from colbert_swap.tasks.capture import capture
from tests.conftest import quiet_progress

CHUNKED = ["index.chunksize=40"]  # 120 passages: three chunks, so tokens.1 and tokens.2 can run ahead


def hashes(manifest):
    return {k: r.ref.hash for k, r in manifest.artifacts.items()}


@pytest.fixture(scope="module")
def threads(tiny_cfg):
    """Which thread tokenized each chunk in a pipelined capture (colbert-ai's tensorize, patched to note it)."""
    from colbert.modeling.tokenization import DocTokenizer

    seen: list[str] = []
    original = DocTokenizer.tensorize

    def noting(self, batch_text, bsize=None):
        seen.append(threading.current_thread().name)
        return original(self, batch_text, bsize=bsize)

    import time

    import colbert_swap.colbert.kmeans

    clustering = colbert_swap.colbert.kmeans.kmeans

    def slow_kmeans(*args, **kwargs):  # k-means that outlasts the three chunks' tokenization (10 s at most)
        deadline = time.monotonic() + 10
        while len(seen) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        return clustering(*args, **kwargs)

    DocTokenizer.tensorize, colbert_swap.colbert.kmeans.kmeans = noting, slow_kmeans
    try:
        run = capture(tiny_cfg("run=pipelined", *CHUNKED), progress=quiet_progress)
    finally:
        DocTokenizer.tensorize, colbert_swap.colbert.kmeans.kmeans = original, clustering
    return run, seen


def test_pipelined_and_sequential_encoders_give_the_same_bits(threads, tiny_cfg):
    pipelined, _ = threads
    sequential = capture(tiny_cfg("run=sequential", *CHUNKED, "index.pipeline=false"), progress=quiet_progress)
    assert pipelined.artifacts["num_chunks"] and "embs.2" in pipelined.artifacts
    assert hashes(pipelined) == hashes(sequential)


def test_the_chunks_tokens_are_made_ahead_in_the_worker(threads, tiny_cfg):
    _, seen = threads
    # the sample's tokens in the main thread (which builds the model), the chunks' in the worker, beside k-means
    assert seen[0] == threading.main_thread().name and len(seen) == 4, seen
    assert all(name.startswith("colbert_swap-ahead") for name in seen[1:]), seen



def test_a_background_stage_whose_turn_comes_after_the_overlap_is_left_to_the_main_thread():
    from colbert_swap.core.engine import _timed

    overlapping = threading.Event()
    assert _timed(lambda: 7, {}, overlapping) is None  # k-means is over: not run in the worker
    overlapping.set()
    result, seconds = _timed(lambda: 7, {}, overlapping)
    assert result == 7 and seconds >= 0


def test_tokenizer_calls_made_in_forked_workers_give_the_same_bits(threads, tiny_cfg):
    """index.tokenizer_processes=2: colbert-ai's tokenizer call is made in two forked copies of this process,
    the next chunk's ahead of its turn; every artifact is the same as tokenizing here."""
    from colbert_swap.colbert import tokenizer_pool

    pipelined, _ = threads
    before = tokenizer_pool.SERVED["calls"]
    forked = capture(tiny_cfg("run=forked-tokenizer", *CHUNKED, "index.tokenizer_processes=2"), progress=quiet_progress)
    assert tokenizer_pool.SERVED["calls"] - before == 4  # the sample's group and the three chunks'
    assert hashes(forked) == hashes(pipelined)
    from colbert_swap.proof.compare.runs import compare_runs
    from colbert_swap.core.store import Store

    assert compare_runs(Store(tiny_cfg().store.root), forked, pipelined).diverged() == []  # comparable: a how-key
    assert not tokenizer_pool._POOLS  # the workers end with the capture


def test_a_failing_worker_leaves_the_call_to_this_process(tiny_cfg, monkeypatch):
    """A worker that fails (here: its call raises) does not change the tokens: tensorize calls the tokenizer."""
    from colbert_swap.colbert import tokenizer_pool
    from colbert_swap.colbert.resources import Resources
    from colbert_swap.colbert.stages.setup import tokenize
    from colbert_swap.core.store import Store

    cfg = tiny_cfg()
    store = Store(cfg.store.root)
    resources = Resources(cfg, store, store.root / "failing-worker")
    passages = resources.corpus.passages[:40]
    here = tokenize(passages, resources.checkpoint, resources.colbert_config, 0)

    def broken(texts, max_length):
        raise RuntimeError("a worker's call failed")

    monkeypatch.setattr(tokenizer_pool, "_call", broken)  # the forked workers inherit it
    before = tokenizer_pool.SERVED["calls"]
    try:
        forked = tokenize(passages, resources.checkpoint, resources.colbert_config, 2)
    finally:
        tokenizer_pool.close_pools()
    assert tokenizer_pool.SERVED["calls"] == before
    assert all(torch.equal(a, b) for a, b in zip(here, forked))


def test_a_long_comparison_says_how_far_it_is(tiny_cfg, monkeypatch):
    """compare_runs tells its progress callback every PROGRESS_EVERY seconds (here: before every artifact)."""
    from colbert_swap.core.store import Store
    from colbert_swap.proof.compare import runs

    a = capture(tiny_cfg("run=progress-a"), progress=quiet_progress)
    b = capture(tiny_cfg("run=progress-b", "perturb=eager"), progress=quiet_progress)
    monkeypatch.setattr(runs, "PROGRESS_EVERY", 0.0)
    said: list[str] = []
    comparison = runs.compare_runs(Store(tiny_cfg().store.root), a, b, force=True, progress=said.append)
    n = len(comparison.results)
    assert len(said) == n  # before every artifact
    assert said[-1] == f"comparing 'progress-a' with 'progress-b': {n - 1}/{n} artifacts, now {comparison.results[-1].name}"
