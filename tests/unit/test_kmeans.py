"""k-means backends: the faiss wrapper is colbert-ai's own call; the torch one finds planted clusters
and repeats itself bit for bit."""

from __future__ import annotations

import torch

from colbert_swap.kmeans import faiss_kmeans, kmeans, torch_kmeans


def blobs(k: int = 8, per: int = 300, d: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.nn.functional.normalize(torch.randn(k, d, generator=g), dim=-1) * 10
    points = centers.repeat_interleave(per, 0) + 0.05 * torch.randn(k * per, d, generator=g)
    return centers, points[torch.randperm(k * per, generator=g)]


def test_faiss_backend_is_colbert_ai_compute_faiss_kmeans():
    from colbert.indexing.collection_indexer import compute_faiss_kmeans

    _, points = blobs()
    sample = points.half()
    ours = kmeans("faiss", sample, 8, 4, 123)
    theirs = compute_faiss_kmeans(16, 8, 4, [[sample]])
    assert torch.equal(ours, theirs)


def inertia(points, centroids):
    return float(torch.cdist(points, centroids).min(1).values.pow(2).sum())


def test_torch_kmeans_clusters_as_well_as_faiss():
    centers, points = blobs(k=32, per=100, d=16)
    ours = torch_kmeans(points, 32, 10, seed=0, device="cpu")
    assert ours.shape == (32, 16)
    assert inertia(points, ours) < inertia(points, torch_kmeans(points, 32, 1, seed=0, device="cpu"))
    assert inertia(points, ours) <= 1.5 * inertia(points, faiss_kmeans(points.numpy(), 32, 10))


def test_torch_kmeans_is_deterministic_and_seeded():
    _, points = blobs(k=16, per=100)
    a = torch_kmeans(points, 16, 4, seed=1, device="cpu")
    assert torch.equal(a, torch_kmeans(points, 16, 4, seed=1, device="cpu"))
    assert not torch.equal(a, torch_kmeans(points, 16, 4, seed=2, device="cpu"))


def test_an_empty_cluster_takes_half_of_the_largest():
    from colbert_swap.kmeans import _update

    x = torch.tensor([[0.0, 1.0], [0.0, 3.0], [0.0, 5.0], [10.0, 0.0]])
    old = torch.tensor([[0.0, 3.0], [10.0, 0.0], [99.0, 99.0]])
    new = _update(x, torch.tensor([0, 0, 0, 1]), old)  # centroid 2 is empty
    assert torch.allclose(new[0], torch.tensor([0.0, 3.0]) * (1 - 1 / 1024))
    assert torch.allclose(new[2], torch.tensor([0.0, 3.0]) * (1 + 1 / 1024))
    assert torch.equal(new[1], torch.tensor([10.0, 0.0]))


def test_faiss_wrapper_seed_changes_the_result():
    _, points = blobs(k=16, per=100)
    data = points.numpy()
    assert not torch.equal(faiss_kmeans(data, 16, 4, 123), faiss_kmeans(data, 16, 4, 7))
