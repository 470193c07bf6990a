"""Setup: the plan. Mirrors colbert/indexing/collection_indexer.py `setup`, `_sample_pids`,
`_sample_embeddings` (one rank, so the all-reduces are identities)."""

from __future__ import annotations

import numpy as np
import torch

from colbert_swap.dag import Facts, stage


def chunksize(num_passages: int, index_config) -> int:
    """colbert.data.collection.Collection.get_chunksize with one rank, unless index.chunksize is set."""
    return index_config.chunksize or min(25_000, 1 + num_passages)


@stage("setup")
def num_passages(corpus) -> int:
    return len(corpus.passages)


@stage("setup")
def num_chunks(num_passages, index_config) -> int:
    return int(np.ceil(num_passages / chunksize(num_passages, index_config)))


@stage("setup")
def sample_pids(num_passages, rng) -> torch.Tensor:
    typical_doclen = 120  # colbert-ai keeps sampling independent of doc_maxlen
    count = min(1 + int(16 * np.sqrt(typical_doclen * num_passages)), num_passages)
    pids = rng.python.sample(range(num_passages), count)
    return torch.tensor(sorted(pids), dtype=torch.int64)  # (count,) colbert-ai keeps a set


def encode(passages: list[str], checkpoint, colbert_config, progress) -> tuple[torch.Tensor, torch.Tensor]:
    """CollectionEncoder.encode_passages, called once per group of index_bsize * 50 passages: the very
    groups it forms itself (each is padded to its longest passage), so the result is the same, and
    `progress(done, total)` can be reported between groups."""
    from colbert.indexing.collection_encoder import CollectionEncoder

    encoder = CollectionEncoder(colbert_config, checkpoint)
    group = colbert_config.index_bsize * 50
    embs, doclens = [], []
    progress(0, len(passages))
    for start in range(0, len(passages), group):
        embs_, doclens_ = encoder.encode_passages(passages[start:start + group])
        embs.append(embs_)
        doclens.extend(doclens_)
        progress(min(start + group, len(passages)), len(passages))
    return torch.cat(embs), torch.tensor(doclens, dtype=torch.int64)  # (tokens, dim), (passages,)


@stage("setup", outputs=("local_sample_embs", "sample_doclens"), facts=Facts(reduction=("hidden", "the ColBERT linear layer's dot products (one layer of a deeper network)")))
def local_sample_embs(corpus, sample_pids, checkpoint, colbert_config, progress):
    wanted = set(sample_pids.tolist())
    passages = [p for pid, p in enumerate(corpus.passages) if pid in wanted]
    return encode(passages, checkpoint, colbert_config, progress)  # fp32 on CPU, fp16 on CUDA


@stage("setup")
def avg_doclen_est(sample_doclens) -> float:
    doclens = sample_doclens.tolist()
    estimate = sum(doclens) / len(doclens) if doclens else 0
    return torch.tensor([estimate]).item() / 1.0  # colbert-ai passes it through a float32 tensor


@stage("setup")
def num_embeddings_est(num_passages, avg_doclen_est) -> float:
    return num_passages * avg_doclen_est


@stage("setup")
def num_partitions(num_embeddings_est) -> int:
    return int(2 ** np.floor(np.log2(16 * np.sqrt(num_embeddings_est))))
