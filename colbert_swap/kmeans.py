"""k-means backends for the `prenorm_centroids` stage.

- `faiss`: colbert-ai's own `compute_faiss_kmeans`, line for line (faiss-cpu; faiss-gpu when installed).
  The default, and the only one whose centroids equal colbert-ai's.
- `torch`: a deterministic k-means in torch, on the GPU when there is one. Not colbert-ai's result
  (another initialisation), but the same work (faiss's 256 points per centroid, every iteration) and
  bit-identical from run to run, so a proof can rest on it.
- `fastkmeans`: the `fastkmeans` package. Fast, but its CUDA cluster sums add atomically in any
  order: two runs give different centroids (measured on the H100; see README).
"""

from __future__ import annotations

import numpy as np
import torch

BACKENDS = ("faiss", "torch", "fastkmeans")
MAX_POINTS_PER_CENTROID = 256  # faiss's default sampling cap


def kmeans(backend: str, sample: torch.Tensor, k: int, niter: int, seed: int) -> torch.Tensor:
    """(n, dim) sample -> (k, dim) fp32 centroids on the CPU."""
    data = sample.float().numpy()  # colbert-ai hands faiss the fp16 sample as fp32
    if backend == "faiss":
        return faiss_kmeans(data, k, niter, seed)
    if backend == "torch":
        return torch_kmeans(torch.from_numpy(data), k, niter, seed)
    if backend == "fastkmeans":
        return fast_kmeans(data, k, niter, seed)
    raise ValueError(f"index.kmeans_backend={backend!r}; expected one of {', '.join(BACKENDS)}")


def faiss_kmeans(data: np.ndarray, k: int, niter: int, seed: int = 123) -> torch.Tensor:
    """colbert.indexing.collection_indexer.compute_faiss_kmeans with its seed exposed."""
    import faiss

    km = faiss.Kmeans(data.shape[1], k, niter=niter, gpu=torch.cuda.is_available(), verbose=True, seed=seed)
    km.train(data)
    return torch.from_numpy(km.centroids)


def torch_kmeans(data: torch.Tensor, k: int, niter: int, seed: int, device: str | None = None) -> torch.Tensor:
    """Lloyd's k-means with every step deterministic: seeded CPU sampling, argmin assignments, and
    cluster sums from a stable sort and a float64 prefix sum (no atomics). An empty cluster takes half
    of the largest one, as faiss does (its centroid and the large one's, nudged apart)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    gen = torch.Generator().manual_seed(seed)
    n = data.shape[0]
    if n < k:
        raise ValueError(f"k-means needs at least k={k} points, got {n}")
    if n > k * MAX_POINTS_PER_CENTROID:
        data = data[torch.randperm(n, generator=gen)[: k * MAX_POINTS_PER_CENTROID]]
    x = data.to(device, torch.float32)  # (n, d)
    centroids = x[torch.randperm(x.shape[0], generator=gen)[:k].to(device)].clone()  # (k, d)
    for _ in range(niter):
        centroids = _update(x, _assign(x, centroids), centroids)
    return centroids.cpu()


def _assign(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Nearest centroid per point: argmin of |c|^2 - 2 x.c, chunked to bound memory; fp16 products on CUDA."""
    k = centroids.shape[0]
    norms = (centroids * centroids).sum(1)  # (k,)
    dtype = torch.float16 if x.is_cuda else torch.float32
    c = centroids.to(dtype)
    chunk = max(1024, (1 << 28) // k)
    labels = [(norms - 2 * (xs.to(dtype) @ c.T).float()).argmin(1) for xs in x.split(chunk)]
    return torch.cat(labels)  # (n,) int64


def _update(x: torch.Tensor, labels: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    k = old.shape[0]
    counts = torch.bincount(labels, minlength=k)  # integer counts: exact in any order
    ordered = x[torch.argsort(labels, stable=True)].double()
    prefix = torch.cat([ordered.new_zeros(1, x.shape[1]), ordered.cumsum(0)])  # (n + 1, d)
    ends = counts.cumsum(0)
    sums = prefix[ends] - prefix[ends - counts]  # (k, d)
    means = (sums / counts.clamp(min=1).unsqueeze(1)).float()
    empty = (counts == 0).nonzero().squeeze(1)
    if empty.numel():  # split the largest clusters, one per empty centroid (faiss: EPS = 1 / 1024)
        largest = torch.argsort(counts, descending=True, stable=True)[: empty.numel()]
        means[empty] = means[largest] * (1 + 1 / 1024)
        means[largest] = means[largest] * (1 - 1 / 1024)
    return means


def fast_kmeans(data: np.ndarray, k: int, niter: int, seed: int) -> torch.Tensor:
    """fastkmeans with faiss's sampling cap and every iteration run (tol < 0). It seeds torch's global
    generators; they are restored after."""
    from fastkmeans import FastKMeans

    devices = list(range(torch.cuda.device_count()))
    with torch.random.fork_rng(devices=devices):
        km = FastKMeans(data.shape[1], k, niter=niter, tol=-1.0, gpu=bool(devices), seed=seed,
                        max_points_per_centroid=MAX_POINTS_PER_CENTROID, verbose=True)
        km.train(data)
    return torch.from_numpy(km.centroids)
