"""Centroids without their labels: match two centroid sets one to one, then compare codes and IVF lists
modulo the matching; and for each code that still changed, how close its old and new centroid are.

    m = match_centroids(A, B)          # (K, dim) each; Hungarian up to HUNGARIAN_MAX, else mutual NN
    m.kind     # 'identical' | 'relabeled' | 'rounding' | 'moved' | 'mostly_same' | 'different'
    agreement = codes_modulo(m, codes_a, codes_b)
    flips = near_twins(embs_b, centroids_b, old_b, new_b, score_dtype)

K-means labels are arbitrary: another seed names the same clusters differently, and every label-based
comparison then says everything differs. Matching first tells "relabeled, same clustering" apart from
"a different clustering".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from colbert_swap.proof.analysis.magnitude import U32
from colbert_swap.proof.compare.ulp import MANTISSA, ulp_at

HUNGARIAN_MAX = 8192  # scipy's linear_sum_assignment: ~5 s at 8,192 centroids on one CPU core
BLOCK_ELEMENTS = 1 << 25  # distance / score blocks of at most this many entries (256 MiB in float64)
MOSTLY = 0.9  # "mostly the same clustering": at least this share of centroids within half the spacing
NEAR_TWIN_MAX = 20_000  # changed codes analysed (a seeded sample beyond)


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class Matching:
    method: str  # "hungarian" | "mutual nearest neighbours"
    perm: torch.Tensor  # (K,) int64: a's centroid i <-> b's centroid perm[i]; -1 when unmatched
    distances: torch.Tensor  # (K,) float64 euclidean distance to the match; nan when unmatched
    spacing: float  # median distance from a centroid of A to its nearest other centroid of A
    noise: torch.Tensor  # (K,) distance a centroid may move by from re-rounding each component once
    relabeled: int  # matched centroids whose label changed

    @property
    def matched(self) -> int:
        return int((self.perm >= 0).sum())

    @property
    def kind(self) -> str:
        d = self.distances[self.perm >= 0]
        if self.matched < self.perm.numel() or not d.numel():
            return "different"
        if float(d.max()) == 0:
            return "identical" if not self.relabeled else "relabeled"
        if bool((d <= self.noise[self.perm >= 0]).all()):
            return "rounding"
        near = float((d < 0.5 * self.spacing).double().mean())
        return "moved" if near == 1.0 else "mostly_same" if near >= MOSTLY else "different"

    def stats(self) -> dict:
        d = self.distances[self.perm >= 0]
        q = (lambda p: float(torch.quantile(d, p))) if d.numel() else (lambda p: float("nan"))  # noqa: E731
        return {"method": self.method, "centroids": self.perm.numel(), "matched": self.matched,
                "relabeled": self.relabeled, "kind": self.kind, "exact": int((d == 0).sum()),
                "within_noise": int((d <= self.noise[self.perm >= 0]).sum()),
                "noise": float(self.noise.median()) if self.noise.numel() else 0.0, "spacing": self.spacing,
                "median": q(0.5), "p90": q(0.9), "max": float(d.max()) if d.numel() else float("nan"),
                "mean": float(d.mean()) if d.numel() else float("nan"),
                "below_half_spacing": int((d < 0.5 * self.spacing).sum())}


def _distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.cdist(a.to(_device(), torch.float64), b.to(_device(), torch.float64))


def _nearest(a: torch.Tensor, b: torch.Tensor, exclude_self: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row of a, the nearest row of b (blocked, on the GPU when present)."""
    values, indices = [], []
    block = max(1, BLOCK_ELEMENTS // max(1, b.shape[0]))
    for start in range(0, a.shape[0], block):
        d = _distances(a[start:start + block], b)  # (block, K)
        if exclude_self:
            rows = torch.arange(d.shape[0], device=d.device)
            d[rows, rows + start] = math.inf
        v, i = d.min(dim=1)
        values.append(v.cpu())
        indices.append(i.cpu())
    return torch.cat(values), torch.cat(indices)


def match_centroids(a: torch.Tensor, b: torch.Tensor) -> Matching:
    """One-to-one matching of centroid set a to b (same shape) by euclidean distance: bitwise equal rows
    first, then the Hungarian method on the rest (mutual nearest neighbours beyond HUNGARIAN_MAX rows)."""
    k = a.shape[0]
    perm = _exact_pairs(a, b)  # an optimal assignment can always keep these (triangle inequality)
    rest_a = (perm < 0).nonzero().flatten()
    taken = torch.zeros(k, dtype=torch.bool)
    taken[perm[perm >= 0]] = True
    rest_b = (~taken).nonzero().flatten()
    method = "hungarian"
    if 0 < rest_a.numel() <= HUNGARIAN_MAX:
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(_distances(a[rest_a], b[rest_b]).cpu().numpy())
        perm[rest_a[torch.as_tensor(rows)]] = rest_b[torch.as_tensor(cols, dtype=torch.long)]
    elif rest_a.numel():
        _, ab = _nearest(a[rest_a], b[rest_b])
        _, ba = _nearest(b[rest_b], a[rest_a])
        mutual = ba[ab] == torch.arange(rest_a.numel())
        perm[rest_a[mutual]] = rest_b[ab[mutual]]
        method = "mutual nearest neighbours"
    return with_perm(a, b, perm, method)


def with_perm(a: torch.Tensor, b: torch.Tensor, perm: torch.Tensor, method: str) -> Matching:
    """The matching `perm` (a's i <-> b's perm[i], -1: none) with its distances, spacing and noise."""
    k = a.shape[0]
    spacing = float(_nearest(a, a, exclude_self=True)[0].median()) if k > 1 else math.inf
    ok = perm >= 0
    distances = torch.full((k,), math.nan, dtype=torch.float64)
    distances[ok] = (a[ok].double() - b[perm[ok]].double()).norm(dim=1)
    relabeled = int((perm[ok] != torch.arange(k)[ok]).sum())
    noise = torch.zeros(k, dtype=torch.float64)
    if a.dtype in MANTISSA:
        noise[ok] = ulp_at(torch.maximum(a[ok].abs(), b[perm[ok]].abs()), a.dtype).norm(dim=1)
    return Matching(method, perm, distances, spacing, noise, relabeled)


def _exact_pairs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a's row i -> a bitwise identical row of b (each used once), -1 where there is none."""
    free: dict[bytes, list[int]] = {}
    for j, row in enumerate(b.detach().cpu().contiguous().view(torch.uint8).numpy()):
        free.setdefault(row.tobytes(), []).append(j)
    perm = torch.full((a.shape[0],), -1, dtype=torch.long)
    for i, row in enumerate(a.detach().cpu().contiguous().view(torch.uint8).numpy()):
        js = free.get(row.tobytes())
        if js:  # among identical rows of b, keep the same label when there is one
            perm[i] = js.pop(js.index(i) if i in js else 0)
    return perm


def codes_modulo(m: Matching, codes_a: torch.Tensor, codes_b: torch.Tensor) -> dict:
    """How many embeddings land on the matched centroid (codes_b == perm[codes_a])."""
    mapped = m.perm[codes_a.long()]
    same = int((mapped == codes_b.long()).sum())
    return {"embeddings": codes_a.numel(), "same_label": int((codes_a.long() == codes_b.long()).sum()),
            "same_modulo_matching": same, "unmatched": int((mapped < 0).sum())}


def ivf_modulo(m: Matching, pids_a: torch.Tensor, lengths_a: torch.Tensor, pids_b: torch.Tensor,
               lengths_b: torch.Tensor) -> dict:
    """Compare the pid lists (ivf_pid) of matched centroids: identical lists and mean Jaccard."""
    k = lengths_a.numel()
    num_pids = int(max(pids_a.max(), pids_b.max())) + 1 if pids_a.numel() and pids_b.numel() else 1

    def keys(pids: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        owner = torch.repeat_interleave(labels, lengths.long())
        pids = pids[:owner.numel()].long()  # ivf_pid is padded at the end
        keep = owner >= 0
        return torch.unique(owner[keep] * num_pids + pids[keep])

    ka = keys(pids_a, lengths_a, torch.arange(k))  # a's lists under a's labels
    kb = keys(pids_b, lengths_b, _inverse(m.perm, k))  # b's lists under the labels of their a-match
    both = ka[torch.isin(ka, kb)]
    inter = torch.bincount(both // num_pids, minlength=k).double()
    size_a = torch.bincount(ka // num_pids, minlength=k).double()
    size_b = torch.bincount(kb // num_pids, minlength=k).double()
    union = size_a + size_b - inter
    jaccard = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
    return {"lists": k, "identical_lists": int(((inter == size_a) & (inter == size_b)).sum()),
            "mean_jaccard": float(jaccard.mean())}


def _inverse(perm: torch.Tensor, k: int) -> torch.Tensor:
    """b's label -> the a label matched to it (-1 when none)."""
    inv = torch.full((k,), -1, dtype=torch.long)
    ok = perm >= 0
    inv[perm[ok]] = torch.arange(k)[ok]
    return inv


@dataclass(frozen=True)
class NearTwins:
    flips: int  # changed codes (modulo the matching)
    analysed: int  # of them, measured (a seeded sample beyond NEAR_TWIN_MAX)
    ties: int  # flips whose score gap between old and new centroid is within numerical noise
    old_rank: dict  # rank of the old centroid among the embedding's nearest (1 = nearest): median, max
    centroid_distance: dict  # old-to-new centroid distance: median, max
    gap: dict  # score(new) - score(old): median, max
    margin: dict  # top-1 minus top-2 score: median, max
    noise: dict  # the noise threshold per flip: median, max
    spacing: float  # median nearest-neighbour distance among the centroids
    by_embedding: int | None = None  # flips where the embedding's change moves the gap more than the centroids'
    by_centroids: int | None = None  # flips where the centroids' movement moves it more

    def to_json(self) -> dict:
        return dict(self.__dict__)


def near_twins(embs: torch.Tensor, centroids: torch.Tensor, old: torch.Tensor, new: torch.Tensor,
               score_dtype: torch.dtype = torch.float32, spacing: float | None = None,
               embs_before: torch.Tensor | None = None, centroids_before: torch.Tensor | None = None) -> NearTwins:
    """For each flip (embedding row, old centroid -> new centroid, labels in `centroids`' naming): the
    distance between the two centroids, the embedding's score gap between them and its top-2 margin.

    A flip is a tie within numerical noise when the gap is no larger than what re-rounding every
    component of the stored embedding by one ULP could shift it by, plus the rounding of the score
    itself (a `dim`-long dot product accumulated in float32, stored in `score_dtype`). With the other
    run's embeddings and centroids (`*_before`, rows and labels aligned with these), each flip is put down
    to whichever change moved the gap more: the embedding's or the centroids'."""
    flips = old.numel()
    if flips > NEAR_TWIN_MAX:
        pick = torch.randperm(flips, generator=torch.Generator().manual_seed(0))[:NEAR_TWIN_MAX].sort().values
        embs, old, new = embs[pick], old[pick], new[pick]
        embs_before = embs_before[pick] if embs_before is not None else None
    dev = _device()
    e = embs.to(dev, torch.float64)  # (n, dim)
    c = centroids.to(dev, torch.float64)  # (K, dim)
    old_, new_ = old.long().to(dev), new.long().to(dev)
    c_old, c_new = c[old_], c[new_]  # (n, dim)
    s_old, s_new = (e * c_old).sum(1), (e * c_new).sum(1)
    gap = s_new - s_old
    ranks, tops = [], []
    block = max(1, BLOCK_ELEMENTS // c.shape[0])
    for start in range(0, e.shape[0], block):
        scores = e[start:start + block] @ c.T  # (block, K)
        ranks.append((scores > s_old[start:start + block, None]).sum(1) + 1)
        top = scores.topk(min(2, c.shape[0]), dim=1).values
        tops.append(top[:, 0] - top[:, -1])
    rank = torch.cat(ranks) if ranks else torch.zeros(0, device=dev)
    margin = torch.cat(tops) if tops else torch.zeros(0, device=dev, dtype=torch.float64)
    emb_noise = (ulp_at(e, embs.dtype if embs.dtype in MANTISSA else torch.float32) * (c_new - c_old).abs()).sum(1)
    score_noise = e.shape[1] * U32 * (e.abs() * (c_old.abs() + c_new.abs())).sum(1)
    if score_dtype in MANTISSA and MANTISSA[score_dtype] < 23:
        score_noise = score_noise + ulp_at(torch.maximum(s_old.abs(), s_new.abs()), score_dtype)
    noise = emb_noise + score_noise
    if spacing is None:
        spacing = float(_nearest(centroids, centroids, exclude_self=True)[0].median()) if c.shape[0] > 1 else math.inf
    by_emb = by_cen = None
    if embs_before is not None and centroids_before is not None:
        e0 = embs_before.to(dev, torch.float64)
        c0 = centroids_before.to(dev, torch.float64)
        shift_emb = ((e - e0) * (c_new - c_old)).sum(1).abs()
        shift_cen = (e0 * ((c_new - c0[new_]) - (c_old - c0[old_]))).sum(1).abs()
        by_emb = int((shift_emb >= shift_cen).sum())
        by_cen = int(e.shape[0]) - by_emb
    return NearTwins(flips, old.numel(), int((gap.abs() <= noise).sum()), _stats(rank.double()),
                     _stats((c_new - c_old).norm(dim=1)), _stats(gap), _stats(margin),
                     _stats(noise), spacing, by_emb, by_cen)


def _stats(t: torch.Tensor) -> dict:
    t = t.double().cpu()
    return {"median": float(t.median()), "max": float(t.max())} if t.numel() else {"median": None, "max": None}
