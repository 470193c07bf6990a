"""Models and collections from every source give real runs: a local checkpoint path or a TSV file
holding the same bytes as the built-in ones give the very same artifacts; MiniLM is a different model."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from colbert_swap.core.store import Store
from colbert_swap.tasks.capture import capture
from tests.conftest import quiet_progress


def hashes(manifest):
    return {k: r.ref.hash for k, r in manifest.artifacts.items()}


def test_local_checkpoint_and_tsv_reproduce_the_builtin_run(tiny_cfg, store_root):
    builtin = capture(tiny_cfg("run=src-builtin"), progress=quiet_progress)
    checkpoint = next((Path(store_root) / "models").glob("tiny-*"))
    tsv = next(p for p in (Path(store_root) / "collections").glob("synthetic-*.tsv")
               if sum(1 for _ in open(p)) == 120)
    local = capture(tiny_cfg("run=src-local", "model=local", f"model.path={checkpoint}", "collection=tsv",
                             f"collection.path={tsv}"), progress=quiet_progress)
    assert hashes(local) == hashes(builtin)
    assert local.config_hash != builtin.config_hash  # recorded as a different config all the same


def test_jsonl_collection_is_read_in_order(tiny_cfg, tmp_path):
    rows = [{"text": f"passage number {i} about topic {i % 7}", "id": i} for i in range(40)]
    path = tmp_path / "passages.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    manifest = capture(tiny_cfg("run=src-jsonl", "collection=jsonl", f"collection.path={path}"),
                       progress=quiet_progress)
    store = Store(tiny_cfg().store.root)
    assert store.get(manifest, "num_passages") == 40
    assert store.get(manifest, "doclens.0").tolist()[:3] == store.get(manifest, "sample_doclens").tolist()[:3]


def test_pretrained_minilm_captures(tiny_cfg):
    manifest = capture(tiny_cfg("run=src-minilm", "model=minilm", "collection.num_passages=40"),
                       progress=quiet_progress)
    store = Store(tiny_cfg().store.root)
    embs = store.get(manifest, "embs.0")
    assert embs.shape[1] == 128 and embs.dtype == torch.float16
    norms = embs.float().norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=2e-3)  # ColBERT embeddings are unit vectors
    assert manifest.complete and (store.run_dir("src-minilm") / "index" / "ivf.pid.pt").exists()
