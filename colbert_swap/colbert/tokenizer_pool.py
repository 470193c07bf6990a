"""colbert-ai's tokenizer call, made ahead in forked copies of this process.

`DocTokenizer.tensorize` spends most of its time in one call, `self.tok(batch_text, padding='longest',
truncation='longest_first', return_tensors='pt', max_length=doc_maxlen - 1)`: the Rust encoding, then
transformers' conversion of the lists to tensors (on this CPU, 1.3 s and 1.8 s of 3.4 s for 6,400 passages;
the rest of `tensorize` is 0.1 s). That call reads only the texts and the tokenizer. With
`index.tokenizer_processes` > 1, worker processes forked from this one at the run's first tokenizer call,
each with a copy of the very tokenizer object as it is then (a swapped or a patched one too), make it for
every group of a stage at once and for the next stage's (the next chunk's) ahead of its turn, until the
nodes of the run end (`close_pools`); colbert-ai's `tensorize` still runs here, line for line, and its `self.tok(...)` returns what the
same call returned in the copy. A call `tensorize` makes that is not the one made ahead (another colbert-ai
version's arguments, other texts) goes to the real tokenizer: the result is colbert-ai's either way
(tests/integration/test_pipeline.py compares the tokens made both ways).

    for texts, call in zip(groups, tokenizer_calls(doc_tokenizer, groups, processes=8)):
        with served(doc_tokenizer, texts, call):
            batches, reverse = doc_tokenizer.tensorize(texts, bsize=64)
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import warnings
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch

from colbert_swap.env.venvs import end_with_parent


def call_arguments(doc_tokenizer) -> dict:
    """The keyword arguments of colbert-ai 0.2.22's tokenizer call in `tensorize` (max_length leaves room for
    its [D] marker)."""
    return {"padding": "longest", "truncation": "longest_first", "return_tensors": "pt",
            "max_length": doc_tokenizer.doc_maxlen - 1}


_TOKENIZER = None  # in a worker: its copy of the tokenizer
SERVED = {"calls": 0}  # tokenizer calls answered from a worker in this process (the tests check it is used)


def processes_for(index_config) -> int:
    """index.tokenizer_processes, or when null half of this machine's cores (at most 8): none below 4 cores,
    and none where processes cannot be forked (Windows)."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return 0
    if index_config.tokenizer_processes is not None:
        return int(index_config.tokenizer_processes)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(8, cores // 2) if cores >= 4 else 0


def _install(tokenizer) -> None:
    """A worker's start: its tokenizer; Ctrl-C is the parent's to handle (a worker would print a traceback of
    its own), and on Linux the worker ends with its parent, however the parent ends (no orphan left behind)."""
    global _TOKENIZER
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # a forked Rust thread pool would wait forever
    _TOKENIZER = tokenizer
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    end_with_parent()


def _call(texts: list[str], arguments: dict) -> dict[str, np.ndarray]:
    """The call in a worker; the tensors go back as arrays (transformers' Rust encodings are not read by
    `tensorize`, and pickling them costs more than the call)."""
    out = _TOKENIZER(texts, **arguments)
    return {key: value.numpy() for key, value in out.items()}


class TokenizerPool:
    """Forked workers making the tokenizer call for groups of texts, ahead of their turn: forked once per
    tokenizer object (a fork of a process holding a model on the GPU costs about 0.2 s a worker), kept for
    the stages after, each result handed out once."""

    def __init__(self, tok, processes: int, arguments: dict):
        self.tok, self.arguments = tok, arguments
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # Python 3.12: fork of a process with threads
            self.pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork"),
                                            initializer=_install, initargs=(tok,))
        self.pending: dict[tuple, tuple[list[str], Future]] = {}
        self.lock = threading.Lock()  # the background stage and the main thread both call

    @staticmethod
    def key(texts: list[str]) -> tuple:
        return len(texts), hash(tuple(texts))

    def submit(self, groups: list[list[str]]) -> None:
        with self.lock, warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            for texts in groups:
                key = self.key(texts)
                if key not in self.pending:
                    self.pending[key] = (texts, self.pool.submit(_call, texts, self.arguments))

    def take(self, texts: list[str]) -> dict[str, np.ndarray] | None:
        """The call's result for exactly these texts, or None: not made ahead, or the worker failed (a worker
        killed, the call raised). Then `tensorize` makes the call itself, with the same result or error."""
        with self.lock:
            made, future = self.pending.pop(self.key(texts), (None, None))
        if future is None or made != texts:
            return None
        try:
            return future.result()
        except Exception:  # noqa: BLE001 (the call in this process answers instead)
            return None

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


_POOLS: dict[int, TokenizerPool] = {}  # id(tokenizer) -> its pool (the pool holds the tokenizer: ids stay unique)
_POOLS_LOCK = threading.Lock()


def pool_for(doc_tokenizer, processes: int) -> TokenizerPool | None:
    """The pool of this tokenizer object (made at the first call); None with fewer than two processes."""
    if processes < 2:
        return None
    tok = doc_tokenizer.tok
    with _POOLS_LOCK:
        pool = _POOLS.get(id(tok))
        if pool is None or pool.tok is not tok:
            pool = _POOLS[id(tok)] = TokenizerPool(tok, processes, call_arguments(doc_tokenizer))
        return pool


def close_pools() -> None:
    """End every pool's workers (a capture does at its end; a later call forks new ones)."""
    with _POOLS_LOCK:
        for pool in _POOLS.values():
            pool.close()
        _POOLS.clear()


def tokenizer_calls(doc_tokenizer, groups: list[list[str]], processes: int,
                    ahead: list[list[str]] = ()) -> Iterator[dict[str, np.ndarray] | None]:
    """Each group's tokenizer call, made by this tokenizer's pool of `processes` forked workers, in order;
    the `ahead` groups (the next stage's) are started too, for a later call to take. None for every group
    (`tensorize` calls the tokenizer itself) with fewer than two processes."""
    pool = pool_for(doc_tokenizer, processes)
    if pool is None:
        return iter([None] * len(groups))
    pool.submit(list(groups) + list(ahead))
    return (pool.take(texts) for texts in groups)


class _Served:
    """Stands in for the tokenizer during one `tensorize`: the call made ahead is answered from its result;
    any other call or attribute goes to the tokenizer."""

    def __init__(self, tok, texts: list[str], result: dict[str, np.ndarray], arguments: dict):
        self._tok, self._texts, self._result, self._arguments = tok, texts, result, arguments

    def __call__(self, batch_text, **kwargs):
        from transformers import BatchEncoding

        if self._result is not None and list(batch_text) == self._texts and kwargs == self._arguments:
            result, self._result = self._result, None
            return BatchEncoding({key: torch.from_numpy(value) for key, value in result.items()})
        return self._tok(batch_text, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tok, name)


@contextmanager
def served(doc_tokenizer, texts: list[str], result: dict[str, np.ndarray] | None):
    """`doc_tokenizer.tok` answers the call made ahead for `texts` from `result` (nothing changes for None)."""
    if result is None:
        yield
        return
    tok = doc_tokenizer.tok
    doc_tokenizer.tok = stand_in = _Served(tok, texts, result, call_arguments(doc_tokenizer))
    try:
        yield
    finally:
        doc_tokenizer.tok = tok
        SERVED["calls"] += stand_in._result is None  # taken by tensorize's call
