"""The run writer: the one place anything of a run is persisted (capture, replay, isolate, drill, ops, search).

    with open_run(store, label, Capture(), config, digest, write=Write.NEW, force=cfg.force) as run:
        if run.done:
            return run.manifest                   # already complete with this origin, config, environment
        run.put("num_passages", 120, stage="num_passages")   # a blob, its record, and where it was computed
        run.save()                                 # after every node: a crash resumes from here
        run.finish()                               # complete

It takes the run's lock, decides to return a complete run, resume a partial one (same origin, config and
environment) or start over, records every artifact with the environment that computed it, and removes a
run that failed before it stored anything of its own (so a failed validation leaves nothing behind).
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from colbert_swap.env import loaded
from colbert_swap.errors import UserError
from colbert_swap.env.provenance import changed_keys, env_id, run_environment
from colbert_swap.core.store.manifest import ArtifactRecord, RunManifest
from colbert_swap.core.store.origin import Origin


class Write(str, Enum):
    """What `open_run` does with a run already stored under the label (a complete one of the same origin and config
    is always returned as it is, `run.done`)."""

    NEW = "new"  # one of another config is refused unless force=true; a partial one is resumed here (a capture)
    REPLACE = "replace"  # one of another origin or config is started over; a partial one is resumed here (a replay)
    RECORD = "record"  # a partial one is started over, never resumed (a drill's recordings)
    FRESH = "fresh"  # any is started over: what "here" is may have changed (an isolate)
    EXTEND = "extend"  # the complete run is opened to gain artifacts (its search), and stays complete


class RunWriter:
    def __init__(self, store, manifest: RunManifest, done: bool = False, resumed: bool = False):
        self.store, self.manifest, self.done, self.resumed = store, manifest, done, resumed
        here = run_environment(manifest.config)  # with the run's perturb.threads, as its stages compute
        self.env = env_id(here)  # what this writer stores is recorded as computed here
        if not done:
            manifest.environments.setdefault(self.env, here)
        self.wrote = False
        self.recorded = False  # whether this process's snapshot of what it loaded is in the manifest
        self.keep: Callable[[str, Any], bool] | None = None  # (name, value) -> keep its bytes (None: all; store.keep)

    def put(self, name: str, value: Any, stage: str, inputs: dict[str, str] | Iterable[str] = (),
            seconds: float = 0.0, code: str | None = None) -> ArtifactRecord:
        """Store `value` as artifact `name`, made by `stage` from `inputs` (artifact names of this run, or
        name -> blob hash), computed here by code of hash `code` (colbert_swap/core/code.py)."""
        keep = self.keep is None or self.keep(name, value)
        ref = self.store.blobs.put(value, behind=True, write=keep)  # written while the next stage computes
        if keep and name in self.manifest.hash_only:
            self.manifest.hash_only.remove(name)
        elif not keep and name not in self.manifest.hash_only:
            self.manifest.hash_only.append(name)
        hashes = inputs if isinstance(inputs, dict) else {n: self.manifest.artifacts[n].ref.hash for n in inputs}
        record = ArtifactRecord(ref=ref, stage=stage, inputs=dict(hashes), seconds=seconds, env=self.env, code=code)
        self.manifest.artifacts[name] = record
        self.wrote = True
        return record

    def put_rng(self, node: str, state: dict) -> None:
        """The random generators' state at the start of `node` (python: JSON, torch: a uint8 tensor)."""
        self.manifest.rng[node] = {k: self.store.blobs.put(v).hash for k, v in state.items()}

    def adopt(self, name: str, record: ArtifactRecord, origin: RunManifest) -> None:
        """Take an artifact from another run (reused or injected), keeping the environment that computed it."""
        self.manifest.adopt(name, record, origin)

    def save(self) -> None:
        """Save the manifest with the artifacts whose files are on disk (a crash then resumes after them); raise
        if a file could not be written. Until the run is complete, an artifact this capture keeps only the hash
        of (store.keep) is left out too: a resumed run has no bytes to go on from, and computes it again."""
        blobs = self.store.blobs
        unwritten = frozenset(n for n, r in self.manifest.artifacts.items() if blobs.unwritten(r.ref)
                              or (not self.manifest.complete and n in self.manifest.hash_only))
        self.store.save(self.manifest, unwritten)
        blobs.check()

    def flush(self) -> None:
        """Wait for this run's files to be written, then save the manifest with those on disk (all of them, or
        raise for those that could not be written)."""
        try:
            self.store.blobs.flush()
        finally:
            self.save()

    def folder(self, name: str) -> Path:
        """A folder of files of this run (colbert-ai's index files: "index"), written by the caller through it."""
        return self.store.run_dir(self.manifest.label) / name

    def set_plan(self, plan: dict) -> None:
        """The run's plan (num_chunks, phases, options: colbert_swap/runs/execute.py), kept in its manifest."""
        self.manifest.plan = dict(plan)

    def set_inputs(self, digests: dict) -> None:
        """The content digests of what the run reads besides its config (checkpoint, collection), in its manifest."""
        self.manifest.inputs = dict(digests)

    def record_loaded(self) -> None:
        """Add what this process has loaded (colbert_swap/env/loaded.py) to the run's manifest: at the end of the
        computation, so that every library a stage loaded is mapped; a resumed run adds its own process's."""
        self.manifest.loaded = loaded.merge(self.manifest.loaded, loaded.snapshot())
        self.recorded = True

    def finish(self) -> RunManifest:
        self.store.blobs.flush()
        if not self.recorded:
            self.record_loaded()
        self.manifest.complete = True
        self.save()
        return self.manifest


@contextmanager
def open_run(store, label: str, origin: Origin, config: dict, config_hash: str, *, write: Write = Write.REPLACE,
             force: bool = False, make: Callable[[RunManifest], None] | None = None) -> Iterator[RunWriter]:
    """Write run `label` under its lock. An existing run with the same origin and config is returned complete
    (`run.done`), resumed where it stopped (its environment is this one), or started over, as `write` says
    (`Write`). `make(manifest)` fills a new run before anything is computed (a replay's records from its target)."""
    mismatch = "refuse" if write is Write.NEW else "restart"
    resume, fresh, extend = write is not Write.RECORD, write is Write.FRESH, write is Write.EXTEND
    with store.lock(label):
        if extend:
            writer = RunWriter(store, store.load(label), resumed=True)
            with _settled(writer):
                yield writer
            return
        if fresh and store.run_dir(label).exists():
            shutil.rmtree(store.run_dir(label))
        writer = _existing(store, label, origin, config, config_hash, mismatch, force, resume)
        if writer is not None and (writer.done or writer.resumed):
            with _settled(writer):
                yield writer
            return
        manifest = RunManifest(label=label, config=config, config_hash=config_hash, provenance=run_environment(config),
                               origin=origin)
        if make is not None:
            make(manifest)
        writer = RunWriter(store, manifest)
        writer.save()
        try:
            with _settled(writer):
                yield writer
        except BaseException:
            if not writer.wrote:  # nothing of its own: leave nothing behind (a resume would have nothing to use)
                shutil.rmtree(store.run_dir(label), ignore_errors=True)
            raise


@contextmanager
def _settled(writer: RunWriter) -> Iterator[None]:
    """However the body ends, the files it put are written (or have failed) and the manifest names those on
    disk: after an error too, so that a resume starts after every stage whose files are there."""
    try:
        yield
    except BaseException:
        if not writer.done:
            try:
                if writer.wrote and not writer.recorded:
                    writer.record_loaded()
            except Exception:  # noqa: BLE001 - what it loaded is a fact for reports; the files come first
                pass
            try:
                writer.flush()
            except Exception:  # noqa: BLE001 - the body's error is the one to raise; the manifest was saved
                pass
        raise
    if not writer.done:
        if writer.wrote and not writer.recorded:
            writer.record_loaded()  # a run that computed something and did not finish (a search's extension)
        writer.flush()


def config_differences(stored: dict, new: dict, most: int = 4) -> str:
    """The keys two configs differ in, stored value first.

    >>> config_differences({"index": {"nbits": 2, "doc_maxlen": 180}, "seed": 1}, {"index": {"nbits": 1, "doc_maxlen": 180}})
    'index.nbits: 2 stored, 1 now; seed: 1 stored, missing now'
    """
    a, b = _flat(stored), _flat(new)
    keys = [k for k in sorted(set(a) | set(b)) if a.get(k, _MISSING) != b.get(k, _MISSING)]
    said = [f"{k}: {_shown(a.get(k, _MISSING))} stored, {_shown(b.get(k, _MISSING))} now" for k in keys[:most]]
    more = f"; and {len(keys) - most} more" if len(keys) > most else ""
    return "; ".join(said) + more if said else "the same keys, another config hash"


_MISSING = object()


def _shown(value) -> str:
    return "missing" if value is _MISSING else repr(value) if isinstance(value, str) else str(value)


def _flat(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in (config or {}).items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _existing(store, label: str, origin: Origin, config: dict, config_hash: str, mismatch: str, force: bool,
              resume: bool) -> RunWriter | None:
    if not store.has_run(label):
        return None
    existing = store.load(label)
    if existing.config_hash != config_hash or existing.origin != origin:
        if mismatch == "refuse" and not force:
            raise UserError(f"run {label!r} already exists in {store.root} with another config "
                            f"({config_differences(existing.config, config)}); choose another run=NAME or pass "
                            "force=true to replace it")
    elif existing.complete:
        return RunWriter(store, existing, done=True)
    elif resume:
        changed = changed_keys(existing.provenance, run_environment(existing.config))
        if not changed:
            return RunWriter(store, existing, resumed=True)
        if mismatch == "refuse" and not force:
            raise UserError(f"run {label!r} was started in another environment ({', '.join(changed)} differ); "
                            "resume it there, or pass force=true to start it over here")
    shutil.rmtree(store.run_dir(label))
    return None
