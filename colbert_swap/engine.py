"""The engine: runs DAG nodes, feeds them artifacts and resources, and is the only place that persists.

    run = Engine(store, resources, manifest)
    run.execute(DAG.nodes(num_chunks))                    # a capture: every node
    run.execute(DAG.downstream_of(["centroids"], n), overrides={"centroids": t})   # a replay

After every node the manifest is saved, so a crash loses at most the node in flight, and running the
same command again resumes after the last node that finished.
"""

from __future__ import annotations

import time
from collections import Counter
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from colbert_swap import colbert_env
from colbert_swap.config import Config
from colbert_swap.corpus import Corpus, load_corpus
from colbert_swap.dag import Node
from colbert_swap.models import checkpoint_path
from colbert_swap.provenance import env_id, environment
from colbert_swap.rng import RngStream
from colbert_swap.store import ArtifactRecord, RunManifest, Store
from colbert_swap.store.blobs import BlobRef


class Resources:
    """Non-artifact inputs, built on first use: a replay downstream of the centroids never loads the model."""

    def __init__(self, cfg: Config, store: Store, run_dir: Path, progress: Callable[[str], None] = lambda m: None):
        self.cfg, self.store, self.run_dir = cfg, store, run_dir
        self.log = run_dir / "capture.log"
        self.progress = progress  # the engine's, once an engine runs with these resources

    @cached_property
    def device(self) -> str:
        return colbert_env.resolve_device(self.cfg.index.device)

    @cached_property
    def corpus(self) -> Corpus:
        return load_corpus(self.cfg.collection, self.store.root / "collections")

    @cached_property
    def checkpoint_path(self) -> str:
        with colbert_env.quiet(self.log):
            return checkpoint_path(self.cfg.model, self.store.root / "models", self.progress)

    @cached_property
    def colbert_config(self):
        with colbert_env.quiet(self.log):
            return colbert_env.colbert_config(self.checkpoint_path, self.cfg.index, self.corpus.path,
                                              str(self.run_dir.resolve()), self.cfg.perturb.index_bsize)

    @cached_property
    def _model(self):
        amp = self.cfg.index.amp if self.cfg.perturb.get("autocast") is None else self.cfg.perturb.autocast
        colbert_env.announce_extensions("capture", self.device, self.log, self.progress)
        self.progress("building the model (colbert-ai's Checkpoint)")
        return colbert_env.load_checkpoint(self.checkpoint_path, self.colbert_config, amp,
                                           self.cfg.seed, self.device, self.log, self.cfg.perturb)

    @property
    def checkpoint(self):
        return self._model[0]

    def initial_rng(self) -> RngStream:
        """The generators as colbert-ai's worker has them after building its model."""
        return self._model[1]

    def get(self, name: str, node: Node) -> Any:
        if name == "chunk":
            return node.chunk
        if name == "index_config":
            return self.cfg.index
        if name == "perturb":
            return self.cfg.perturb
        return getattr(self, name)


class Engine:
    def __init__(self, store: Store, resources: Resources, manifest: RunManifest,
                 progress: Callable[[str], None] = lambda msg: None):
        self.store, self.resources, self.manifest = store, resources, manifest
        self.progress = progress
        resources.progress = progress
        self.memory: dict[str, Any] = {}
        here = environment()
        self.env = env_id(here)  # every artifact this engine computes is recorded as computed here
        manifest.environments.setdefault(self.env, here)

    # artifacts ---------------------------------------------------------------------------------
    def get(self, name: str) -> Any:
        if name not in self.memory:
            value = self.store.get(self.manifest, name)
            ref = self.manifest.artifacts[name].ref
            if isinstance(value, torch.Tensor) and ref.device == "cuda" and torch.cuda.is_available():
                value = value.cuda()
            return value
        return self.memory[name]

    def put(self, name: str, value: Any, stage: str, inputs: Iterable[str], seconds: float) -> None:
        ref = self.store.blobs.put(value)
        hashes = {n: self.manifest.artifacts[n].ref.hash for n in inputs}
        self.manifest.artifacts[name] = ArtifactRecord(ref=ref, stage=stage, inputs=hashes, seconds=seconds,
                                                       env=self.env)
        self.memory[name] = value

    def record_rng(self, node: Node, rng: RngStream) -> None:
        state = rng.state()
        self.manifest.rng[node.name] = {k: self.store.blobs.put(v).hash for k, v in state.items()}

    def load_rng(self, refs: dict[str, str]) -> RngStream:
        state = {"python": self.store.blobs.get(BlobRef(hash=refs["python"], kind="json"), "rng state"),
                 "torch": self.store.blobs.get(BlobRef(hash=refs["torch"], kind="tensor"), "rng state")}
        return RngStream.from_state(state)

    # execution ---------------------------------------------------------------------------------
    def done(self, node: Node) -> bool:
        return all(o in self.manifest.artifacts for o in node.outputs)

    def reusable(self, node: Node, other: RunManifest | None) -> bool:
        """`other` ran this node on the very same inputs (by hash) in this very environment: its outputs are
        this node's outputs. Outputs computed elsewhere are never reused: a run computes in one environment."""
        if other is None or not all(o in other.artifacts for o in node.outputs):
            return False
        inputs = {n: self.manifest.artifacts[n].ref.hash for n in node.input_names()}
        return all(other.artifacts[o].stage == node.name and other.artifacts[o].inputs == inputs
                   and other.computed_in(o) == self.env for o in node.outputs)

    def execute(self, nodes: list[Node], rng_states: dict[str, dict[str, str]] | None = None,
                pinned: frozenset[str] = frozenset(), reuse_from: RunManifest | None = None) -> None:
        """Run `nodes` in order, skipping those whose outputs are already recorded.

        `rng_states` maps node -> generator state at its start (a replay takes the target's); without
        it the generators run on from the previous node, as in colbert-ai. `pinned` artifacts (the
        injected ones) are never overwritten. With `reuse_from`, a node whose inputs are unchanged
        takes that run's outputs instead of running again (deterministic stages, same environment)."""
        pending = [n for n in nodes if not self.done(n)]
        uses = Counter(name for n in pending for name in n.input_names())
        rng: RngStream | None = None
        for i, node in enumerate(pending, start=1):
            if self.reusable(node, reuse_from):
                for name in node.outputs:
                    if name not in pinned:
                        self.manifest.adopt(name, reuse_from.artifacts[name], reuse_from)
                self.manifest.rng[node.name] = (rng_states or {}).get(node.name) or reuse_from.rng.get(node.name, {})
                self.progress(f"[{i}/{len(pending)}] {node.name} (inputs unchanged: reused)")
                self.store.save(self.manifest)
                self._release(node, uses)
                continue
            known = (rng_states or {}).get(node.name) or self.manifest.rng.get(node.name)
            if known:
                rng = self.load_rng(known)
            elif rng is None:
                rng = self.resources.initial_rng()
            self.record_rng(node, rng)
            self.progress(f"[{i}/{len(pending)}] {node.name}")
            kwargs = {}
            for param, source in node.inputs:
                kwargs[param] = [self.get(s) for s in source] if isinstance(source, tuple) else self.get(source)
            bar = _Bar(node.name)
            for name in node.stage.resources:
                kwargs[name] = rng if name == "rng" else bar.update if name == "progress" else \
                    self.resources.get(name, node)
            start = time.perf_counter()
            with colbert_env.quiet(self.resources.log), torch.inference_mode(), \
                    colbert_env.perturbed(self.resources.cfg.perturb):
                result = node.stage.fn(**kwargs)
            seconds = time.perf_counter() - start
            bar.close()
            values = result if len(node.outputs) > 1 else (result,)
            for name, value in zip(node.outputs, values):
                if name not in pinned:
                    self.put(name, value, node.name, node.input_names(), seconds)
            if i < len(pending):  # the state the next node starts from
                self.record_rng(pending[i], rng)
            self.store.save(self.manifest)
            self._release(node, uses)

    def _release(self, node: Node, uses: Counter) -> None:
        """Stream: drop from memory what no later node reads (it stays in the store)."""
        for name in node.input_names():
            uses[name] -= 1
            if uses[name] <= 0:
                self.memory.pop(name, None)
        for name in node.outputs:
            if uses[name] <= 0:
                self.memory.pop(name, None)


class _Bar:
    """A progress bar on the terminal for a long stage, shown once the stage reports progress."""

    def __init__(self, name: str):
        self.name, self.bar = name, None

    def update(self, done: int, total: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.name, unit="passage", file=colbert_env.console(), leave=False)
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
