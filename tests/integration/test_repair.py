"""task=repair: a lost or damaged blob file is computed again and checked against its recorded hash; what cannot
be computed again here says why, and nothing is claimed repaired that is not."""

from __future__ import annotations

import json

import pytest

from colbert_swap.core.store import Store
from colbert_swap.tasks import repair as repair_task
from colbert_swap.tasks import verify
from colbert_swap.tasks.capture import capture
from colbert_swap.tasks.inject import inject
from tests.conftest import quiet_progress

pytestmark = pytest.mark.numerics


def _lose(store: Store, run, deleted: list[str], damaged: list[str] = ()) -> None:
    for name in deleted:
        store.blobs.path(run.artifacts[name].ref).unlink()
    for name in damaged:
        store.blobs.path(run.artifacts[name].ref).write_bytes(b"not a tensor")


def test_lost_and_damaged_files_are_computed_again_to_their_recorded_hashes(tiny_cfg, tmp_path):
    # a store of its own: the files it deletes are shared by content with other tests' runs
    cfg = tiny_cfg("run=rp", f"out_dir={tmp_path}/report", f"store.root={tmp_path}/store")
    run = capture(cfg, progress=quiet_progress)
    store = Store(cfg.store.root)
    # a stage that draws (sample_pids), the encoder (embs.0), k-means (damaged), and one that reads a lost one
    _lose(store, run, ["sample_pids", "embs.0", "codes.0"], damaged=["prenorm_centroids"])
    assert len(verify.problems(store)[0]) == 4

    assert repair_task.run(cfg) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["runs"]["rp"]["lost"] == {"sample_pids": "missing", "prenorm_centroids": "damaged",
                                            "embs.0": "missing", "codes.0": "missing"}
    assert sorted(report["runs"]["rp"]["refilled"]) == ["codes.0", "embs.0", "prenorm_centroids", "sample_pids"]
    assert report["verdict"].startswith("Run 'rp': 4 of 4 lost files computed again, each equal to its recorded hash")
    assert verify.problems(store)[0] == []
    assert {n: r.ref for n, r in store.load("rp").artifacts.items()} == {n: r.ref for n, r in run.artifacts.items()}
    assert not store.has_run("rp.repair")  # the scratch run is gone


def test_what_cannot_be_computed_again_here_says_why(tiny_cfg, tmp_path):
    own = f"store.root={tmp_path}/store"  # the files it deletes are shared by content with other tests' runs
    cfg = tiny_cfg("run=rp-noisy", "perturb.noise=prenorm_centroids", f"out_dir={tmp_path}/noisy", own)
    noisy = capture(cfg, progress=quiet_progress)
    store = Store(cfg.store.root)
    _lose(store, noisy, ["prenorm_centroids"])
    assert repair_task.run(cfg) == 1  # a stage that does not repeat itself cannot give the lost bits back
    report = json.loads((tmp_path / "noisy" / "report.json").read_text())
    why = report["runs"]["rp-noisy"]["not_refilled"]["prenorm_centroids"]
    assert why.startswith("computed again here it gives other bits") and "task=determinism run=rp-noisy" in why
    assert report["runs"]["rp-noisy"]["refilled"] == [] and "not refilled: `prenorm_centroids`" in report["verdict"]

    capture(tiny_cfg("run=rp-src", "perturb=kmeans_seed", own), progress=quiet_progress)
    capture(tiny_cfg("run=rp-dst", own), progress=quiet_progress)
    replayed = inject(tiny_cfg("source=rp-src", "target=rp-dst", own), store, ["prenorm_centroids"],
                      progress=quiet_progress).replayed
    _lose(store, replayed, ["prenorm_centroids"])  # the source's file too: one blob, two runs
    result = repair_task.repair(tiny_cfg(own), store, store.load(replayed.label), quiet_progress)
    assert result.not_refilled == {"prenorm_centroids": "injected from run 'rp-src': repair that run"}
    assert repair_task.repair(tiny_cfg(own), store, store.load("rp-src"), quiet_progress).refilled == ["prenorm_centroids"]
    assert repair_task.lost(store, store.load(replayed.label)) == {}  # repairing the source repaired both
