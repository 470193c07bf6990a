"""Train: k-means centroids and the residual codec. Mirrors colbert/indexing/collection_indexer.py
`_concatenate_and_split_sample`, `_train_kmeans`, `_compute_avg_residual`; k-means is colbert-ai's own
`compute_faiss_kmeans`. `normalize` and `half` are separate stages, as in the 2.7.1 -> 2.8.0 post."""

from __future__ import annotations

import torch

from colbert_swap.colbert.resources import stage
from colbert_swap.core.dag import Facts, Reduction


@stage("train", outputs=("sample", "sample_heldout"),
       facts={"sample": Facts(reduction=Reduction.over(1, "a cast to float16")),
              "sample_heldout": Facts(reduction=Reduction.over(1, "a cast to float16"))})
def sample(local_sample_embs, rng):
    embs = local_sample_embs.half()  # colbert-ai writes sample.{rank}.pt as .half() and reads it back
    embs = embs[torch.randperm(embs.size(0), generator=rng.torch)]
    heldout_size = int(min(0.05 * embs.size(0), 50_000))
    kept, heldout = embs.split([embs.size(0) - heldout_size, heldout_size], dim=0)
    return kept, heldout  # (n - h, dim) fp16, (h, dim) fp16


@stage("train", facts=Facts(reduction=Reduction.cluster("the mean over a cluster's members", of="sample"), centroid_set=True),
       overlap=True)
def prenorm_centroids(sample, num_partitions, colbert_config, perturb, index_config):
    """colbert-ai's compute_faiss_kmeans (seed 123), or another backend: see colbert_swap/colbert/kmeans.py."""
    from colbert_swap.colbert.kmeans import kmeans

    seed = 123 if perturb.kmeans_seed is None else perturb.kmeans_seed
    return kmeans(index_config.kmeans_backend, sample, num_partitions, colbert_config.kmeans_niters, seed)


@stage("train", facts=Facts(reduction=Reduction.dim("the norm over the embedding dimension"), centroid_set=True))
def postnorm_centroids(prenorm_centroids, perturb):
    if perturb.normalize == "fp16":
        return torch.nn.functional.normalize(prenorm_centroids.half(), dim=-1).float()
    if perturb.normalize is not None:
        raise ValueError(f"perturb.normalize={perturb.normalize!r}; expected null or fp16")
    return torch.nn.functional.normalize(prenorm_centroids, dim=-1)  # (num_partitions, dim) fp32


@stage("train", facts=Facts(reduction=Reduction.over(1, "a cast"), centroid_set=True))
def centroids(postnorm_centroids, device):
    return postnorm_centroids.half() if device == "cuda" else postnorm_centroids.float()


def codec(colbert_config, centroids, **buckets):
    from colbert.indexing.codecs.residual import ResidualCodec

    return ResidualCodec(config=colbert_config, centroids=centroids, **buckets)


@stage("train", facts=Facts(reduction=Reduction.over(1, "a subtraction")))
def heldout_residual(centroids, sample_heldout, colbert_config, device):
    compressor = codec(colbert_config, centroids, avg_residual=None)
    codes = compressor.compress_into_codes(sample_heldout, out_device=device)
    reconstruct = compressor.lookup_centroids(codes, out_device=device)
    return sample_heldout.to(device) - reconstruct  # (h, dim) fp32 on CPU (fp16 - fp32), fp16 on CUDA


def _quantiles(nbits: int, device):
    num_options = 2 ** nbits
    quantiles = torch.arange(0, num_options, device=device) * (1 / num_options)
    return quantiles[1:], quantiles + (0.5 / num_options)


@stage("train", facts=Facts(reduction=Reduction.numel("the mean over every heldout residual", of="heldout_residual")))
def avg_residual(heldout_residual):
    return torch.abs(heldout_residual).mean(dim=0).cpu().mean()  # () scalar


@stage("train", facts=Facts(reduction=Reduction.over(1, "a quantile's interpolation")))
def bucket_cutoffs(heldout_residual, colbert_config):
    cutoffs, _ = _quantiles(colbert_config.nbits, heldout_residual.device)
    return heldout_residual.float().quantile(cutoffs)  # (2**nbits - 1,) fp32


@stage("train", facts=Facts(reduction=Reduction.over(1, "a quantile's interpolation")))
def bucket_weights(heldout_residual, colbert_config):
    _, weights = _quantiles(colbert_config.nbits, heldout_residual.device)
    return heldout_residual.float().quantile(weights)  # (2**nbits,) fp32


@stage("train", facts=Facts(reduction=Reduction.over(1, "a cast to float16"), centroid_set=True))
def half_centroids(centroids):
    """What centroids.pt holds, and what chunk compression reads back (IndexSaver.thread reloads it)."""
    return centroids.half()
