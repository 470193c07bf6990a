"""Bundles without a capture: the index artifact list is write_index's own, and the import journal is one at a time
and never left behind."""

from __future__ import annotations

import fcntl
import inspect
import json
import re

import pytest

from colbert_swap.colbert.index_files import write_index
from colbert_swap.core.store import Store
from colbert_swap.core.store.bundle import JOURNAL, imports_paused, recover_interrupted_import
from colbert_swap.errors import UserError
from colbert_swap.colbert.index_files import INDEX_ARTIFACTS


def test_the_index_artifacts_are_those_write_index_reads():
    source = inspect.getsource(write_index)
    plain = set(re.findall(r'get\("([^"]+)"\)', source))
    chunked = {f"{n}.N" for n in re.findall(r'get\(f"([^"{]+)\.\{chunk\}"\)', source)}
    assert plain and chunked and set(INDEX_ARTIFACTS) == plain | chunked


def test_recovering_a_store_without_a_journal_writes_nothing(tmp_path):
    store = Store(tmp_path / "store")
    assert recover_interrupted_import(store) is None and not store.root.exists()
    with imports_paused(store) as removed:
        assert removed is None
    store.root.mkdir()
    with imports_paused(store) as removed:
        assert removed is None and (store.root / JOURNAL).exists()  # held: no import writes meanwhile
    assert list(store.root.iterdir()) == []


def test_a_journal_held_by_a_running_import_is_left_alone(tmp_path):
    store = Store(tmp_path)
    journal = tmp_path / JOURNAL
    journal.write_text(json.dumps({"blobs": ["blobs/ab/ab12.json"]}))
    (tmp_path / "blobs" / "ab").mkdir(parents=True)
    (tmp_path / "blobs" / "ab" / "ab12.json").write_text("{}")
    with open(journal) as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another import, still running
        assert recover_interrupted_import(store) is None
        with pytest.raises(UserError, match="an import into the store .* is running"):
            with imports_paused(store):
                pass
        assert (tmp_path / "blobs" / "ab" / "ab12.json").exists()
    assert recover_interrupted_import(store) == 1  # its process gone: rolled back
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_a_journal_cut_short_is_dropped(tmp_path):
    (tmp_path / JOURNAL).write_text('{"blobs": ["blobs/a')  # killed while writing it: nothing after it was written
    assert recover_interrupted_import(Store(tmp_path)) == 0 and not (tmp_path / JOURNAL).exists()


def test_a_journal_never_reaches_outside_the_store(tmp_path):
    outside = tmp_path / "outside.json"
    outside.write_text("{}")
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / JOURNAL).write_text(json.dumps({"blobs": ["../outside.json", str(outside)],
                                                         "runs": {"../x": "d"}, "staging": ["/tmp"]}))
    assert recover_interrupted_import(Store(tmp_path / "store")) == 0 and outside.exists()
