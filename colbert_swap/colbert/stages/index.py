"""Index: per chunk, encode then compress. Mirrors collection_indexer.py `index` and
ResidualCodec.compress, split into `codes` and `residuals` so either can be injected."""

from __future__ import annotations

import torch

from colbert_swap.colbert.resources import stage
from colbert_swap.core.dag import Facts
from colbert_swap.colbert.stages.setup import ENCODER, chunksize, embeddings, encode_batches, tokenize
from colbert_swap.colbert.stages.train import codec
from colbert_swap.colbert.tokenizer_pool import processes_for

BATCH = 1 << 18  # ResidualCodec.compress splits embeddings into batches of this many


@stage("index", per_chunk=True, outputs=("tokens.N", "token_masks.N", "token_order.N"),
       facts={"tokens.N": Facts(together=True), "token_masks.N": Facts(together=True), "token_order.N": Facts(together=True)},
       background=True)
def tokens(corpus, num_passages, index_config, chunk, checkpoint, colbert_config):
    """The chunk's `tensorize_output` (colbert_swap.colbert.stages.setup.tokenize)."""
    size = chunksize(num_passages, index_config)
    return tokenize(corpus.passages[chunk * size:(chunk + 1) * size], checkpoint, colbert_config,
                    processes_for(index_config), ahead=corpus.passages[(chunk + 1) * size:(chunk + 2) * size])


TOKENS = {"tokens": "tokens.N", "token_masks": "token_masks.N", "token_order": "token_order.N"}


@stage("index", per_chunk=True, inputs=TOKENS, facts=ENCODER, option="batches")
def batches(tokens, token_masks, token_order, checkpoint, colbert_config, progress):
    """capture.batches=true: the chunk's encoder output batch by batch, padded (setup.encode_batches)."""
    return encode_batches(tokens, token_masks, token_order, checkpoint, colbert_config, progress)


@stage("index", per_chunk=True, inputs={"batches": "batches.N", "token_order": "token_order.N"}, facts=ENCODER,
       option="batches")
def D(batches, token_order):
    """capture.batches=true: the chunk's `D` (setup.sample_D)."""
    return batches[token_order]


@stage("index", per_chunk=True, outputs=("embs.N", "doclens.N"), inputs={**TOKENS, "D": "D.N"},
       facts={"embs.N": ENCODER})
def embs(tokens, token_masks, token_order, checkpoint, colbert_config, index_config, device, progress, D=None):
    """The chunk's embeddings, fp16: encoded from its tokens, or with capture.batches flattened from `D.N`."""
    embs_, doclens = embeddings(tokens, token_masks, token_order, D, checkpoint, colbert_config, progress,
                                index_config.pipeline, index_config.cuda_graphs)
    if device != "cuda":
        assert embs_.dtype == torch.float32
        embs_ = embs_.half()
    return embs_, doclens  # (tokens, dim) fp16, (passages,)


def index_codec(colbert_config, half_centroids, bucket_cutoffs, bucket_weights):
    """The codec IndexSaver.thread() reloads from disk: fp16 centroids, cpu tensors, then moved."""
    return codec(colbert_config, half_centroids.cpu(), avg_residual=None,
                 bucket_cutoffs=bucket_cutoffs.cpu(), bucket_weights=bucket_weights.cpu())


@stage("index", per_chunk=True, inputs={"embs": "embs.N"})
def codes(embs, half_centroids, bucket_cutoffs, bucket_weights, colbert_config, device):
    compressor = index_codec(colbert_config, half_centroids, bucket_cutoffs, bucket_weights)
    out = []
    for batch in embs.split(BATCH):
        if device == "cuda":
            batch = batch.cuda().half()
        out.append(compressor.compress_into_codes(batch, out_device=batch.device).cpu())
    return torch.cat(out).to(torch.int32)  # (tokens,)


@stage("index", per_chunk=True, inputs={"embs": "embs.N", "codes": "codes.N"})
def residuals(embs, codes, half_centroids, bucket_cutoffs, bucket_weights, colbert_config, device):
    compressor = index_codec(colbert_config, half_centroids, bucket_cutoffs, bucket_weights)
    out = []
    for batch, batch_codes in zip(embs.split(BATCH), codes.split(BATCH)):
        if device == "cuda":
            batch = batch.cuda().half()
        centroids_ = compressor.lookup_centroids(batch_codes, out_device=batch.device)
        out.append(compressor.binarize(batch - centroids_).cpu())
    return torch.cat(out)  # (tokens, dim * nbits / 8) uint8
