"""k-means backends: the faiss wrapper is colbert-ai's own call; the torch one finds planted clusters
and repeats itself bit for bit."""

from __future__ import annotations

import torch

from colbert_swap.colbert.kmeans import faiss_kmeans, kmeans, torch_kmeans


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
    from colbert_swap.colbert.kmeans import _update

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


def old_split_rule(means, counts):
    """The empty-cluster rule as the previous version wrote it (host-side indexing)."""
    means = means.clone()
    empty = (counts == 0).nonzero().squeeze(1)
    if empty.numel():
        largest = torch.argsort(counts, descending=True, stable=True)[: empty.numel()]
        means[empty] = means[largest] * (1 + 1 / 1024)
        means[largest] = means[largest] * (1 - 1 / 1024)
    return means


def test_the_split_of_empty_clusters_on_the_device_is_the_previous_rule():
    from colbert_swap.colbert.kmeans import _split_empty

    g = torch.Generator().manual_seed(0)
    cases = [torch.tensor([3, 0, 5, 0, 5, 1]), torch.tensor([0, 0, 0, 9]), torch.tensor([4, 4, 4]),
             torch.tensor([0, 2, 0, 2, 0, 2, 0])]
    cases += [torch.randint(0, 4, (50,), generator=g) for _ in range(20)]
    for counts in cases:
        means = torch.randn(len(counts), 3, generator=g)
        assert torch.equal(_split_empty(means, counts), old_split_rule(means, counts)), counts


def test_cluster_sums_are_sequential_fp32_sums_in_index_order():
    from colbert_swap.colbert.kmeans import _update

    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 8, generator=g) * torch.logspace(-3, 3, 500).unsqueeze(1)  # order matters in fp32
    labels = torch.randint(0, 6, (500,), generator=g)
    labels[labels == 4] = 5  # cluster 4 is empty
    new = _update(x, labels, torch.zeros(6, 8))
    for c in (0, 1, 2, 3, 5):
        total = torch.zeros(8)
        for i in (labels == c).nonzero().squeeze(1).tolist():  # left to right, one point at a time
            total = total + x[i]
        largest = int(torch.argsort(torch.bincount(labels, minlength=6), descending=True, stable=True)[0])
        want = total / (labels == c).sum().float()
        if c == largest:
            want = want * (1 - 1 / 1024)
        assert torch.equal(new[c], want), c
    assert not torch.equal(x[labels == 0].sum(0), x[labels == 0].flip(0).sum(0))  # the test can tell orders apart


def reference_labels(x, centroids):
    """float64 nearest centroids and the gap to the second nearest."""
    d = torch.cdist(x.double(), centroids.double()).pow(2)
    best = d.topk(2, dim=1, largest=False)
    return best.indices[:, 0], best.values[:, 1] - best.values[:, 0]


def colbert_like(n, d, k, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=-1).half().float() * scale
    centroids = torch.stack([x[torch.randint(0, n, (8,), generator=g)].mean(0) for _ in range(k)])
    return x, centroids


def test_chunked_assignments_are_the_nearest_centroids():
    from colbert_swap.colbert.kmeans import _Distances

    x, centroids = colbert_like(1000, 32, 50)
    want, gap = reference_labels(x, centroids)
    clear = gap > 1e-5
    for chunk in (7, 64, 1000, 5000):  # many chunks with a ragged last one, one chunk, a chunk beyond n
        got = _Distances(x, 50, chunk_rows=chunk).nearest(centroids)
        assert got.shape == (1000,) and got.dtype == torch.int64
        assert torch.equal(got[clear], want[clear]), chunk
    assert clear.float().mean() > 0.99


def test_fp16_split_gemm_assigns_like_fp32_where_plain_fp16_does_not():
    """The CUDA layout (fp16 hi + lo parts, fp32 sums), run on the CPU as fp32 products of fp16 numbers."""
    from colbert_swap.colbert.kmeans import _Distances

    for scale, exact in ((1.0, True), (1024.0, True), (1000.0, False), (1e-3, False)):  # fp16 data or not
        x, centroids = colbert_like(4000, 64, 256, scale=scale)
        dist = _Distances(x, 256, chunk_rows=1000, half=True)
        assert dist.exact is exact and dist.points.dtype == torch.float16 and dist.points.shape[1] % 8 == 0
        want, gap = reference_labels(x, centroids)
        clear = gap > 1e-5 * scale**2
        assert torch.equal(dist.nearest(centroids)[clear], want[clear]), scale
    x, centroids = colbert_like(4000, 64, 256)
    plain = ((centroids * centroids).sum(1) - 2 * (x.half().float() @ centroids.half().float().T).half().float())
    want, gap = reference_labels(x, centroids)
    clear = gap > 1e-5
    assert not torch.equal(plain.argmin(1)[clear], want[clear])  # fp16 products (the old CUDA path) miss some


def test_torch_kmeans_checks_its_sample_size():
    import pytest

    with pytest.raises(ValueError, match="at least k=8"):
        torch_kmeans(torch.zeros(4, 2), 8, 1, 0, device="cpu")


def fake_flash(monkeypatch):
    """flash-kmeans stood in by a module that records its calls and, as the real `batch_kmeans_Euclid`, draws
    its initial centres with `torch.randint` on the points' device and returns centres in the points' dtype."""
    import sys
    import types

    calls = []

    def batch_kmeans_Euclid(x, n_clusters, max_iters=100, tol=0.0, init_centroids=None, verbose=False, *,
                            use_heuristic=True):
        calls.append({"x": x.clone(), "n_clusters": n_clusters, "max_iters": max_iters, "tol": tol,
                      "init_centroids": init_centroids, "verbose": verbose, "use_heuristic": use_heuristic})
        b, n, d = x.shape
        indices = torch.randint(0, n, (b, n_clusters), device=x.device)
        centers = torch.gather(x, 1, indices[..., None].expand(-1, -1, d))
        return torch.zeros(b, n, dtype=torch.int64), centers, max_iters

    package = types.ModuleType("flash_kmeans")
    impl = types.ModuleType("flash_kmeans.kmeans_triton_impl")
    impl.batch_kmeans_Euclid = package.batch_kmeans_Euclid = batch_kmeans_Euclid
    monkeypatch.setitem(sys.modules, "flash_kmeans", package)
    monkeypatch.setitem(sys.modules, "flash_kmeans.kmeans_triton_impl", impl)
    return calls


def test_flash_is_refused_without_a_gpu_before_anything_runs(monkeypatch):
    import pytest

    from colbert_swap.errors import UserError

    calls = fake_flash(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _, points = blobs(k=4, per=10)
    message = ("index.kmeans_backend=flash needs a CUDA GPU (flash-kmeans runs triton kernels); this machine has "
               "none: use faiss or torch")
    with pytest.raises(UserError) as err:
        kmeans("flash", points.half(), 4, 2, 123)
    assert str(err.value) == message and calls == []  # refused, not run on flash-kmeans's torch fallback


def test_flash_without_the_package_names_the_pip_command(monkeypatch):
    import sys

    import pytest

    from colbert_swap.errors import UserError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "flash_kmeans", None)  # `import flash_kmeans` fails as when not installed
    _, points = blobs(k=4, per=10)
    with pytest.raises(UserError) as err:
        kmeans("flash", points.half(), 4, 2, 123)
    assert str(err.value) == ("index.kmeans_backend=flash needs the flash-kmeans package, which is not installed: "
                              "pip install flash-kmeans==0.3.1")


def test_flash_without_its_triton_kernels_is_refused_with_the_import_error(monkeypatch):
    import sys

    import pytest

    from colbert_swap.errors import UserError

    fake_flash(monkeypatch)
    monkeypatch.setitem(sys.modules, "flash_kmeans.kmeans_triton_impl", None)  # as when triton does not import
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    _, points = blobs(k=4, per=10)
    with pytest.raises(UserError, match=r"^index.kmeans_backend=flash: flash-kmeans's triton kernels do not import "
                                        r"here \(ModuleNotFoundError: import of flash_kmeans.kmeans_triton_impl "
                                        r"halted.*its torch fallback is not what it runs on a GPU, so it is not used$"):
        kmeans("flash", points.half(), 4, 2, 123)


def test_flash_gets_the_fp16_sample_k_the_iteration_cap_and_its_default_tolerance(monkeypatch):
    """The call itself, through a stand-in module on the CPU: the fp16 sample as a batch of one (not the fp32
    copy the other backends get), k clusters, niter as max_iters and no tol (its default); fp32 centres on the
    CPU; the initialisation seeded, and the caller's generator state left as it was."""
    from colbert_swap.colbert.kmeans import flash_kmeans

    calls = fake_flash(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    _, points = blobs(k=8, per=50, d=16)
    sample = points.half()
    state = torch.get_rng_state()
    centers = flash_kmeans(sample, 8, 5, 123, device="cpu")
    assert torch.equal(torch.get_rng_state(), state)
    (call,) = calls
    assert call["x"].dtype == torch.float16 and call["x"].shape == (1, 400, 16)
    assert torch.equal(call["x"][0], sample)
    assert (call["n_clusters"], call["max_iters"], call["tol"]) == (8, 5, 0.0)
    assert (call["init_centroids"], call["verbose"], call["use_heuristic"]) == (None, False, True)
    assert centers.dtype == torch.float32 and centers.shape == (8, 16) and centers.device.type == "cpu"
    assert torch.equal(centers, flash_kmeans(sample, 8, 5, 123, device="cpu"))
    assert not torch.equal(centers, flash_kmeans(sample, 8, 5, 7, device="cpu"))
    assert all(bool((sample == c.half()).all(1).any()) for c in centers)  # the stand-in's centres: points


def test_the_flash_backend_hands_over_the_sample_itself(monkeypatch):
    """kmeans("flash", ...) passes the stage's fp16 tensor on untouched: no fp32 numpy copy in between."""
    from colbert_swap.colbert import kmeans as module

    seen = []
    monkeypatch.setattr(module, "flash_kmeans", lambda sample, k, niter, seed: seen.append((sample, k, niter, seed))
                        or torch.zeros(k, sample.shape[1]))
    _, points = blobs(k=4, per=10)
    sample = points.half()
    kmeans("flash", sample, 4, 3, 9)
    assert seen[0][0] is sample and seen[0][1:] == (4, 3, 9)
