"""The engine: runs DAG nodes in order, feeds them artifacts and resources, and stores their outputs through the
run writer (core/store/run.py: the one place anything of a run is persisted).

    engine = Engine(writer, resources, progress)            # resources: the `Resources` protocol below
    engine.execute(nodes)                                   # every node not recorded yet
    engine.execute(DAG.downstream_of(["centroids"], n), rng_states=target.rng, pinned=frozenset(["centroids"]))

Tasks do not call it directly: colbert_swap/runs/execute.py opens the run, builds the resources and plans the nodes.
After every node the manifest is saved, so a crash loses at most the node in flight, and running the
same command again resumes after the last node that finished.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, ContextManager, Iterable, Protocol

import torch

from colbert_swap.core.code import CodeScope, code_hash
from colbert_swap.core.console import console
from colbert_swap.core.dag import Node
from colbert_swap.core.rng import RngStream
from colbert_swap.core.store import RunManifest
from colbert_swap.core.store.blobs import BlobRef
from colbert_swap.core.store.run import RunWriter


class Resources(Protocol):
    """What the engine asks of the non-artifact side of a run (colbert_swap/colbert/resources.py is the one there
    is): the engine knows no colbert-ai."""

    progress: Callable[[str], None]  # the engine's progress, set when an engine runs with these resources

    def provide(self, name: str, node: Node, rng: RngStream | None, bar: "_Bar") -> Any:
        """The value of resource parameter `name` of `node`'s stage."""

    def initial_rng(self) -> RngStream:
        """The generators a run starts from (colbert-ai's worker's, after building its model)."""

    def computing(self) -> ContextManager[None]:
        """Around every stage: its prints to the run's log, the run's perturb switches and thread counts."""

    def computed(self, node: Node, result: Any) -> Any:
        """A stage's result as the run stores it (perturb.noise plants a difference here)."""

    def may_run_ahead(self) -> bool:
        """Whether background stages may run in a worker thread now (the model, if any, is built)."""

    def close(self) -> None:
        """The nodes of one `execute` have ended: release what they held (the tokenizer's workers)."""

    def code_scope(self) -> CodeScope:
        """What of the code counts for a stage's code hash (colbert_swap/core/code.py): the modules a stage's
        imports are followed into, and the libraries hashed whole (colbert-ai's package)."""


class Engine:
    def __init__(self, run: RunWriter, resources: Resources, progress: Callable[[str], None] = lambda msg: None):
        self.run, self.resources = run, resources
        self.store, self.manifest, self.env = run.store, run.manifest, run.env  # env: where it computes
        self.progress = progress
        resources.progress = progress
        self.memory: dict[str, Any] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._overlapping = threading.Event()  # set while an `overlap` stage computes in the main thread

    # artifacts ---------------------------------------------------------------------------------
    def get(self, name: str) -> Any:
        if name not in self.memory:
            value = self.store.get(self.manifest, name)
            ref = self.manifest.artifacts[name].ref
            if isinstance(value, torch.Tensor) and ref.device == "cuda" and torch.cuda.is_available():
                value = value.cuda()
            return value
        return self.memory[name]

    def put(self, name: str, value: Any, stage: str, inputs: Iterable[str], seconds: float,
            code: str | None = None) -> None:
        self.run.put(name, value, stage, inputs, seconds, code)  # with the code hash of the stage that computed it
        self.memory[name] = value

    def code(self, node: Node) -> str:
        """The hash of the code `node`'s stage runs in this process (colbert_swap/core/code.py; computed once)."""
        return code_hash(node.stage, self.resources.code_scope())

    def record_rng(self, node: Node, rng: RngStream) -> None:
        self.run.put_rng(node.name, rng.state())

    def load_rng(self, refs: dict[str, str]) -> RngStream:
        state = {"python": self.store.blobs.get(BlobRef(hash=refs["python"], kind="json"), "rng state"),
                 "torch": self.store.blobs.get(BlobRef(hash=refs["torch"], kind="tensor"), "rng state")}
        return RngStream.from_state(state)

    # execution ---------------------------------------------------------------------------------
    def done(self, node: Node) -> bool:
        return all(o in self.manifest.artifacts for o in node.outputs)

    def reusable(self, node: Node, other: RunManifest | None, rng_states: dict | None = None) -> bool:
        """`other` ran this node on the very same inputs (by hash), with the same config and starting random
        state, in this very environment, with the very code this process runs for its stage (the code hash its
        records keep): its outputs are this node's outputs. Outputs computed elsewhere, by other code or by code
        not recorded (runs written before it was kept), are never reused; nor are outputs whose bytes are not in
        the store (a capture that kept their hash only, store.keep): a later stage could not read them."""
        return self._same_but_code(node, other, rng_states) and \
            all(other.artifacts[o].code == self.code(node) for o in node.outputs) and \
            not self.store.absent_by_choice(other, node.outputs)

    def _same_but_code(self, node: Node, other: RunManifest | None, rng_states: dict | None) -> bool:
        """`reusable` but for the code: same inputs, config, starting random state and environment."""
        if other is None or other.label == self.manifest.label or other.config_hash != self.manifest.config_hash \
                or not all(o in other.artifacts for o in node.outputs):
            return False
        if "rng" in node.stage.resources:  # a stage that draws: the same draws only from the same state
            start = (rng_states or {}).get(node.name)
            if not start or other.rng.get(node.name) != start:
                return False
        inputs = {n: self.manifest.artifacts[n].ref.hash for n in node.input_names()}
        return all(other.artifacts[o].stage == node.name and other.artifacts[o].inputs == inputs
                   and other.computed_in(o) == self.env for o in node.outputs)

    def reuse_source(self, node: Node, candidates: list[RunManifest], rng_states: dict | None) -> RunManifest | None:
        return next((c for c in candidates if self.reusable(node, c, rng_states)), None)

    def _other_code(self, node: Node, candidates: list[RunManifest], rng_states: dict | None) -> str:
        """Why a node is computed although a candidate has its outputs from the same inputs: their code."""
        other = next((c for c in candidates if self._same_but_code(node, c, rng_states)), None)
        if other is None:
            return ""
        code = other.artifacts[node.outputs[0]].code
        why = f"computed it with other code ({code})" if code else "keeps no code hash for it (an older run)"
        return f" (run {other.label!r} {why}: recomputed)"

    def execute(self, nodes: list[Node], rng_states: dict[str, dict[str, str]] | None = None,
                pinned: frozenset[str] = frozenset(),
                reuse_from: RunManifest | list[RunManifest] | None = None) -> None:
        """Run `nodes` in order, skipping those whose outputs are already recorded.

        `rng_states` maps node -> generator state at its start (a replay takes the target's); without
        it the generators run on from the previous node, as in colbert-ai. `pinned` artifacts (the
        injected ones) are never overwritten. With `reuse_from`, a node whose inputs are unchanged
        takes that run's outputs instead of running again (deterministic stages, same environment, same
        config); a list is searched in order (the target first, then other replays in the store)."""
        pending = [n for n in nodes if not self.done(n)]
        uses = Counter(name for n in pending for name in n.input_names())
        candidates = [reuse_from] if isinstance(reuse_from, RunManifest) else list(reuse_from or [])
        ahead: dict[str, Future] = {}
        try:
            self._execute(pending, uses, candidates, rng_states, pinned, ahead)
        finally:
            for future in ahead.values():
                future.cancel()
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None
            self.resources.close()  # the tokenizer's forked workers end with the nodes that used them

    def _execute(self, pending, uses, candidates, rng_states, pinned, ahead) -> None:
        rng: RngStream | None = None
        for i, node in enumerate(pending, start=1):
            other = self.reuse_source(node, candidates, rng_states)
            if other is not None:
                for name in node.outputs:
                    if name not in pinned:
                        self.run.adopt(name, other.artifacts[name], other)
                self.manifest.rng[node.name] = (rng_states or {}).get(node.name) or other.rng.get(node.name, {})
                why = "inputs unchanged" if other is candidates[0] else f"same inputs as in run {other.label!r}"
                self.progress(f"[{i}/{len(pending)}] {node.name} ({why}: reused)")
                self.run.save()
                self._release(node, uses)
                continue
            known = (rng_states or {}).get(node.name) or self.manifest.rng.get(node.name)
            if known:
                rng = self.load_rng(known)
            elif rng is None:
                rng = self.resources.initial_rng()
            self.record_rng(node, rng)
            self.progress(f"[{i}/{len(pending)}] {node.name}{self._other_code(node, candidates, rng_states)}")
            bar = _Bar(node.name)
            done_ahead = ahead.pop(node.name).result() if node.name in ahead else None
            if done_ahead is not None:
                result, seconds = done_ahead
            else:  # not run ahead, or its turn in the worker came after the overlap stage had ended
                kwargs = self._arguments(node, rng, bar)  # builds the model the first time a stage needs it
                if node.stage.overlap:
                    self._overlapping.set()
                    self._run_ahead(pending[i:], ahead)  # the chunks' tokens, while k-means computes
                start = time.perf_counter()
                try:
                    with self.resources.computing(), torch.inference_mode():
                        result = node.stage.fn(**kwargs)
                finally:
                    self._overlapping.clear()
                seconds = time.perf_counter() - start
            bar.close()
            result = self.resources.computed(node, result)  # perturb.noise=STAGE
            values = result if len(node.outputs) > 1 else (result,)
            for name, value in zip(node.outputs, values):
                if name not in pinned:
                    self.put(name, value, node.name, node.input_names(), seconds, self.code(node))
            if i < len(pending):  # the state the next node starts from
                self.record_rng(pending[i], rng)
            self.run.save()
            self._release(node, uses)

    def compute(self, node: Node, rng: RngStream | None) -> tuple:
        """Run one node again on the run's recorded inputs, from generator state `rng`, as `execute` runs it (the
        perturb switches and knobs, perturb.noise included), and return its outputs without storing anything: the
        determinism check (colbert_swap/study/determinism.py)."""
        kwargs = self._arguments(node, rng, _Bar(node.name, shown=False))
        with self.resources.computing(), torch.inference_mode():
            result = node.stage.fn(**kwargs)
        result = self.resources.computed(node, result)
        return result if len(node.outputs) > 1 else (result,)

    def _arguments(self, node: Node, rng, bar) -> dict:
        kwargs = {}
        for param, source in node.inputs:
            kwargs[param] = [self.get(s) for s in source] if isinstance(source, tuple) else self.get(source)
        for name in node.stage.resources:
            kwargs[name] = self.resources.provide(name, node, rng, bar)
        return kwargs

    AHEAD = 8  # background stages started ahead of their turn, at most (their outputs wait in memory: the
    # tokens of 25,000 passages are ~23 MB)

    def _run_ahead(self, later: list[Node], ahead: dict[str, Future]) -> None:
        """Start the next background stages (`@stage(background=True)`: the chunks' tokenization) whose inputs
        are recorded, in a worker thread, so that they run while the main thread's stage computes without
        Python's lock (`overlap`: k-means). Only once the model is built: the worker must not build it."""
        if not self.resources.may_run_ahead():
            return
        for node in later:
            if len(ahead) >= self.AHEAD:
                return
            if not node.stage.background or node.name in ahead or self.done(node) or \
                    not all(n in self.manifest.artifacts for n in node.input_names()):
                continue
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="colbert_swap-ahead")
            kwargs = self._arguments(node, None, _Bar(node.name, shown=False))
            ahead[node.name] = self._pool.submit(_timed, node.stage.fn, kwargs, self._overlapping)

    def _release(self, node: Node, uses: Counter) -> None:
        """Stream: drop from memory what no later node reads (it stays in the store)."""
        for name in node.input_names():
            uses[name] -= 1
            if uses[name] <= 0:
                self.memory.pop(name, None)
        for name in node.outputs:
            if uses[name] <= 0:
                self.memory.pop(name, None)


def _timed(fn: Callable, kwargs: dict, overlapping: threading.Event) -> tuple[Any, float] | None:
    """A background stage in the worker thread: its result and its seconds; None (not run: the main thread
    runs it in its turn) once the overlap stage has ended, so that it never contends with the encoder."""
    if not overlapping.is_set():
        return None
    start = time.perf_counter()
    with torch.inference_mode():
        result = fn(**kwargs)
    return result, time.perf_counter() - start


class _Bar:
    """A progress bar on the terminal for a long stage, shown once the stage reports progress."""

    def __init__(self, name: str, shown: bool = True):
        self.name, self.bar, self.shown = name, None, shown

    def update(self, done: int, total: int) -> None:
        if not self.shown:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.name, unit="passage", file=console(), leave=False)
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
