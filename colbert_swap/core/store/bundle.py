"""Bundles: one zip file that carries runs to another store (capture on a GPU box, compare on a laptop).

    export_bundle(store, ["2.1.0", "2.1.0+drill"], Path("2.1.0.colbert-swap.zip"))     # there
    import_bundle(Store("outputs"), Path("2.1.0.colbert-swap.zip"))                    # here

The zip (FORMAT, VERSION; ZIP64 where needed):

    bundle.json                 what it holds: its runs (label, origin, complete, the artifacts whose bytes it
                                carries and those it leaves out), every member's size and sha256 (blobs: their
                                content hash too), when and where it was made (env/provenance.environment())
    runs/<label>/manifest.json  as stored, byte for byte (it carries its own digest)
    runs/<label>/...            every other file of the run's folder (colbert-ai's index/, the log); not lock or
                                temp files (names starting with '.'), nor the imported.json of an earlier import
    blobs/<xx>/<hash>.<ext>     every blob the runs point at (artifacts and generator states), each once

An import checks everything before it writes anything: every member against its sha256, every blob against its
content hash (loaded as the store loads it: safetensors or JSON, never pickle), every manifest against its
digest and its folder's name, and that every blob a manifest points at is in the bundle or listed as left out; a
failure is one UserError naming the member, and the store is unchanged. It then writes under a journal
(JOURNAL in the store's root, locked while the import runs, listing every file and folder it is about to create):
an import that fails or is interrupted is rolled back by itself, and one that was killed by the next import, or
by `recover_interrupted_import` (task=verify, task=gc). A run imported without some artifacts' bytes records them
in runs/<label>/imported.json (`Store.left_out`): not in this store by choice.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import zipfile
import zlib
from collections import Counter
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Optional

from colbert_swap.core.console import console
from colbert_swap.core.store import IMPORTED, RunManifest, Store, blob_refs, check_label
from colbert_swap.core.store.blobs import BlobRef, atomic_write, json_hash, tensor_hash
from colbert_swap.core.store.manifest import digest
from colbert_swap.env.provenance import environment
from colbert_swap.errors import UserError

FORMAT, VERSION = "colbert_swap-bundle", 1
INDEX = "bundle.json"
JOURNAL = ".import.journal"
STAGING = ".import."  # runs/.import.<label>: a run's folder being imported, renamed to runs/<label> once whole
# A member is deflated (level 1) when its first MiB deflates to under 90%, else stored. Measured on a capture of
# MiniLM over 1,000 passages (143 MB; 2 CPU cores): float tensors, 95% of the bytes, deflate only to 93% at 37 MB/s,
# integer tensors and JSON to 2-50% at ~100 MB/s, residuals (uint8) not at all. Everything deflated: 130 MB in
# 4.3 s; everything stored: 143 MB in 0.8 s; this rule: 133 MB in 1.2 s (deflating floats costs more time than
# their 7% saves on any network faster than ~4 MB/s).
SAMPLE, SHRINKS = 1 << 20, 0.9
_BLOB = re.compile(r"blobs/([0-9a-f]{2})/(\1[0-9a-f]+)\.(safetensors|json)")
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError, KeyError,
                TypeError)


def _quiet(_message: str) -> None:
    pass


@dataclass(frozen=True)
class BundleSummary:
    path: Path
    size: int  # the zip file's bytes
    runs: list[str]
    blobs: int  # distinct blob files it carries
    blob_bytes: int  # their bytes as stored
    left_out: dict[str, list[str]]  # run -> the artifacts whose bytes it does not carry
    seconds: float


@dataclass(frozen=True)
class ImportSummary:
    bundle: Path
    labels: dict[str, str]  # label in the bundle -> label in this store
    imported: list[str]  # runs written (labels in this store)
    skipped: list[str]  # runs already there with the same manifest (labels in this store)
    blobs_written: int
    blobs_present: int  # already in the store: not written again
    bytes_written: int
    left_out: dict[str, list[str]]  # run (label in this store) -> artifacts whose bytes the bundle left out
    machine: dict  # the exporting machine's environment, as bundle.json records it
    seconds: float


def member(ref: BlobRef) -> str:
    """A blob's member name in a bundle: where it lies under the store's blobs/ folder."""
    ext = "safetensors" if ref.kind == "tensor" else "json"
    return f"blobs/{ref.hash[:2]}/{ref.hash}.{ext}"


def content_hash(data: bytes, kind: str) -> str:
    """The content hash of a blob file's bytes (as the store computes it); ValueError when they cannot be read."""
    try:
        if kind == "tensor":
            from safetensors.torch import load

            return tensor_hash(load(data)["tensor"])
        return json_hash(json.loads(data))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types; any of them: not readable
        raise ValueError(f"{type(exc).__name__}: {exc}") from None


# export ------------------------------------------------------------------------------------------------------------

def export_bundle(store: Store, labels: Iterable[str], out_path: str | os.PathLike, keep: Optional[set[str]] = None,
                  progress: Optional[Callable[[str], None]] = None) -> BundleSummary:
    """Write runs `labels` (the first is the primary one: `import_bundle(rename=)` renames it and the runs derived
    from it) into one zip file at `out_path`, written beside it and renamed into place once whole. `keep`: the
    artifacts whose bytes go (None: all); every manifest still records every artifact's hash, and the generator
    states always go. A blob goes once, whichever runs point at it."""
    with ExitStack() as locks:  # no run changes while it is read (a search extending it)
        for label in sorted(dict.fromkeys(labels)):
            store.load(label)  # the usual error for a run that is not there, before its lock file is made
            locks.enter_context(store.lock(label))
        return _export(store, list(dict.fromkeys(labels)), Path(out_path), keep, progress or _quiet)


def _export(store: Store, labels: list[str], out: Path, keep: Optional[set[str]],
            say: Callable[[str], None]) -> BundleSummary:
    start = time.perf_counter()
    manifests = [store.load(label) for label in labels]
    if not manifests:
        raise UserError("nothing to export: name a run (run=NAME)")
    blobs: dict[str, BlobRef] = {}
    whose: dict[str, tuple[str, str]] = {}  # blob hash -> the run and what of it points at it, for messages
    for manifest in manifests:
        absent = store.absent_by_choice(manifest)  # hash only, or imported without their bytes: none to pass on
        for name, ref in blob_refs(manifest):
            if name is None or ((keep is None or name in keep) and name not in absent):
                blobs[ref.hash] = ref
                whose.setdefault(ref.hash, (manifest.label, f"artifact {name!r}" if name else "a generator state"))
    left = {m.label: sorted(n for n, r in m.artifacts.items() if r.ref.hash not in blobs) for m in manifests}
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    members: dict[str, dict] = {}
    runs = []
    blob_bytes = 0
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
            for manifest in manifests:
                folder = store.run_dir(manifest.label)
                say(f"run {manifest.label!r}: its manifest and folder")
                for path in _run_files(folder):
                    name = f"runs/{manifest.label}/{path.relative_to(folder).as_posix()}"
                    members[name] = _add(zf, name, path.read_bytes())
                written = json.loads((folder / "manifest.json").read_bytes()).get("digest")
                runs.append({"label": manifest.label, "origin": manifest.origin.kind, "complete": manifest.complete,
                             "digest": written, "included": sorted(set(manifest.artifacts) - set(left[manifest.label])),
                             "left_out": left[manifest.label]})
            say(f"{len(blobs):,} blob files")
            for ref in blobs.values():
                path = store.blobs.path(ref)
                label, what = whose[ref.hash]
                what = f"run {label!r} {what}: file {path}"
                try:
                    data = path.read_bytes()
                    ok = content_hash(data, ref.kind) == ref.hash
                except (OSError, ValueError) as exc:
                    raise UserError(f"{what} cannot be read ({exc}): `python -m colbert_swap task=repair run={label}` "
                                    "computes it again; then export again") from None
                if not ok:
                    raise UserError(f"{what} does not match its content hash (the store is damaged): "
                                    f"`python -m colbert_swap task=repair run={label}` computes it again; then export "
                                    "again")
                members[member(ref)] = {**_add(zf, member(ref), data), "hash": ref.hash}
                blob_bytes += len(data)
            index = {"format": FORMAT, "version": VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                     "colbert_swap": _version(), "machine": environment(), "store": str(store.root.resolve()),
                     "primary": manifests[0].label, "runs": runs, "members": members}
            zf.writestr(INDEX, json.dumps(index, indent=1, default=str) + "\n", zipfile.ZIP_DEFLATED)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's file is the owner's alone; a bundle is made to be shared
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return BundleSummary(out, out.stat().st_size, [m.label for m in manifests], len(blobs), blob_bytes,
                         {k: v for k, v in left.items() if v}, time.perf_counter() - start)


def _run_files(folder: Path) -> list[Path]:
    """A run folder's files that travel: all but lock and temp files (a part starting with '.') and IMPORTED."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).as_posix() != IMPORTED
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _add(zf: zipfile.ZipFile, name: str, data: bytes) -> dict:
    """Member `name`: deflated when a sample of it shrinks (SHRINKS), else stored; its size and sha256."""
    sample = data[:SAMPLE]
    shrinks = bool(sample) and len(zlib.compress(sample, 1)) < SHRINKS * len(sample)
    zf.writestr(name, data, zipfile.ZIP_DEFLATED if shrinks else zipfile.ZIP_STORED, 1 if shrinks else None)
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("colbert-swap")
    except metadata.PackageNotFoundError:
        return "unknown"


# import: check ------------------------------------------------------------------------------------------------------

@dataclass
class _Run:
    label: str  # in the bundle
    manifest: RunManifest
    data: bytes  # manifest.json as in the bundle
    digest: str
    files: list[str]  # its members (runs/<label>/...)
    left_out: list[str]


@dataclass
class _Bundle:
    path: Path
    index: dict
    runs: dict[str, _Run]  # by label in the bundle
    blobs: dict[str, str]  # member -> blob hash
    sha256: str  # of the whole file


def _open(path: Path) -> zipfile.ZipFile:
    if not path.is_file():
        raise UserError(f"bundle {path} is not a file: name the .zip that task=export wrote (bundle=FILE)")
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UserError(f"{path} is not a readable zip file ({exc}): a truncated or partial copy? Copy it again "
                        "from the machine that exported it") from None


def _read(zf: zipfile.ZipFile, path: Path, name: str, info: dict) -> bytes:
    """Member `name`'s bytes, checked against its size and sha256 in bundle.json."""
    try:
        if zf.getinfo(name).file_size != info["size"]:
            raise ValueError(f"{zf.getinfo(name).file_size} bytes, bundle.json says {info['size']}")
        data = zf.read(name)
    except _READ_ERRORS as exc:
        raise UserError(f"{path}: member {name} cannot be read ({exc}): the bundle is damaged; copy or export it "
                        "again") from None
    if hashlib.sha256(data).hexdigest() != info["sha256"]:
        raise UserError(f"{path}: member {name} does not match its sha256 in bundle.json: the bundle is damaged; "
                        "copy or export it again")
    return data


def _check(zf: zipfile.ZipFile, path: Path, say: Callable[[str], None]) -> _Bundle:
    """Everything a bundle holds, checked (see the module's doc); nothing is written."""
    try:
        index = json.loads(zf.read(INDEX))
    except KeyError:
        raise UserError(f"{path} is not a colbert_swap bundle (it has no {INDEX}): task=export writes them") from None
    except _READ_ERRORS as exc:
        raise UserError(f"{path}: {INDEX} cannot be read ({exc}): the bundle is damaged; copy or export it again") \
            from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise UserError(f"{path} is not a colbert_swap bundle ({INDEX} names no format {FORMAT!r}): task=export "
                        "writes them")
    if index.get("version") != VERSION:
        raise UserError(f"{path} is a bundle of version {index.get('version')!r}, and this colbert_swap reads version "
                        f"{VERSION}: import it with the colbert_swap version that wrote it "
                        f"({index.get('colbert_swap', '?')})")
    members, entries = index.get("members"), index.get("runs")
    if not isinstance(members, dict) or not all(isinstance(i, dict) for i in members.values()) \
            or not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise UserError(f"{path}: {INDEX} lists no members or no runs: the bundle is damaged; export it again")
    names = Counter(zf.namelist())
    extra = sorted(set(names) - set(members) - {INDEX}) or sorted(n for n, count in names.items() if count > 1)
    absent = sorted(set(members) - set(names))
    if extra or absent:
        which, why = (extra[0], "is not listed in bundle.json (or twice in the zip)") if extra else \
            (absent[0], "is listed in bundle.json but not in the zip")
        raise UserError(f"{path}: member {which} {why}: the bundle was altered; export it again")
    blobs, files = {}, {}
    say(f"checking {len(members):,} members of {path.name}")
    for name, info in members.items():
        match = _BLOB.fullmatch(name)
        parts = name.split("/")
        if match:
            kind = "tensor" if match.group(3) == "safetensors" else "json"
            data = _read(zf, path, name, info)
            try:
                actual = content_hash(data, kind)
            except ValueError as exc:
                raise UserError(f"{path}: member {name} is not a readable {kind} blob ({exc}); export it again") \
                    from None
            if actual != match.group(2) or info.get("hash") != actual:
                raise UserError(f"{path}: member {name} does not match its content hash (found {actual}): its bytes "
                                "were changed; export it again")
            blobs[name] = actual
        elif len(parts) >= 3 and parts[0] == "runs" and all(p and not p.startswith(".") for p in parts[2:]) \
                and _label_ok(parts[1]):
            files.setdefault(parts[1], []).append(name)
        else:
            raise UserError(f"{path}: member {name} is neither a run's file nor a blob: the bundle was altered; "
                            "export it again")
    runs = {}
    for entry in entries:
        label = str(entry.get("label"))
        name = f"runs/{label}/manifest.json"
        if name not in members or label in runs:
            raise UserError(f"{path}: run {label!r} has no member {name} (or is listed twice): the bundle is "
                            "damaged; export it again")
        data = _read(zf, path, name, members[name])
        try:
            content = json.loads(data)
            written = content.pop("digest", None)
            if written is None or written != digest(content):
                raise ValueError("its content does not match its digest")
            manifest = RunManifest.from_json(content)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UserError(f"{path}: member {name} is not a manifest colbert_swap wrote ({exc}); export it again") \
                from None
        if manifest.label != label:
            raise UserError(f"{path}: member {name} names run {manifest.label!r}; the bundle was altered")
        left = [str(n) for n in entry.get("left_out") or []]
        for artifact, ref in blob_refs(manifest):
            if member(ref) not in blobs and artifact not in left:
                what = f"artifact {artifact!r}" if artifact else "a generator state"
                raise UserError(f"{path}: run {label!r}: {what} points at {member(ref)}, which the bundle neither "
                                "holds nor lists as left out; export it again")
        runs[label] = _Run(label, manifest, data, written, files.pop(label), left)
    if files:
        raise UserError(f"{path}: member {files[next(iter(files))][0]} belongs to no run of {INDEX}; the bundle was "
                        "altered")
    return _Bundle(path, index, runs, blobs, _file_sha256(path))


def _label_ok(label: str) -> bool:
    try:
        check_label(label)
        return True
    except UserError:
        return False


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


# import: labels -----------------------------------------------------------------------------------------------------

def renamed(labels: Iterable[str], primary: str, rename: Optional[str]) -> dict[str, str]:
    """Label in the bundle -> label here. `rename` renames the bundle's only run, or its primary run and the runs
    derived from it (labels starting with `PRIMARY+` or `PRIMARY.search-`: `A+drill` -> `NEW+drill`); the others
    keep theirs.

    >>> renamed(["a", "a+drill", "a.search-q", "b"], "a", "gpu")
    {'a': 'gpu', 'a+drill': 'gpu+drill', 'a.search-q': 'gpu.search-q', 'b': 'b'}
    """
    labels = list(labels)
    if rename is None:
        return {label: label for label in labels}
    check_label(rename)
    if len(labels) == 1:
        return {labels[0]: rename}
    derived = (primary + "+", primary + ".search-")
    return {label: rename if label == primary else rename + label[len(primary):] if label.startswith(derived)
            else label for label in labels}


def _stored_digest(store: Store, label: str) -> Optional[str]:
    """The digest of run `label`'s manifest here, "" when it cannot be read, None when there is no such run."""
    folder = store.run_dir(check_label(label))
    if folder.exists() and not (folder / "manifest.json").exists():
        raise UserError(f"folder {folder} holds no manifest (a run that failed before its first stage): "
                        f"`python -m colbert_swap task=rm run={label}` removes it, or as=OTHER imports under another "
                        "name")
    return _digest_at(folder)


def _digest_at(folder: Path) -> Optional[str]:
    """The digest written in `folder`'s manifest.json, "" when it cannot be read, None when there is none."""
    try:
        return str(json.loads((folder / "manifest.json").read_bytes()).get("digest") or "")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, AttributeError):
        return ""


def _manifest_bytes(run: _Run, names: dict[str, str]) -> tuple[bytes, str, Optional[RunManifest]]:
    """The manifest as it is written here (the bundle's bytes; renamed: re-saved with its new label, and the runs
    its origin names renamed as they are: `gpu+drill` is the drill of `gpu`), its digest, and the manifest to save
    when renamed."""
    label = names[run.label]
    if label == run.label:
        return run.data, run.digest, None
    manifest = RunManifest.from_json(json.loads(run.data))
    manifest.label = label
    origin = manifest.origin
    if dataclasses.is_dataclass(origin):
        manifest.origin = dataclasses.replace(origin, **{
            f.name: names[getattr(origin, f.name)] for f in dataclasses.fields(origin)
            if isinstance(getattr(origin, f.name), str) and getattr(origin, f.name) in names})
    return b"", digest(manifest.to_json()), manifest


def _clashes(store: Store, plan: dict[str, tuple[str, str]]) -> list[str]:
    """The labels of `plan` (bundle label -> (label here, digest)) already here with the same manifest; a label here
    with another manifest is refused."""
    same = []
    for theirs, (label, written) in plan.items():
        here = _stored_digest(store, label)
        if here is None:
            continue
        if here != written:
            raise UserError(f"run {label!r} is already in the store {store.root} with other content: as=OTHER imports "
                            f"the bundle's run {theirs!r} under another name")
        same.append(theirs)
    return same


# import: write ------------------------------------------------------------------------------------------------------

def import_bundle(store: Store, path: str | os.PathLike, rename: Optional[str] = None,
                  progress: Optional[Callable[[str], None]] = None) -> ImportSummary:
    """Bring the runs of bundle `path` into `store` (see the module's doc); `rename`: see `renamed`. A run already
    here with the same manifest is skipped; one here with another is refused before anything is written."""
    say = progress or _quiet
    start = time.perf_counter()
    path = Path(path)
    with _open(path) as zf:
        bundle = _check(zf, path, say)
        names = renamed(bundle.runs, str(bundle.index.get("primary") or next(iter(bundle.runs))), rename)
        plan: dict[str, tuple[str, str]] = {}
        saved: dict[str, tuple[bytes, Optional[RunManifest]]] = {}
        for theirs, run in bundle.runs.items():
            data, written, manifest = _manifest_bytes(run, names)
            plan[theirs], saved[theirs] = (names[theirs], written), (data, manifest)
        journal = _Journal(store)
        journal.take(wait=True)  # one import at a time; one that was killed is rolled back first
        entries: dict = {}
        written = present = nbytes = 0
        try:
            skipped = _clashes(store, plan)  # every label checked before anything is written
            todo = [r for r in bundle.runs if r not in skipped]
            wanted = {member(ref): ref for r in todo for _, ref in blob_refs(bundle.runs[r].manifest)
                      if member(ref) in bundle.blobs}
            with ExitStack() as locks:
                if todo:
                    planned = _entries(store, [plan[r] for r in todo], [store.blobs.path(r) for r in wanted.values()])
                    journal.write(planned)  # on disk before anything it names is created
                    entries = planned
                    for label in sorted(plan[r][0] for r in todo):
                        locks.enter_context(store.lock(label))
                    if _clashes(store, {r: plan[r] for r in todo}):
                        raise UserError("a run of the bundle appeared in the store while it was imported: import "
                                        "it again")
                say(f"writing {len(wanted):,} blob files")
                for name, ref in wanted.items():
                    dest = store.blobs.path(ref)
                    if dest.exists():
                        present += 1
                        continue
                    data = _read(zf, path, name, bundle.index["members"][name])
                    atomic_write(dest, data)
                    written, nbytes = written + 1, nbytes + len(data)
                for theirs in todo:
                    nbytes += _write_run(store, zf, bundle, bundle.runs[theirs], plan[theirs][0], *saved[theirs])
        except BaseException:
            _roll_back(store, entries)
            journal.release()
            raise
        journal.release()
    return ImportSummary(path, names, [plan[r][0] for r in todo], [plan[r][0] for r in skipped], written, present,
                         nbytes, {plan[r][0]: bundle.runs[r].left_out for r in bundle.runs if bundle.runs[r].left_out},
                         dict(bundle.index.get("machine") or {}), time.perf_counter() - start)


def _entries(store: Store, runs: list[tuple[str, str]], blobs: list[Path]) -> dict:
    """The journal's entries: what an import of `runs` ((label, digest)) and `blobs` is about to create (paths
    relative to the store's root), so that rolling back removes exactly that."""
    root = store.root
    dirs: list[Path] = []
    for folder in [root / "runs", store.blobs.root, *(p.parent for p in blobs)]:
        if not folder.exists() and folder not in dirs:
            dirs.append(folder)
    rel = lambda p: p.relative_to(root).as_posix()  # noqa: E731
    return {"runs": {label: written for label, written in runs},
            "staging": [f"runs/{STAGING}{label}" for label, _ in runs],
            "locks": [rel(p) for label, _ in runs if not (p := store._lock_path(label)).exists()],
            "blobs": sorted({rel(p) for p in blobs if not p.exists()}), "dirs": [rel(d) for d in dirs]}


def _write_run(store: Store, zf: zipfile.ZipFile, bundle: _Bundle, run: _Run, label: str, data: bytes,
               manifest: Optional[RunManifest]) -> int:
    """Write run `run` as `label`: its files into runs/.import.<label>, renamed to runs/<label> once whole."""
    staging = store.root / "runs" / f"{STAGING}{label}"
    shutil.rmtree(staging, ignore_errors=True)
    nbytes = 0
    for name in run.files:
        dest = staging / name.split("/", 2)[2]
        dest.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith("/manifest.json") and name.count("/") == 2:
            if manifest is not None:  # renamed: its label changed, its digest is computed again
                manifest.save(dest)
                nbytes += dest.stat().st_size
                continue
            content = data
        else:
            content = _read(zf, bundle.path, name, bundle.index["members"][name])
        dest.write_bytes(content)
        nbytes += len(content)
    info = {"bundle": bundle.path.name, "sha256": bundle.sha256, "imported": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "label_in_bundle": run.label, "exported": bundle.index.get("created"),
            "colbert_swap": bundle.index.get("colbert_swap"), "machine": bundle.index.get("machine"),
            "left_out": run.left_out}
    (staging / IMPORTED).write_text(json.dumps(info, indent=1, default=str) + "\n")
    _place(staging, store.run_dir(label))
    return nbytes


def _place(staging: Path, folder: Path) -> None:
    """A run's folder appears whole (a separate function: the tests stop an import here)."""
    os.replace(staging, folder)


# the journal --------------------------------------------------------------------------------------------------------

class _Journal:
    """JOURNAL in the store's root, locked (flock) while an import writes: the entries it is about to create. One
    found with entries and no holder was left by an import that was killed: `take` rolls it back first (`removed`:
    the files it removed; None when there was nothing to roll back)."""

    def __init__(self, store: Store):
        self.store, self.path = store, store.root / JOURNAL
        self.file: Optional[IO[str]] = None
        self.removed: Optional[int] = None

    def take(self, wait: bool, create: bool = True) -> bool:
        """Hold the journal (False: there is none and `create` is false); BlockingIOError when another process holds
        it and `wait` is false."""
        while True:
            if not create and not self.path.exists():
                return False
            self.store.root.mkdir(parents=True, exist_ok=True)
            f = open(self.path, "a+")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait:
                    f.close()
                    raise
                print(f"waiting: another import into the store {self.store.root} (or task=gc) is running "
                      f"(journal {self.path})", file=console(), flush=True)
                fcntl.flock(f, fcntl.LOCK_EX)
            try:  # the file this process locked is still the journal (its last holder deletes it, then lets go)
                if os.fstat(f.fileno()).st_ino == os.stat(self.path).st_ino:
                    break
            except FileNotFoundError:
                pass
            f.close()
        self.file = f
        f.seek(0)
        text = f.read()
        if text.strip():
            try:
                entries = json.loads(text)
            except ValueError:  # killed while writing it: nothing was written after it
                entries = {}
            self.removed = _roll_back(self.store, entries if isinstance(entries, dict) else {})
            self.write({})
        return True

    def write(self, entries: dict) -> None:
        """Record `entries` (on disk before the import writes any of them)."""
        assert self.file is not None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(json.dumps(entries) if entries else "")
        self.file.flush()
        os.fsync(self.file.fileno())

    def release(self) -> None:
        """Delete the journal, then let go of it."""
        self.path.unlink(missing_ok=True)
        if self.file is not None:
            self.file.close()
            self.file = None


def recover_interrupted_import(store: Store) -> Optional[int]:
    """Roll back an import that was killed (a journal with entries and no holder): the files removed, None when
    there was none to roll back (or an import is running now)."""
    journal = _Journal(store)
    try:
        if not journal.take(wait=False, create=False):
            return None
    except BlockingIOError:
        return None
    journal.release()
    return journal.removed


@contextmanager
def imports_paused(store: Store) -> Iterator[Optional[int]]:
    """No import writes into the store meanwhile (this process holds the journal; UserError when an import is
    running now), an interrupted one rolled back first: yields the files that removed (None: nothing to roll back).
    task=gc: an import's blobs are on disk before its manifest names them."""
    journal = _Journal(store)
    if not store.root.exists():
        yield None
        return
    try:
        journal.take(wait=False)
    except BlockingIOError:
        raise UserError(f"an import into the store {store.root} is running (it holds {journal.path}): its files are "
                        "not in a manifest yet; run this once it has ended") from None
    try:
        yield journal.removed
    finally:
        journal.release()


def _roll_back(store: Store, entries: dict) -> int:
    """Remove what an import recorded in its journal it would create (what it did create of it): the files removed.
    A run folder goes only if it holds the manifest the import wrote, a blob only if no run left points at it (one
    written since by a capture of the same bytes stays)."""
    root, removed = store.root, 0

    def inside(rel: Any) -> Optional[Path]:
        path = Path(str(rel))
        return None if path.is_absolute() or ".." in path.parts else root / path

    def remove_tree(folder: Optional[Path]) -> int:
        if folder is None or not folder.is_dir():
            return 0
        count = sum(1 for p in folder.rglob("*") if not p.is_dir())
        shutil.rmtree(folder, ignore_errors=True)
        return count

    for label, written in dict(entries.get("runs") or {}).items():
        folder = inside(f"runs/{label}")
        if folder is not None and _label_ok(str(label)) and _digest_at(folder) == written:
            removed += remove_tree(folder)
    for rel in entries.get("staging") or []:
        removed += remove_tree(inside(rel))
    kept = set()  # what runs point at (not the artifacts a run was imported without: no claim on a file)
    for label in store.runs():
        try:
            absent = store.left_out(label)
            kept |= {ref.hash for name, ref in blob_refs(store.load(label)) if name not in absent}
        except UserError:
            continue
    for rel in entries.get("blobs") or []:
        path = inside(rel)
        if path is None:
            continue
        for temp in path.parent.glob(f".{path.name}.*") if path.parent.is_dir() else ():
            temp.unlink(missing_ok=True)
            removed += 1
        if path.exists() and path.name.split(".")[0] not in kept:
            path.unlink()
            removed += 1
    for rel in entries.get("locks") or []:
        path = inside(rel)
        if path is not None and path.exists():
            path.unlink()
            removed += 1
    for rel in reversed(entries.get("dirs") or []):
        path = inside(rel)
        if path is not None:
            try:
                path.rmdir()
            except OSError:
                pass
    return removed
