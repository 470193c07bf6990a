"""colbert-ai 0.2.22's own `Indexer` on a run's checkpoint, collection and index config: what our capture's index
files must equal, bit for bit (task=parity, tests/integration/test_parity.py).

    why = not_comparable(manifest.config)          # None, or why colbert-ai's Indexer cannot answer for this run
    checkpoint, collection = indexer_inputs(manifest.config, store.root)
    folder = reference_index(checkpoint, collection, manifest.config["index"], root)   # a spawned worker
    index_differences(store.run_dir(label) / "index", folder)                          # {} : identical

The Indexer runs as users run it: `Run().context(RunConfig(nranks=1, ...))`, its Launcher spawning one worker
process (`in_process=True`: colbert-ai's `avoid_fork_if_possible`, which that worker then records in its config).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping, Optional

from colbert_swap.config import COLBERT_SEED, CollectionConfig, ModelConfig



def not_comparable(config: Mapping) -> Optional[str]:
    """Why colbert-ai's Indexer cannot be the reference of a run of this config (a setting it has no way to
    take), or None when it can. Anything not colbert-ai's own is named: a comparison there proves nothing."""
    index, perturb = dict(config.get("index") or {}), dict(config.get("perturb") or {})
    knobs = {k: v for k, v in perturb.items() if v is not None}
    if knobs:
        return ("perturbed (" + ", ".join(f"perturb.{k}={v}" for k, v in knobs.items()) +
                "): colbert-ai's Indexer cannot be perturbed")
    backend = index.get("kmeans_backend", "faiss")
    if backend != "faiss":
        return f"index.kmeans_backend={backend} is not colbert-ai's k-means (faiss)"
    if index.get("chunksize") is not None:
        return (f"index.chunksize={index['chunksize']} is not colbert-ai's chunk size (it splits the collection at "
                "min(25000, 1 + passages))")
    if index.get("amp") is False:
        return "index.amp=false is not colbert-ai's (its Checkpoint always runs the encoder under autocast)"
    seed = config.get("seed", COLBERT_SEED)
    if seed != COLBERT_SEED:
        return f"seed={seed} is not colbert-ai's (its Launcher seeds {COLBERT_SEED})"
    return None


def _typed(schema, values: Mapping):
    names = {f.name for f in dataclasses.fields(schema)}
    return schema(**{k: v for k, v in dict(values or {}).items() if k in names})


def indexer_inputs(config: Mapping, store_root: str | Path) -> tuple[str, str]:
    """(checkpoint, collection TSV) a run of this config read, found (or built, seeded, as its capture built them)
    in the store as the capture's resources find them: never read from the index files under test."""
    from colbert_swap.colbert.corpus import load_corpus
    from colbert_swap.colbert.models import checkpoint_path

    root = Path(store_root)
    checkpoint = checkpoint_path(_typed(ModelConfig, config["model"]), root / "models")
    return checkpoint, load_corpus(_typed(CollectionConfig, config["collection"]), root / "collections").path


def reference_index(checkpoint: str, collection: str, index: Mapping, root: Path, name: str = "reference",
                    in_process: bool = False) -> Path:
    """colbert-ai 0.2.22's Indexer on the same checkpoint, collection and index config: `root/name`, its index
    folder (overwritten). `index`: the run's index config (doc_maxlen, nbits, kmeans_niters, index_bsize)."""
    from colbert import Indexer
    from colbert.infra import ColBERTConfig, Run, RunConfig

    with Run().context(RunConfig(nranks=1, experiment="reference", root=str(root), avoid_fork_if_possible=in_process)):
        colbert_cfg = ColBERTConfig(doc_maxlen=index["doc_maxlen"], nbits=index["nbits"],
                                    kmeans_niters=index["kmeans_niters"], index_bsize=index["index_bsize"],
                                    index_root=str(root))
        return Path(Indexer(checkpoint=str(checkpoint), config=colbert_cfg, verbose=0)
                    .index(name=name, collection=str(collection), overwrite=True))
