"""The pipelined encoder (index.pipeline, the default) computes what colbert-ai's own per-batch
`Checkpoint.doc` computes: every artifact's hash is the same either way, over several chunks, and the
chunks' tokens are made ahead of their turn in the worker thread."""

from __future__ import annotations

import threading

import pytest

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

    DocTokenizer.tensorize = noting
    try:
        run = capture(tiny_cfg("run=pipelined", *CHUNKED), progress=quiet_progress)
    finally:
        DocTokenizer.tensorize = original
    return run, seen


def test_pipelined_and_sequential_encoders_give_the_same_bits(threads, tiny_cfg):
    pipelined, _ = threads
    sequential = capture(tiny_cfg("run=sequential", *CHUNKED, "index.pipeline=false"), progress=quiet_progress)
    assert pipelined.artifacts["num_chunks"] and "embs.2" in pipelined.artifacts
    assert hashes(pipelined) == hashes(sequential)


def test_the_chunks_tokens_are_made_ahead_in_the_worker(threads):
    _, seen = threads
    # the sample's tokens in the main thread (which builds the model), the chunks' in the worker
    assert seen.count(threading.main_thread().name) == 1, seen
    assert sum(name.startswith("colbert_swap-ahead") for name in seen) == 3, seen
