"""The store: `blobs/` (hash -> bytes) and `runs/<label>/` (manifest, colbert-ai index, log)."""

from __future__ import annotations

import fcntl
import json
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from colbert_swap.core.console import console
from colbert_swap.errors import UserError
from colbert_swap.core.store.blobs import BlobRef, BlobStore
from colbert_swap.core.store.manifest import ArtifactRecord, RunManifest

__all__ = ["Store", "BlobRef", "ArtifactRecord", "RunManifest", "check_label", "blob_refs", "IMPORTED"]

# runs/<label>/imported.json: written by an import (core/store/bundle.py): the bundle, the machine it was exported
# on, and `left_out`, the artifacts whose bytes the bundle did not carry (not in this store by choice)
IMPORTED = "imported.json"

_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=,@-]*$")


def check_label(label: str) -> str:
    if not isinstance(label, str) or not _LABEL.match(label) or ".." in label or len(label) > 200:
        raise UserError(f"run name {label!r} is not allowed: use letters, digits and . _ + = , @ - "
                        "(no path separators, no '..')")
    return label


def derived(label: str) -> bool:
    """Runs made from other runs carry their origin in their name: replays and isolates (`A+...`), drills
    (`A+drill`, `A+ops.MODULE`) and searches (`A.search-...`)."""
    return "+" in label or ".search-" in label


def blob_refs(manifest: RunManifest) -> Iterator[tuple[str | None, BlobRef]]:
    """Every blob a manifest points at: (artifact name, its blob), then (None, a generator state's blob)."""
    for name, record in manifest.artifacts.items():
        yield name, record.ref
    for state in manifest.rng.values():
        for kind, digest in state.items():
            yield None, BlobRef(hash=digest, kind="tensor" if kind == "torch" else "json")


class Store:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.blobs = BlobStore(self.root / "blobs")

    def run_dir(self, label: str) -> Path:
        return self.root / "runs" / check_label(label)

    def manifest_path(self, label: str) -> Path:
        return self.run_dir(label) / "manifest.json"

    def runs(self) -> list[str]:
        base = self.root / "runs"
        return sorted(p.parent.name for p in base.glob("*/manifest.json")) if base.exists() else []

    def has_run(self, label: str) -> bool:
        return self.manifest_path(label).exists()

    def load(self, label: str) -> RunManifest:
        path = self.manifest_path(label)
        if not path.exists():
            raise UserError(self.missing(label))
        try:
            manifest = RunManifest.load(path)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UserError(f"run {label!r}: manifest {path} cannot be read ({exc})") from exc
        if manifest.label != label:
            raise UserError(f"run {label!r}: manifest {path} names another run ({manifest.label!r}); was it copied "
                            "from another run's folder?")
        return manifest

    def missing(self, label: str) -> str:
        """Why `label` cannot be loaded: the closest names, then the captured runs (derived ones counted)."""
        import difflib

        runs = self.runs()
        captured = [r for r in runs if not derived(r)]
        close = difflib.get_close_matches(label, runs, n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        others = len(runs) - len(captured)
        listing = (f"captured runs there: {', '.join(captured) or 'none'}"
                   + (f"; and {others} derived runs (replays, drills, searches: task=verify lists them)" if others else ""))
        return f"run {label!r} is not in the store {self.root.resolve()}.{hint} ({listing})"

    def save(self, manifest: RunManifest, without: frozenset[str] = frozenset()) -> None:
        manifest.save(self.manifest_path(manifest.label), without)

    def get(self, manifest: RunManifest, artifact: str) -> Any:
        if artifact not in manifest.artifacts:
            raise UserError(f"run {manifest.label!r} has no artifact {artifact!r}")
        ref = manifest.artifacts[artifact].ref
        absent = self.absent_by_choice(manifest, (artifact,))
        if absent and artifact in manifest.hash_only:
            raise UserError(f"run {manifest.label!r} artifact {artifact!r}: its capture kept only its hash "
                            f"(store.keep); a comparison or replay computes its bytes again where the run was "
                            f"computed (colbert_swap/runs/recompute.py `materialize`)")
        if absent:
            bundle = (self.imported(manifest.label) or {}).get("bundle")
            raise UserError(f"run {manifest.label!r} artifact {artifact!r}: its bytes are not in this store (the bundle "
                            f"{bundle} it was imported from left them out): import a bundle that carries them "
                            f"(`task=export run=... artifacts=all` where it was made)")
        return self.blobs.get(ref, what=f"run {manifest.label!r} artifact {artifact!r}")

    def _lock_path(self, label: str) -> Path:
        return self.root / "runs" / f".{check_label(label)}.lock"

    @contextmanager
    def lock(self, label: str, wait: bool = True, waiting: Callable[[str], None] | None = None) -> Iterator[None]:
        """One writer per run label at a time, across processes (parallel sweep jobs). With `wait=False`,
        BlockingIOError at once if another process holds it; else `waiting(message)` (default: a line on the
        terminal) is told before it waits, so a capture held up by another prints why."""
        path = self._lock_path(label)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait:
                    raise
                message = f"waiting for run {label!r}: another process is writing it (lock {path})"
                if waiting is not None:
                    waiting(message)
                else:
                    print(message, file=console(), flush=True)
                fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def locked_labels(self) -> list[str]:
        """The labels some process has taken `lock` for, now or before (their lock files)."""
        base = self.root / "runs"
        return sorted(p.name[1:].removesuffix(".lock") for p in base.glob(".*.lock")) if base.exists() else []

    def referenced(self) -> dict[str, BlobRef]:
        """Every blob some run's manifest points at (artifacts and generator states), by hash."""
        return {ref.hash: ref for label in self.runs() for _, ref in blob_refs(self.load(label))}

    def imported(self, label: str) -> dict | None:
        """What the import that brought run `label` recorded (IMPORTED), or None: a run made here, or unreadable."""
        path = self.run_dir(label) / IMPORTED
        try:
            record = json.loads(path.read_text()) if path.exists() else None
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def left_out(self, label: str) -> set[str]:
        """The artifacts of run `label` whose bytes the bundle it was imported from did not carry (empty when none)."""
        return {str(n) for n in ((self.imported(label) or {}).get("left_out") or [])}

    def absent_by_choice(self, manifest: RunManifest, names: Iterable[str] | None = None) -> set[str]:
        """The artifacts of `manifest` (of `names`, when given) whose files are not here because the bundle the run
        was imported from left their bytes out (`left_out`) or its capture kept only their hash (`hash_only`,
        store.keep): not in this store by choice, not lost."""
        chosen = self.left_out(manifest.label) | set(manifest.hash_only)
        return {n for n in (chosen if names is None else chosen & set(names))
                if n in manifest.artifacts and not self.blobs.path(manifest.artifacts[n].ref).exists()}

    def lost(self, manifest: RunManifest, read: bool = True) -> dict[str, str]:
        """Artifact -> why its file is not its content, for every artifact of `manifest` that the store cannot give:
        the message of a file that is missing or (with `read`: each file read and checked against its hash) does
        not match. Not those absent by choice (`absent_by_choice`)."""
        out: dict[str, str] = {}
        absent = self.absent_by_choice(manifest)
        for name, record in manifest.artifacts.items():
            path = self.blobs.path(record.ref)
            if name in absent:
                continue
            if not path.exists() and not self.blobs.unwritten(record.ref):
                out[name] = f"run {manifest.label!r} artifact {name!r}: file {path} is missing from the store"
            elif read:
                try:
                    self.blobs.get(record.ref, what=f"run {manifest.label!r} artifact {name!r}")
                except UserError as exc:
                    out[name] = str(exc)
        return out

    def blob_files(self) -> list[Path]:
        return sorted(p for p in self.blobs.root.glob("*/*") if p.is_file()) if self.blobs.root.exists() else []
