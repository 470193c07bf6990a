"""The most important tests: our in-process capture writes the index colbert-ai's own Indexer writes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import json

from colbert_swap.api import run
from colbert_swap.colbert.index_files import PLACE_KEYS, index_differences
from colbert_swap.colbert.reference import indexer_inputs
from colbert_swap.colbert.reference import reference_index as colbert_indexer
from colbert_swap.core.store import Store
from colbert_swap.tasks.capture import capture
from tests.conftest import quiet_progress

pytestmark = [pytest.mark.slow, pytest.mark.numerics]


def reference_index(cfg, manifest, root: Path, in_process: bool = False) -> Path:
    """colbert-ai 0.2.22's Indexer on the same checkpoint, collection and config (colbert_swap.colbert.reference)."""
    return colbert_indexer(*indexer_inputs(manifest.config, cfg.store.root), manifest.config["index"], root,
                           in_process=in_process)


def test_capture_matches_colbert_indexer_bit_for_bit(tiny_cfg, tmp_path):
    cfg = tiny_cfg("run=parity")
    manifest = capture(cfg, progress=quiet_progress)
    ours = Store(cfg.store.root).run_dir("parity") / "index"
    reference = reference_index(cfg, manifest, tmp_path)  # spawns a worker process, as users run it

    assert sorted(p.name for p in ours.iterdir()) == sorted(p.name for p in reference.iterdir())
    assert {"centroids.pt", "buckets.pt", "avg_residual.pt", "0.codes.pt", "0.residuals.pt", "doclens.0.json",
            "ivf.pid.pt", "metadata.json", "plan.json"} <= {p.name for p in ours.iterdir()}
    assert index_differences(ours, reference) == {}


def test_multi_chunk_capture_matches_colbert_indexer(tiny_cfg, tmp_path, monkeypatch):
    """index.chunksize splits the collection as colbert-ai would with a larger collection (>25k passages)."""
    from colbert.data.collection import Collection

    cfg = tiny_cfg("run=parity-chunks", "index.chunksize=50")
    manifest = capture(cfg, progress=quiet_progress)
    ours = Store(cfg.store.root).run_dir("parity-chunks") / "index"
    assert Store(cfg.store.root).get(manifest, "num_chunks") == 3
    monkeypatch.setattr(Collection, "get_chunksize", lambda self: 50)  # reaches the worker: it runs in-process
    reference = reference_index(cfg, manifest, tmp_path, in_process=True)

    assert {p.name for p in ours.iterdir()} >= {"2.codes.pt", "2.residuals.pt", "doclens.2.json", "2.metadata.json"}
    # The in-process reference records avoid_fork_if_possible=True in its config; nothing else may differ.
    assert set(index_differences(ours, reference)) == {"plan.json", "metadata.json"}
    assert index_differences(ours, reference, ignore=PLACE_KEYS + ("avoid_fork_if_possible",)) == {}


def test_colbert_searcher_answers_from_our_index_as_from_the_indexers(tiny_cfg, tmp_path):
    """colbert-ai's Searcher returns the very same pids and scores from our index and from the Indexer's."""
    from colbert import Searcher
    from colbert.infra import Run, RunConfig

    cfg = tiny_cfg("run=parity")
    manifest = capture(cfg, progress=quiet_progress)
    run_dir = Store(cfg.store.root).run_dir("parity")
    reference = reference_index(cfg, manifest, tmp_path)
    answers = []
    for root, name in ((run_dir, "index"), (reference.parent, reference.name)):
        with Run().context(RunConfig(nranks=1, experiment="search", root=str(root))):
            searcher = Searcher(index=name, index_root=str(root), verbose=0)
            answers.append([searcher.search(searcher.collection[pid][:200], k=5) for pid in (3, 7, 50)])
    ours, theirs = answers
    assert ours == theirs
    for pids, ranks, scores in ours:
        assert len(pids) == 5 and ranks == [1, 2, 3, 4, 5] and scores == sorted(scores, reverse=True)


def test_index_differences_sees_a_changed_file(tiny_cfg, tmp_path):
    import shutil

    cfg = tiny_cfg("run=parity")
    capture(cfg, progress=quiet_progress)
    ours = Store(cfg.store.root).run_dir("parity") / "index"
    copy = tmp_path / "copy"
    shutil.copytree(ours, copy)
    codes = torch.load(copy / "0.codes.pt", weights_only=True)
    codes[3] += 1
    torch.save(codes, copy / "0.codes.pt")
    assert index_differences(ours, copy) == {"0.codes.pt": f"1 of {codes.numel()} elements differ"}


def test_task_parity_says_our_capture_is_colbert_ais_indexer_here(tiny_cfg, tmp_path):
    cfg = tiny_cfg("run=parity-task")
    capture(cfg, progress=quiet_progress)
    out = tmp_path / "report"
    assert run(tiny_cfg("task=parity", "run=parity-task", f"out_dir={out}")) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["verdict"].startswith("our capture = colbert-ai's Indexer here: identical (")
    assert report["status"] == "identical" and report["differences"] == {} and report["why"] is None
    assert {"centroids.pt", "0.codes.pt", "ivf.pid.pt", "metadata.json"} <= set(report["files"])
    run_dir = Store(cfg.store.root).run_dir("parity-task")
    indexer = Path(report["indexer"])
    assert run_dir / "indexer" in indexer.parents and (indexer / "centroids.pt").exists()  # in the run's folder
    kept = json.loads((run_dir / "indexer" / "parity.json").read_text())
    assert kept["status"] == "identical" and kept["key"]["run"][0] == "parity-task"
    assert "| `centroids.pt` " in (out / "report.md").read_text()
    assert run(tiny_cfg("task=verify", f"out_dir={tmp_path / 'verify'}")) == 0  # the run's manifest is intact


def test_task_parity_names_an_index_file_changed_after_the_capture(tiny_cfg, tmp_path):
    cfg = tiny_cfg("run=parity-tampered")
    capture(cfg, progress=quiet_progress)
    codes_path = Store(cfg.store.root).run_dir("parity-tampered") / "index" / "0.codes.pt"
    codes = torch.load(codes_path, weights_only=True)
    codes[3] += 1
    torch.save(codes, codes_path)
    out = tmp_path / "report"
    assert run(tiny_cfg("task=parity", "run=parity-tampered", f"out_dir={out}")) == 1
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "differs"
    assert report["differences"] == {"0.codes.pt": f"1 of {codes.numel()} elements differ"}
    assert report["verdict"].startswith("our capture differs from colbert-ai's Indexer here: 0.codes.pt "
                                        f"(1 of {codes.numel()} elements differ)")
    assert "identical" not in report["verdict"]


def test_task_parity_never_calls_a_run_colbert_ai_cannot_compute_identical(tiny_cfg, tmp_path):
    """Another k-means, or a perturbed run: the Indexer cannot compute it, so it is not compared (exit 2)."""
    for name, override, why in (("parity-torch-kmeans", "index.kmeans_backend=torch",
                                 "not compared: index.kmeans_backend=torch is not colbert-ai's k-means (faiss)"),
                                ("parity-scaled", "perturb=scale_layer", "not compared: perturbed (perturb.scale")):
        capture(tiny_cfg(f"run={name}", override), progress=quiet_progress)
        out = tmp_path / name
        assert run(tiny_cfg("task=parity", f"run={name}", f"out_dir={out}")) == 2
        report = json.loads((out / "report.json").read_text())
        assert report["status"] == "not compared" and report["verdict"].startswith(why), report["verdict"]
        assert "identical" not in report["verdict"] and report["files"] == [] and report["indexer"] is None
        assert not (Store(tiny_cfg().store.root).run_dir(name) / "indexer").exists()  # the Indexer never ran
