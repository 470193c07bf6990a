"""task=verify finds damaged blobs and orphans without changing anything; task=gc removes orphans only."""

from __future__ import annotations

import shutil

import pytest

from colbert_swap.errors import UserError
from colbert_swap.core.store import Store
from colbert_swap.tasks import gc, verify
from colbert_swap.tasks.capture import capture
from tests.conftest import TINY, make_cfg, quiet_progress


def test_verify_and_gc(tmp_path, capsys):
    cfg = make_cfg(f"store.root={tmp_path}", *TINY, "run=keep")
    keep = capture(cfg, progress=quiet_progress)
    capture(make_cfg(f"store.root={tmp_path}", *TINY, "run=drop", "perturb=eager"), progress=quiet_progress)
    store = Store(tmp_path)
    assert verify.run(cfg) == 0 and verify.problems(store)[:2] == ([], [])

    shutil.rmtree(store.run_dir("drop"))  # a deleted run leaves its own blobs behind
    found, orphans, _ = verify.problems(store)
    assert found == [] and orphans
    before = sorted(p.name for p in store.blob_files())
    verify.run(cfg)
    assert sorted(p.name for p in store.blob_files()) == before  # verify changes nothing

    with store.lock("keep"):  # a run being written elsewhere: its newest files may not be in its manifest yet
        with pytest.raises(UserError, match="run 'keep' is being written by another process"):
            gc.run(cfg)
    assert sorted(p.name for p in store.blob_files()) == before
    gc.run(cfg)
    assert verify.problems(store)[:2] == ([], [])
    assert store.get(store.load("keep"), "local_sample_embs").shape[0] > 0  # what a run points at stays

    blob = store.blobs.path(keep.artifacts["centroids"].ref)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    assert verify.run(cfg) == 1
    assert "artifact 'centroids'" in capsys.readouterr().out
