"""Content-addressed blobs: tensors as safetensors, everything else as JSON, never pickle.

A blob's address is xxh3-128 over its kind, dtype, shape and bytes, so identical tensors are stored
once and a tensor cannot collide with another of the same bytes but a different dtype or shape.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import xxhash
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from colbert_swap.errors import UserError


@dataclass(frozen=True)
class BlobRef:
    hash: str
    kind: str  # "tensor" | "json"
    dtype: str | None = None  # e.g. "float16"
    shape: tuple[int, ...] | None = None
    device: str | None = None  # where the tensor lived when captured (cpu | cuda)

    def to_json(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape) if self.shape is not None else None
        return d

    @classmethod
    def from_json(cls, d: dict) -> "BlobRef":
        shape = tuple(d["shape"]) if d.get("shape") is not None else None
        return cls(hash=d["hash"], kind=d["kind"], dtype=d.get("dtype"), shape=shape, device=d.get("device"))


def tensor_hash(t: torch.Tensor) -> str:
    t = t.detach().to("cpu").contiguous()
    h = xxhash.xxh3_128()
    h.update(f"tensor|{str(t.dtype).removeprefix('torch.')}|{list(t.shape)}|".encode())
    if t.numel():
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def json_bytes(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def json_hash(value: Any) -> str:
    return xxhash.xxh3_128_hexdigest(b"json|" + json_bytes(value))


def atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _stat_key(path: Path) -> tuple[int, int, int, int]:
    st = path.stat()
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


# Blob files of at least VERIFY_ONCE bytes this process has written, or read and found to match their hash,
# with the file's identity then (device, inode, size, mtime): read again unchanged, such a file is not hashed
# again (a locate at 100,000 passages reads the same embeddings in every round; measured on the H200, hashing
# was 7.5 s of one). A file replaced or rewritten since has another identity and is checked again; smaller
# files (every file of the tests) are checked at every read.
VERIFY_ONCE = 1 << 26
_VERIFIED: dict[str, tuple[int, int, int, int]] = {}


def _remember(path: Path, key: tuple[int, int, int, int]) -> None:
    if key[2] >= VERIFY_ONCE:
        _VERIFIED[str(path)] = key


def _write_tensor(path: Path, cpu: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        save_file({"tensor": cpu}, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _remember(path, _stat_key(path))


class BlobStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._writing: dict[str, tuple[Future, int]] = {}  # file -> its write in flight, the tensor's bytes
        self._failed: dict[str, BaseException] = {}  # file -> why its write failed

    def path(self, ref: BlobRef) -> Path:
        ext = "safetensors" if ref.kind == "tensor" else "json"
        return self.root / ref.hash[:2] / f"{ref.hash}.{ext}"

    def put(self, value: Any, behind: bool = False, write: bool = True) -> BlobRef:
        """Store `value`, return its address. With `behind`, a tensor's file is written by the store's writer
        thread while the caller goes on (the address is known at once; `unwritten` says until when). Without
        `write`, only its address (a capture that keeps the hash alone: store.keep)."""
        if isinstance(value, torch.Tensor):
            cpu = value.detach().to("cpu").contiguous()
            ref = BlobRef(hash=tensor_hash(cpu), kind="tensor", dtype=str(cpu.dtype).removeprefix("torch."),
                          shape=tuple(cpu.shape), device=value.device.type)
            if not write:
                return ref
            path = self.path(ref)
            with self._lock:
                if str(path) in self._writing or path.exists():
                    return ref
                if behind:
                    # not cpu.nbytes: Tensor.nbytes came with torch 2.1 (1.13 and 2.0 have none)
                    nbytes = cpu.numel() * cpu.element_size()
                    self._wait_for_room(nbytes)
                    self._writing[str(path)] = (self._writer().submit(_write_tensor, path, cpu), nbytes)
                    return ref
            _write_tensor(path, cpu)
            self._failed.pop(str(path), None)
            return ref
        ref = BlobRef(hash=json_hash(value), kind="json")
        if write and not self.path(ref).exists():
            atomic_write(self.path(ref), json_bytes(value))
        return ref

    # the writer thread ---------------------------------------------------------------------------
    # A capture's files are written while the next stage computes (writing the embeddings of 100,000
    # passages is gigabytes): one thread, files in the order they were put, at most BEHIND_BYTES of tensors
    # waiting in memory. A file is on disk once its write finished; until then `unwritten` is true, and a run's
    # saved manifest leaves its artifact out (colbert_swap/core/store/run.py), so a crash never leaves a manifest
    # that names a file that is not there.
    BEHIND_BYTES = 1 << 31

    def _writer(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="colbert_swap-blob-writer")
        return self._pool

    def _wait_for_room(self, nbytes: int) -> None:
        """(holding the lock) Until the tensors waiting to be written leave room for `nbytes` more."""
        while self._writing and sum(n for _, n in self._writing.values()) + nbytes > self.BEHIND_BYTES:
            key = next(iter(self._writing))
            self._lock.release()
            try:
                self._settle(key)
            finally:
                self._lock.acquire()

    def _settle(self, key: str) -> None:
        """Wait for the write of file `key` (if one is in flight); a failed write is remembered for `flush`."""
        entry = self._writing.get(key)
        if entry is None:
            return
        try:
            entry[0].result()
            self._failed.pop(key, None)
        except Exception as exc:  # noqa: BLE001 - kept, raised by flush() with the file's name
            self._failed[key] = exc
        with self._lock:
            self._writing.pop(key, None)

    def unwritten(self, ref: BlobRef) -> bool:
        """Its file is not (yet) on disk: its write is in flight, or failed."""
        key = str(self.path(ref))
        entry = self._writing.get(key)
        if entry is not None and entry[0].done():
            self._settle(key)
        return key in self._writing or key in self._failed

    def flush(self) -> None:
        """Wait until every file put is written; raise if one could not be."""
        for key in list(self._writing):
            self._settle(key)
        self.check()

    def check(self) -> None:
        """Raise if a file put could not be written (a full disk): the run stops at its next node."""
        if self._failed:
            key, exc = next(iter(self._failed.items()))
            raise UserError(f"the store could not write {key} ({exc}); {len(self._failed)} file(s) not written. "
                            "The run's manifest leaves them out: run the command again once the store can be "
                            "written, and it resumes from the last stage whose files are there")

    def get(self, ref: BlobRef, what: str = "") -> Any:
        path = self.path(ref)
        self._settle(str(path))  # written by this process's writer thread: read it once it is there
        if not path.exists():
            raise UserError(f"{what or 'blob'}: file {path} is missing from the store")
        try:
            if ref.kind == "tensor":
                known = _VERIFIED.get(str(path))
                value = load_file(str(path))["tensor"]
                stat = _stat_key(path)  # after the read: a file replaced meanwhile does not match
                if known == stat:
                    return value  # this very file was checked by this process
                actual = tensor_hash(value)
            else:
                value = json.loads(path.read_bytes())
                actual = json_hash(value)
        except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
            raise UserError(f"{what or 'blob'}: file {path} cannot be read ({exc}); the store is damaged") from exc
        if actual != ref.hash:
            _VERIFIED.pop(str(path), None)
            raise UserError(f"{what or 'blob'}: file {path} does not match its content hash "
                            f"(expected {ref.hash}, found {actual}); the store is damaged")
        if ref.kind == "tensor":
            _remember(path, stat)
        return value
