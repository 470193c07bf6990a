"""k-means backends for the `prenorm_centroids` stage.

- `faiss`: colbert-ai's own `compute_faiss_kmeans`, line for line (faiss-cpu; faiss-gpu when installed).
  The default, and the only one whose centroids equal colbert-ai's.
- `torch`: a deterministic k-means in torch, on the GPU when there is one. Not colbert-ai's result
  (another initialisation), but the same work (faiss's 256 points per centroid, every iteration) and
  bit-identical from run to run, so a proof can rest on it.

  Its centroids changed in this version (issue 18): the same sampling, initialisation, Lloyd steps and
  empty-cluster rule, but distances are now one GEMM per chunk with the norms inside it (on CUDA: fp16
  tensor cores with fp32 output and centroids split into fp16 hi + lo parts, so assignments are close
  to fp32 ones where the old code rounded every product to fp16), and cluster sums are sequential fp32
  sums per cluster after a stable sort where they were differences of a float64 prefix sum over the
  whole sample. Both steps are deterministic with no atomics and no host sync; the bits differ from the
  previous version's, so a torch-backend run stored before does not match one made after.
- `fastkmeans`: the `fastkmeans` package. Fast, but its CUDA cluster sums add atomically in any
  order: two runs give different centroids (measured on the H100; see README).
- `flash`: flash-kmeans 0.3.1 (PyPI `flash-kmeans`), reported to this project as the k-means of colbert-ai's
  next release in place of faiss-gpu's: its batched Euclidean k-means (`batch_kmeans_Euclid`, triton
  kernels, the entry point of its README) on colbert-ai's fp16 sample itself (not the fp32 copy the others
  get), on the GPU, with `num_partitions` clusters, `kmeans_niters` as its iteration cap and its default
  tolerance (0.0: every iteration runs); centres as float32 on the CPU. No published ColBERT integration
  was found to mirror: the stanford-futuredata/ColBERT snapshot (every branch and commit) has no
  flash-kmeans call, only issue #408 proposing it and ROADMAP.md naming fastkmeans. Not colbert-ai
  0.2.22's result. CUDA only: without a GPU it is refused (`UserError`), not run on flash-kmeans's torch
  fallback (torch_fallback.py, which flash_kmeans/__init__.py substitutes silently when triton does not
  import): that fallback is another implementation (unsorted `index_add_` sums, a chunked bmm), not what
  the release would run on a GPU, so its centroids would stand for nothing. Refused too on a GPU machine
  where flash-kmeans is missing (the pip command is named) or its triton kernels do not import. The
  refusal comes before any stage of the run computes (colbert/resources.py `Resources.check`).
  Repeats itself where measured: on the H200 (torch 2.11.0+cu130, triton 3.6.0) bit-identical twice in
  one process and in two fresh processes on the tiny capture, and twice at 638k x 128 -> 8,192 in fp16
  and fp32. Not guaranteed: its cluster sums are per block of 256 sorted points, added to the fp32 total
  with `tl.atomic_add`; two such adds onto zero give the same bits in either order, three (a cluster
  spread over three blocks) need not. An empty cluster keeps its previous centre (faiss splits one).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from colbert_swap.errors import UserError

BACKENDS = ("faiss", "torch", "fastkmeans", "flash")
MAX_POINTS_PER_CENTROID = 256  # faiss's default sampling cap


def kmeans(backend: str, sample: torch.Tensor, k: int, niter: int, seed: int) -> torch.Tensor:
    """(n, dim) sample -> (k, dim) fp32 centroids on the CPU. `flash` takes the sample as it comes (colbert-ai's
    fp16 sample); the others take it as fp32 numpy, as colbert-ai hands it to faiss."""
    if backend == "flash":
        return flash_kmeans(sample, k, niter, seed)
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
    """Lloyd's k-means with every step deterministic: seeded CPU sampling and initialisation, argmin
    assignments from one GEMM per chunk of points, and cluster sums in a fixed order (a stable sort by
    label, then one sequential sum per cluster and dimension; no atomics). An empty cluster takes half
    of the largest one, as faiss does (its centroid and the large one's, nudged apart)."""
    x, centroids = _start(data, k, seed, device)
    distances = _Distances(x, k)
    for _ in range(niter):
        centroids = _update(x, distances.nearest(centroids), centroids)
    return centroids.cpu()


def _start(data: torch.Tensor, k: int, seed: int, device: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """faiss's sampling cap and a seeded initialisation, drawn on the CPU: (points, centroids) on `device`."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    gen = torch.Generator().manual_seed(seed)
    n = data.shape[0]
    if n < k:
        raise ValueError(f"k-means needs at least k={k} points, got {n}")
    if n > k * MAX_POINTS_PER_CENTROID:
        data = data[torch.randperm(n, generator=gen)[: k * MAX_POINTS_PER_CENTROID]]
    x = data.to(device, torch.float32).contiguous()  # (n, d)
    centroids = x[torch.randperm(x.shape[0], generator=gen)[:k].to(device)].clone()  # (k, d)
    return x, centroids


CHUNK_ELEMENTS = 1 << 28  # one block of distances: 1 GiB of fp32
NORM_PIECES = 3  # |c|^2 as a sum of three fp16 numbers: ~33 bits of it


class _Distances:
    """Nearest centroid per point: argmin over centroids of |c|^2 - 2 x.c, computed by one GEMM per
    chunk of points with the norms inside it (an extra column of ones on the points' side), into a
    distance block reused from chunk to chunk, and an argmin per row.

    On CUDA the GEMM runs on fp16 tensor cores with fp32 accumulation and an fp32 output. Each centroid
    is split into fp16 hi + lo parts (and the points too, unless they are fp16 numbers already, as
    colbert-ai's embeddings are) so that the products keep ~22 bits: the points' side is
    [x_hi, x_hi, (x_lo), 1, 1, 1] and the centroids' side [-2c_hi, -2c_lo, (-2c_hi), |c|^2 in three
    fp16 pieces]. Both sides are first scaled by one power of two (exact) so that no fp16 overflows.
    Elsewhere (CPU, or a torch without fp16 -> fp32 GEMMs) it is one fp32 GEMM of [x, 1] by [-2c, |c|^2]
    (on CUDA, TF32 if `torch.backends.cuda.matmul.allow_tf32` is set).

    Deterministic: a GEMM of a given shape is bit-reproducible run to run on the same GPU and library
    (cuBLAS's guarantee, one stream), the chunk shape is fixed by (n, k), and the argmin of a row is
    its first minimum. The result may depend on the chunk size (a GEMM's algorithm may depend on its
    shape): it is not claimed to be independent of it."""

    def __init__(self, x: torch.Tensor, k: int, chunk_rows: int | None = None, half: bool | None = None):
        n, d = x.shape
        self.n, self.k = n, k
        self.chunk = chunk_rows or max(1024, CHUNK_ELEMENTS // k)
        if half is None:
            half = x.is_cuda and 4 * d < 2**15 and _fp16_gemm_to_fp32(x.device)  # |c|^2 <= 4d fits fp16
        self.half = half
        self.scale, self.exact = 1.0, True
        self._buffer: torch.Tensor | None = None
        if not half:
            self.points = torch.cat([x, x.new_ones(n, 1)], 1)  # (n, d + 1) fp32
            return
        amax = float(x.abs().amax())
        if 0 < amax < float("inf"):
            self.scale = 2.0 ** (1 - math.frexp(amax)[1])  # |x| * scale in [1, 2): fp16 has room
        xs = x * self.scale
        hi = xs.half()
        lo = (xs - hi.float()).half()
        self.exact = not bool(lo.any())
        parts = [hi, hi] + ([] if self.exact else [lo]) + [hi.new_ones(n, NORM_PIECES)]
        width = sum(p.shape[1] for p in parts)
        parts.append(hi.new_zeros(n, -width % 8))  # K a multiple of 8: tensor-core friendly
        self.points = torch.cat(parts, 1)  # (n, K) fp16

    def operand(self, centroids: torch.Tensor) -> torch.Tensor:
        """(k, K): the centroids' side of the GEMM, so that points @ operand.T = |c|^2 - 2 x.c (scaled)."""
        if not self.half:
            return torch.cat([-2 * centroids, (centroids * centroids).sum(1, keepdim=True)], 1)
        cs = centroids * self.scale
        hi = cs.half()
        lo = (cs - hi.float()).half()
        norm = (cs * cs).sum(1, keepdim=True)
        pieces = []
        for _ in range(NORM_PIECES):  # norm = sum of pieces, each the fp16 rounding of what is left
            pieces.append(norm.half())
            norm = norm - pieces[-1].float()
        parts = [-2 * hi, -2 * lo] + ([] if self.exact else [-2 * hi]) + pieces
        width = sum(p.shape[1] for p in parts)
        return torch.cat(parts + [hi.new_zeros(cs.shape[0], self.points.shape[1] - width)], 1)

    def block(self, rows: slice, operand: torch.Tensor) -> torch.Tensor:
        """Scaled |c|^2 - 2 x.c, fp32, for the points in `rows` (a view into a reused buffer)."""
        a = self.points[rows]
        if self._buffer is None:
            self._buffer = torch.empty(min(self.chunk, self.n), self.k, dtype=torch.float32, device=a.device)
        out = self._buffer[: a.shape[0]]
        if not self.half:
            return torch.mm(a, operand.T, out=out)
        if a.is_cuda:
            try:
                return torch.mm(a, operand.T, out_dtype=torch.float32, out=out)
            except (TypeError, RuntimeError):  # a torch whose out_dtype GEMM takes no `out=`
                return out.copy_(torch.mm(a, operand.T, out_dtype=torch.float32))
        return torch.mm(a.float(), operand.float().T, out=out)  # CPU stand-in (tests): fp16 numbers, fp32 sums

    def nearest(self, centroids: torch.Tensor) -> torch.Tensor:
        operand = self.operand(centroids)
        labels = torch.empty(self.n, dtype=torch.int64, device=centroids.device)
        for start in range(0, self.n, self.chunk):
            rows = slice(start, min(start + self.chunk, self.n))
            torch.argmin(self.block(rows, operand), 1, out=labels[rows])
        return labels  # (n,) int64


def _fp16_gemm_to_fp32(device: torch.device) -> bool:
    """Whether fp16 x fp16 -> fp32 GEMMs (`torch.mm(..., out_dtype=)`; older torch lacks it) run on `device`
    (torch refuses them while `torch.backends.cuda.matmul.allow_fp16_accumulation` is set)."""
    a = torch.ones(8, 8, dtype=torch.float16, device=device)
    try:
        return torch.mm(a, a, out_dtype=torch.float32).dtype == torch.float32
    except (TypeError, RuntimeError, NotImplementedError):
        return False


EPS = 1 / 1024  # faiss's split of a large cluster


def _update(x: torch.Tensor, labels: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """Means of the clusters, summed in a fixed order with no host sync: a stable sort by label, each
    cluster's bounds by binary search, and per cluster and dimension one sequential fp32 sum over its
    points in index order (`segment_reduce`: one thread per sum on CUDA, a loop on the CPU)."""
    k = old.shape[0]
    ordered, order = torch.sort(labels, stable=True)
    bounds = torch.searchsorted(ordered, torch.arange(k + 1, device=labels.device))  # (k + 1,)
    counts = bounds.diff()  # (k,) integers: exact
    sums = torch.segment_reduce(x.index_select(0, order), "sum", lengths=counts, unsafe=True)  # (k, d)
    means = sums / counts.clamp(min=1).unsqueeze(1).to(sums.dtype)
    return _split_empty(means, counts)


def _split_empty(means: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Each empty cluster, in index order, takes the next largest cluster (counts descending, ties by
    index) and the two move apart: the empty one to mean * (1 + EPS), the large one to mean * (1 - EPS).
    On the device, without knowing how many are empty."""
    empty = counts == 0
    largest = torch.argsort(counts, descending=True, stable=True)
    rank = (torch.cumsum(empty, 0) - 1).clamp(min=0)  # an empty cluster's place among the empty ones
    grown = torch.where(empty.unsqueeze(1), means[largest[rank]] * (1 + EPS), means)
    split = torch.argsort(largest) < empty.sum()  # among the first (number of empty) largest
    return torch.where(split.unsqueeze(1), grown * (1 - EPS), grown)


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


FLASH_PIP = "pip install flash-kmeans==0.3.1"


def flash_kernels():
    """flash-kmeans's triton `batch_kmeans_Euclid` (the function `from flash_kmeans import batch_kmeans_Euclid`
    gives where triton imports), or a `UserError` saying why it cannot run here, checked in this order: no
    CUDA GPU; flash-kmeans not installed (with the pip command); its triton kernels not importable (with the
    import's error: flash_kmeans/__init__.py would hand out its torch fallback under the same name instead)."""
    if not torch.cuda.is_available():
        raise UserError("index.kmeans_backend=flash needs a CUDA GPU (flash-kmeans runs triton kernels); this "
                        "machine has none: use faiss or torch")
    try:
        import flash_kmeans  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name != "flash_kmeans":
            raise
        raise UserError(f"index.kmeans_backend=flash needs the flash-kmeans package, which is not installed: "
                        f"{FLASH_PIP}") from exc
    try:
        from flash_kmeans.kmeans_triton_impl import batch_kmeans_Euclid
    except Exception as exc:  # triton missing or broken
        raise UserError(f"index.kmeans_backend=flash: flash-kmeans's triton kernels do not import here "
                        f"({type(exc).__name__}: {exc}); its torch fallback is not what it runs on a GPU, so it "
                        f"is not used") from exc
    return batch_kmeans_Euclid


def flash_kmeans(sample: torch.Tensor, k: int, niter: int, seed: int, device: str | None = None) -> torch.Tensor:
    """flash-kmeans's `batch_kmeans_Euclid(x, k, max_iters=niter)` on `sample` moved to `device` (default: the
    current CUDA device; its kernels need one, only a test's stand-in module takes `cpu`) in its own dtype (the
    stage passes colbert-ai's fp16 sample: flash-kmeans then computes in fp16 where it does and returns fp16
    centres) as a batch of one, every point (no sampling cap), with its default tolerance (`tol=0.0`; it stops
    when the largest centre shift is below tol, which never happens, so all `niter` iterations run). Returns
    its (k, dim) centres as float32 on the CPU.

    Seeded: the one random draw of flash-kmeans is its initial centres, `torch.randint` on the points' device
    from that device's default generator (it takes no generator or seed), so that generator is seeded
    (`torch.cuda.manual_seed(seed)` on the device) inside `torch.random.fork_rng`, which restores it and the
    CPU one after. Whether its kernels repeat their bits (its cluster sums are `tl.atomic_add`s of per-block
    partial sums) is measured on the GPU (tests/integration/test_cuda.py), not assumed here."""
    batch_kmeans_Euclid = flash_kernels()
    device = torch.device(device or "cuda")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    x = sample.to(device).unsqueeze(0)  # (1, n, dim): a batch of one
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        if cuda:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        else:
            torch.default_generator.manual_seed(seed)
        _, centers, _ = batch_kmeans_Euclid(x, k, max_iters=niter)
    return centers[0].float().cpu()  # (k, dim) fp32
