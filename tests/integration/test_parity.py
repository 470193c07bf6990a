"""The most important tests: our in-process capture writes the index colbert-ai's own Indexer writes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from colbert_swap.colbert.index_files import PLACE_KEYS, index_differences
from colbert_swap.core.store import Store
from colbert_swap.tasks.capture import capture
from tests.conftest import quiet_progress

pytestmark = [pytest.mark.slow, pytest.mark.numerics]


def reference_index(cfg, manifest, root: Path, in_process: bool = False) -> Path:
    """colbert-ai 0.2.22's Indexer on the same checkpoint, collection and config."""
    from colbert import Indexer
    from colbert.infra import ColBERTConfig, Run, RunConfig

    config = manifest.config["index"]
    checkpoint = next((Path(cfg.store.root) / "models").glob(f"{cfg.model.name}-*"))
    collection = next((Path(cfg.store.root) / "collections").glob("synthetic-*.tsv"))
    with Run().context(RunConfig(nranks=1, experiment="reference", root=str(root), avoid_fork_if_possible=in_process)):
        colbert_cfg = ColBERTConfig(doc_maxlen=config["doc_maxlen"], nbits=config["nbits"],
                                    kmeans_niters=config["kmeans_niters"], index_bsize=config["index_bsize"],
                                    index_root=str(root))
        return Path(Indexer(checkpoint=str(checkpoint), config=colbert_cfg, verbose=0)
                    .index(name="reference", collection=str(collection), overwrite=True))


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
