"""The content-addressed store: blob round trips, dedup, damage detection, run labels, manifests."""

from __future__ import annotations

import json
import re

import pytest
import torch

from colbert_swap.errors import UserError
from colbert_swap.core.store import ArtifactRecord, BlobRef, RunManifest, Store, check_label
from colbert_swap.core.store.blobs import BlobStore


def blob_files(root):
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


def _tensors():
    g = torch.Generator().manual_seed(0)
    return {
        "float32": torch.randn(3, 4, generator=g),
        "float16": torch.randn(5, 2, generator=g).half(),
        "bfloat16": torch.randn(2, 3, generator=g).bfloat16(),
        "int32": torch.arange(-5, 7, dtype=torch.int32).reshape(3, 4),
        "uint8": torch.tensor([0, 1, 127, 128, 255], dtype=torch.uint8),
        "bool": torch.tensor([[True, False], [False, True]]),
        "0-dim": torch.tensor(3.25),
        "empty": torch.empty(0, 4, dtype=torch.float16),
    }


@pytest.mark.parametrize("key", list(_tensors()))
def test_tensor_round_trip(tmp_path, key):
    t = _tensors()[key]
    store = BlobStore(tmp_path)
    ref = store.put(t)
    assert ref.kind == "tensor"
    assert ref.dtype == str(t.dtype).removeprefix("torch.")
    assert ref.shape == tuple(t.shape)
    assert ref.device == "cpu"
    assert store.path(ref).exists() and store.path(ref).suffix == ".safetensors"
    back = store.get(ref)
    assert back.dtype == t.dtype
    assert back.shape == t.shape
    assert torch.equal(back, t)


@pytest.mark.parametrize("value", [7, -3, 0.1, 1e-300, [1, 2.5, "x", None], {"b": [1, {"c": True}], "a": 0.5}, {}])
def test_json_round_trip(tmp_path, value):
    store = BlobStore(tmp_path)
    ref = store.put(value)
    assert ref.kind == "json" and ref.dtype is None and ref.shape is None
    assert store.path(ref).suffix == ".json"
    back = store.get(ref)
    assert back == value and type(back) is type(value)


def test_json_int_and_float_differ(tmp_path):
    store = BlobStore(tmp_path)
    assert store.put(1).hash != store.put(1.0).hash
    assert store.get(store.put(1.0)) == 1.0 and isinstance(store.get(store.put(1.0)), float)


def test_identical_tensors_are_stored_once(tmp_path):
    store = BlobStore(tmp_path)
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    refs = [store.put(t), store.put(t.clone()), store.put(t.T.contiguous().T)]  # last one non-contiguous
    assert refs[0] == refs[1] == refs[2]
    assert len(blob_files(tmp_path)) == 1


def test_identical_json_is_stored_once(tmp_path):
    store = BlobStore(tmp_path)
    a = store.put({"x": 1, "y": [1, 2]})
    b = store.put({"y": [1, 2], "x": 1})  # key order does not matter
    assert a == b
    assert len(blob_files(tmp_path)) == 1


def test_same_bytes_other_dtype_or_shape_get_another_hash(tmp_path):
    store = BlobStore(tmp_path)
    base = torch.arange(4, dtype=torch.int32)
    as_float = base.view(torch.float32)
    as_bytes = base.view(torch.uint8)
    as_matrix = base.reshape(2, 2)
    refs = [store.put(t) for t in (base, as_float, as_bytes, as_matrix)]
    assert len({r.hash for r in refs}) == 4
    assert len(blob_files(tmp_path)) == 4
    for t, r in zip((base, as_float, as_bytes, as_matrix), refs):
        back = store.get(r)
        assert back.dtype == t.dtype and back.shape == t.shape and torch.equal(back, t)
    # an empty tensor of another shape or dtype is also another blob
    empties = [torch.empty(0), torch.empty(0, 3), torch.empty(0, dtype=torch.int32)]
    assert len({store.put(t).hash for t in empties}) == 3


def _flip(path, pos):
    data = bytearray(path.read_bytes())
    data[pos] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("where", ["data", "header_length", "header"])
def test_corrupted_tensor_blob_raises_user_error(tmp_path, where):
    store = BlobStore(tmp_path)
    ref = store.put(torch.randn(64, 8, generator=torch.Generator().manual_seed(1)))
    path = store.path(ref)
    size = path.stat().st_size
    _flip(path, {"data": size - 5, "header_length": 3, "header": 20}[where])
    with pytest.raises(UserError, match=re.escape(str(path))):
        store.get(ref, what="artifact x")


@pytest.mark.parametrize("keep", [0, 5, 0.5, -1])
def test_truncated_tensor_blob_raises_user_error(tmp_path, keep):
    store = BlobStore(tmp_path)
    ref = store.put(torch.randn(64, 8, generator=torch.Generator().manual_seed(2)))
    path = store.path(ref)
    data = path.read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else (len(data) + keep if keep < 0 else keep)
    path.write_bytes(data[:cut])
    with pytest.raises(UserError, match=re.escape(str(path))) as info:
        store.get(ref)
    assert "damaged" in str(info.value)


def test_corrupted_json_blob_raises_user_error(tmp_path):
    store = BlobStore(tmp_path)
    ref = store.put({"alpha": [1, 2, 3]})
    path = store.path(ref)
    path.write_bytes(path.read_bytes().replace(b"1", b"4"))  # still valid JSON, other content
    with pytest.raises(UserError, match=re.escape(str(path))):
        store.get(ref)
    path.write_bytes(b'{"alpha": [1, 2')  # truncated
    with pytest.raises(UserError, match=re.escape(str(path))):
        store.get(ref)
    path.write_bytes(b"\xff\xfe")  # not UTF-8
    with pytest.raises(UserError, match=re.escape(str(path))):
        store.get(ref)


def test_missing_blob_raises_user_error(tmp_path):
    store = BlobStore(tmp_path)
    ref = store.put(torch.ones(3))
    store.path(ref).unlink()
    with pytest.raises(UserError, match="missing"):
        store.get(ref)


@pytest.mark.parametrize("bad", ["a/b", "..", "../x", "", "x/../y", ".hidden", "a\\b", "a b", "x" * 201, None, 3])
def test_check_label_rejects(bad):
    with pytest.raises(UserError):
        check_label(bad)


@pytest.mark.parametrize("good", ["2.1.0", "torch-2.0.1+cu118", "run_1", "a=b,c@d", "X"])
def test_check_label_accepts(good):
    assert check_label(good) == good


def test_store_rejects_bad_label_paths(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(UserError):
        store.run_dir("../escape")
    with pytest.raises(UserError):
        store.load("a/b")


def _manifest(label: str, store: Store | None = None) -> RunManifest:
    refs = {}
    if store is not None:
        refs["embs.0"] = store.blobs.put(torch.arange(6, dtype=torch.float16).reshape(2, 3))
        refs["num_passages"] = store.blobs.put(120)
        refs["avg_residual"] = store.blobs.put(torch.tensor(0.125))
    else:
        refs["embs.0"] = BlobRef(hash="ab" * 16, kind="tensor", dtype="float16", shape=(2, 3), device="cuda")
        refs["num_passages"] = BlobRef(hash="cd" * 16, kind="json")
        refs["avg_residual"] = BlobRef(hash="ef" * 16, kind="tensor", dtype="float32", shape=(), device="cpu")
    return RunManifest(
        label=label, config={"seed": 12345, "index": {"nbits": 2}}, config_hash="0123456789abcdef",
        provenance={"torch": "2.13.0"}, origin={"kind": "replay", "target": "t", "source": "s", "names": ["x"], "injected": ["x"]},
        artifacts={
            "embs.0": ArtifactRecord(ref=refs["embs.0"], stage="embs.0", inputs={"num_passages": "cd" * 16},
                                     seconds=0.5),
            "num_passages": ArtifactRecord(ref=refs["num_passages"], stage="inject:other"),
            "avg_residual": ArtifactRecord(ref=refs["avg_residual"], stage="avg_residual", seconds=1.25),
        },
        rng={"sample_pids": {"python": "11" * 16, "torch": "22" * 16}},
        complete=True,
        created="2024-01-02T03:04:05+0000",
    )


def test_manifest_json_round_trip(tmp_path):
    m = _manifest("run-a")
    text = json.dumps(m.to_json())
    back = RunManifest.from_json(json.loads(text))
    assert back == m
    assert back.artifacts["avg_residual"].ref.shape == ()
    assert back.artifacts["num_passages"].ref.shape is None
    m.save(tmp_path / "m.json")
    assert RunManifest.load(tmp_path / "m.json") == m


def test_store_save_load_and_get(tmp_path):
    store = Store(tmp_path)
    m = _manifest("2.1.0", store)
    store.save(m)
    assert store.has_run("2.1.0") and store.runs() == ["2.1.0"]
    back = store.load("2.1.0")
    assert back == m
    assert store.get(back, "num_passages") == 120
    assert torch.equal(store.get(back, "embs.0"), torch.arange(6, dtype=torch.float16).reshape(2, 3))
    with pytest.raises(UserError, match="no artifact 'codes.0'"):
        store.get(back, "codes.0")


def test_load_missing_run_lists_existing_runs(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(UserError, match=r"runs there: none"):
        store.load("nope")
    store.save(_manifest("beta"))
    store.save(_manifest("alpha"))
    with pytest.raises(UserError) as info:
        store.load("gamma")
    msg = str(info.value)
    assert "'gamma'" in msg and "alpha, beta" in msg


def test_load_unreadable_manifest_raises_user_error(tmp_path):
    store = Store(tmp_path)
    path = store.manifest_path("broken")
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(UserError, match="cannot be read"):
        store.load("broken")
    path.write_text('{"label": "broken"}')
    with pytest.raises(UserError, match="cannot be read"):
        store.load("broken")


def _edit_artifact(d):
    d["artifacts"]["embs.0"]["hash"] = d["artifacts"]["num_passages"]["hash"]  # another artifact's blob


def _edit_config(d):
    d["config"]["index"]["nbits"] = 4


def _drop_digest(d):
    del d["digest"]


@pytest.mark.parametrize("edit, error", [(_edit_artifact, "edited after the run wrote it"),
                                         (_edit_config, "edited after the run wrote it"),
                                         (_drop_digest, "no digest")])
def test_a_hand_edited_manifest_is_refused(tmp_path, edit, error):
    store = Store(tmp_path)
    store.save(_manifest("run-a", store))
    path = store.manifest_path("run-a")
    content = json.loads(path.read_text())
    edit(content)
    path.write_text(json.dumps(content, indent=1))
    with pytest.raises(UserError, match=rf"run 'run-a': manifest .* cannot be read \(.*{error}"):
        store.load("run-a")


def test_a_reformatted_manifest_still_loads(tmp_path):
    store = Store(tmp_path)
    store.save(_manifest("run-a", store))
    path = store.manifest_path("run-a")
    path.write_text(json.dumps(dict(reversed(list(json.loads(path.read_text()).items())))))  # other order, no indent
    assert store.load("run-a") == _manifest("run-a", store)


def test_a_manifest_copied_from_another_run_is_refused(tmp_path):
    store = Store(tmp_path)
    store.save(_manifest("run-a", store))
    other = store.manifest_path("run-b")
    other.parent.mkdir(parents=True)
    other.write_bytes(store.manifest_path("run-a").read_bytes())
    with pytest.raises(UserError, match="names another run"):
        store.load("run-b")


def test_a_large_blob_read_again_unchanged_is_not_hashed_again_and_a_changed_one_is(tmp_path, monkeypatch):
    import torch

    from colbert_swap.errors import UserError
    from colbert_swap.core.store import blobs

    monkeypatch.setattr(blobs, "VERIFY_ONCE", 1)  # every blob counts as large here
    monkeypatch.setattr(blobs, "_VERIFIED", {})
    store = blobs.BlobStore(tmp_path)
    ref = store.put(torch.arange(1000, dtype=torch.float32))
    hashed = []
    monkeypatch.setattr(blobs, "tensor_hash", lambda t: hashed.append(1) or "x")
    assert torch.equal(store.get(ref), torch.arange(1000, dtype=torch.float32)) and not hashed  # written here
    damaged = torch.arange(1000, dtype=torch.float32)
    damaged[7] = -1
    from safetensors.torch import save_file

    save_file({"tensor": damaged}, str(tmp_path / "other.safetensors"))
    (tmp_path / "other.safetensors").replace(store.path(ref))  # another file under the same name
    with pytest.raises(UserError, match="does not match its content hash"):
        store.get(ref)
    assert hashed


def _held_writes(monkeypatch):
    """The writer thread's writes wait for the event (a slow disk), or fail with ENOSPC once `fail` is set."""
    import errno
    import threading

    from colbert_swap.core.store import blobs

    gate, fail, real = threading.Event(), threading.Event(), blobs.save_file

    def slow(tensors, path):
        assert gate.wait(30)
        if fail.is_set():
            raise OSError(errno.ENOSPC, "No space left on device")
        real(tensors, path)

    monkeypatch.setattr(blobs, "save_file", slow)
    return gate, fail


def _writer(tmp_path, label="r"):
    from colbert_swap.core.store.origin import Capture
    from colbert_swap.core.store.run import RunWriter

    store = Store(tmp_path)
    manifest = RunManifest(label=label, config={}, config_hash="0" * 16, provenance={}, origin=Capture())
    return store, RunWriter(store, manifest)


def test_a_file_written_behind_is_read_back_once_written_and_a_manifest_saved_meanwhile_leaves_it_out(tmp_path, monkeypatch):
    gate, _ = _held_writes(monkeypatch)
    store, run = _writer(tmp_path)
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    run.put("small", 7, stage="small")
    record = run.put("t", t, stage="t", inputs=["small"])
    assert store.blobs.unwritten(record.ref) and not store.blobs.path(record.ref).exists()
    run.save()  # the file is not on disk: a crash now must not leave a manifest that names it
    assert set(store.load("r").artifacts) == {"small"}
    assert set(run.manifest.artifacts) == {"small", "t"}  # this process knows it
    gate.set()
    assert torch.equal(store.get(run.manifest, "t"), t)  # waits for its write
    assert not store.blobs.unwritten(record.ref)
    run.finish()
    saved = store.load("r")
    assert set(saved.artifacts) == {"small", "t"} and saved.complete


def test_a_failed_write_behind_stops_the_run_with_the_reason_and_the_manifest_names_only_files_on_disk(tmp_path, monkeypatch):
    gate, fail = _held_writes(monkeypatch)
    store, run = _writer(tmp_path)
    run.put("a", torch.ones(4), stage="a")
    gate.set()
    run.flush()
    fail.set()
    run.put("b", torch.zeros(4), stage="b", inputs=["a"])
    with pytest.raises(UserError, match="could not write .*No space left on device.*resumes"):
        run.finish()
    saved = store.load("r")
    assert set(saved.artifacts) == {"a"} and not saved.complete
    assert torch.equal(store.get(saved, "a"), torch.ones(4))
    assert not any(p.name.startswith(".") for p in store.blob_files())  # no half-written file left


def test_an_error_in_a_run_still_records_the_files_its_writer_finished(tmp_path, monkeypatch):
    from colbert_swap.core.store.origin import Capture
    from colbert_swap.core.store.run import open_run

    gate, _ = _held_writes(monkeypatch)
    store = Store(tmp_path)
    with pytest.raises(RuntimeError, match="a stage failed"):
        with open_run(store, "r", Capture(), {}, "0" * 16) as run:
            run.put("a", torch.ones(4), stage="a")
            run.save()
            assert "a" not in store.load("r").artifacts
            gate.set()
            raise RuntimeError("a stage failed")
    saved = store.load("r")
    assert set(saved.artifacts) == {"a"} and not saved.complete  # a resume starts after it


def test_writes_behind_wait_for_room_beyond_the_bytes_allowed_in_memory(tmp_path, monkeypatch):
    import threading

    from colbert_swap.core.store import blobs

    monkeypatch.setattr(blobs.BlobStore, "BEHIND_BYTES", 64)
    store = blobs.BlobStore(tmp_path)
    first = store.put(torch.zeros(16), behind=True)  # 64 bytes: fits
    assert store._writing
    waited = threading.Event()
    real = store._settle
    monkeypatch.setattr(store, "_settle", lambda key: (waited.set(), real(key)))
    store.put(torch.ones(16), behind=True)  # 64 more: waits for the first to be written
    assert waited.is_set() and not store.unwritten(first)
    store.flush()
    assert not store._writing


def test_a_writer_waiting_for_a_runs_lock_says_so(tmp_path):
    import threading
    import time

    store, said, held, letting_go = Store(tmp_path), [], threading.Event(), threading.Event()

    def holder():
        with store.lock("busy"):
            held.set()
            time.sleep(0.5)
            letting_go.set()

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait()
    with store.lock("busy", waiting=said.append):
        waited = letting_go.is_set()  # it got the lock only once the other let go
    thread.join()
    assert waited and len(said) == 1 and said[0].startswith("waiting for run 'busy': another process is writing it")
    with store.lock("free", waiting=said.append):
        assert len(said) == 1  # a free lock: nothing said
