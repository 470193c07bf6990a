"""Index: per chunk, encode then compress. Mirrors collection_indexer.py `index` and
ResidualCodec.compress, split into `codes` and `residuals` so either can be injected."""

from __future__ import annotations

import torch

from colbert_swap.dag import Facts, stage
from colbert_swap.stages.setup import chunksize, encode_tokens, tokenize
from colbert_swap.stages.train import codec

BATCH = 1 << 18  # ResidualCodec.compress splits embeddings into batches of this many


@stage("index", per_chunk=True, outputs=("tokens.N", "token_masks.N", "token_order.N"),
       facts={"tokens.N": Facts(together=True), "token_masks.N": Facts(together=True), "token_order.N": Facts(together=True)},
       background=True)
def tokens(corpus, num_passages, index_config, chunk, checkpoint, colbert_config):
    """The chunk's `tensorize_output` (colbert_swap.stages.setup.tokenize)."""
    size = chunksize(num_passages, index_config)
    return tokenize(corpus.passages[chunk * size:(chunk + 1) * size], checkpoint, colbert_config)


@stage("index", per_chunk=True, outputs=("embs.N", "doclens.N"),
       inputs={"tokens": "tokens.N", "token_masks": "token_masks.N", "token_order": "token_order.N"},
       facts={"embs.N": Facts(reduction=("hidden", "the ColBERT linear layer's dot products (one layer of a deeper network)")), "doclens.N": Facts(index_file="doclens.N.json")})
def embs(tokens, token_masks, token_order, checkpoint, colbert_config, index_config, device, progress):
    embs_, doclens = encode_tokens(tokens, token_masks, token_order, checkpoint, colbert_config, progress,
                                   index_config.pipeline)
    if device != "cuda":
        assert embs_.dtype == torch.float32
        embs_ = embs_.half()
    return embs_, doclens  # (tokens, dim) fp16, (passages,)


def index_codec(colbert_config, half_centroids, bucket_cutoffs, bucket_weights):
    """The codec IndexSaver.thread() reloads from disk: fp16 centroids, cpu tensors, then moved."""
    return codec(colbert_config, half_centroids.cpu(), avg_residual=None,
                 bucket_cutoffs=bucket_cutoffs.cpu(), bucket_weights=bucket_weights.cpu())


@stage("index", per_chunk=True, inputs={"embs": "embs.N"}, facts=Facts(index_file="N.codes.pt"))
def codes(embs, half_centroids, bucket_cutoffs, bucket_weights, colbert_config, device):
    compressor = index_codec(colbert_config, half_centroids, bucket_cutoffs, bucket_weights)
    out = []
    for batch in embs.split(BATCH):
        if device == "cuda":
            batch = batch.cuda().half()
        out.append(compressor.compress_into_codes(batch, out_device=batch.device).cpu())
    return torch.cat(out).to(torch.int32)  # (tokens,)


@stage("index", per_chunk=True, inputs={"embs": "embs.N", "codes": "codes.N"}, facts=Facts(index_file="N.residuals.pt"))
def residuals(embs, codes, half_centroids, bucket_cutoffs, bucket_weights, colbert_config, device):
    compressor = index_codec(colbert_config, half_centroids, bucket_cutoffs, bucket_weights)
    out = []
    for batch, batch_codes in zip(embs.split(BATCH), codes.split(BATCH)):
        if device == "cuda":
            batch = batch.cuda().half()
        centroids_ = compressor.lookup_centroids(batch_codes, out_device=batch.device)
        out.append(compressor.binarize(batch - centroids_).cpu())
    return torch.cat(out)  # (tokens, dim * nbits / 8) uint8
