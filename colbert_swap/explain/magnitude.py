"""How big a float difference is, compared with the rounding noise of its dtype.

    >>> m = magnitude("sample", torch.tensor([1.0, 2.0]).half(), torch.tensor([1.0, 2.002]).half(), 1)
    >>> m.verdict, m.max_units
    ('within', 1.0)

A difference is measured in *rounding units*: |a - b| / ulp(max(|a|, |b|, s)) in the artifact's dtype,
where s is the artifact's median magnitude: rounding errors of a sum scale with its operands, not with
its result, so a value that cancels to nearly zero is not held to its own tiny ULP (the raw ULP distance,
kept in the histogram, counts billions of floats between two tiny values of opposite sign). The expected
noise of a value that went through a reduction of length n, accumulated in float32 and stored in the
artifact's dtype, is at most 1 unit from the final rounding plus n * u(float32) / u(dtype) units from
the reduction (the classic worst-case bound; random
rounding errors grow like sqrt(n)). Verdicts: `within` (max units <= that bound), `beyond` (<= 64x the
bound: rounding noise carried through several operations), `far_beyond` (more than noise: another
computation, or a difference its inputs carried in and the step amplified).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from colbert_swap.compare.comparators import FLOATS, ulp_distance

MANTISSA = {torch.float16: 10, torch.bfloat16: 7, torch.float32: 23, torch.float64: 52}
U32 = 2.0 ** -24  # unit roundoff of the float32 accumulators
MAX_ELEMENTS = 4_000_000  # larger artifacts are measured on an evenly strided sample
BEYOND = 64  # "beyond" up to this many times the bound, "far_beyond" above
# Reduction length behind each artifact (template name): what one output element sums over.
REDUCTIONS = {
    "local_sample_embs": ("hidden", "the ColBERT linear layer's dot products (one layer of a deeper network)"),
    "embs": ("hidden", "the ColBERT linear layer's dot products (one layer of a deeper network)"),
    "sample": (1, "a cast to float16"),
    "sample_heldout": (1, "a cast to float16"),
    "prenorm_centroids": ("cluster", "the mean over a cluster's members"),
    "postnorm_centroids": ("dim", "the norm over the embedding dimension"),
    "centroids": (1, "a cast"),
    "half_centroids": (1, "a cast to float16"),
    "heldout_residual": (1, "a subtraction"),
    "avg_residual": ("numel", "the mean over every heldout residual"),
    "bucket_cutoffs": (1, "a quantile's interpolation"),
    "bucket_weights": (1, "a quantile's interpolation"),
}


@dataclass(frozen=True)
class Magnitude:
    name: str
    dtype: str
    numel: int
    measured: int  # elements measured (all of them, or a strided sample of MAX_ELEMENTS)
    mismatches: int  # among the measured
    reduction: int
    reduction_what: str
    bound_units: float  # expected rounding noise, in units of the dtype's ULP
    max_units: float
    median_units: float  # over the mismatching elements
    max_ulp: int
    max_abs: float
    median_abs: float  # over the mismatching elements
    scale: float  # median |value| of the first tensor: what "small" is measured against
    verdict: str  # within | beyond | far_beyond
    ulp_hist: dict[str, int]  # "1", "2-3", "4-7", ... -> mismatching elements
    abs_hist: dict[str, int]  # "1e-08".. decade -> mismatching elements

    @property
    def ratio(self) -> float:
        return self.max_units / self.bound_units if self.bound_units else math.inf

    def to_json(self) -> dict:
        return {**asdict(self), "ratio": self.ratio}


def reduction_length(name: str, a: torch.Tensor, config: dict, sizes: dict) -> tuple[int, str]:
    """Length of the reduction behind one element of artifact `name`, and what it is."""
    template = name.split(".")[0]
    kind, what = REDUCTIONS.get(template, (1, "no known reduction"))
    if kind == "hidden":
        n = int((config.get("model") or {}).get("hidden") or (a.shape[-1] if a.dim() else 1))
    elif kind == "dim":
        n = int(a.shape[-1]) if a.dim() else 1
    elif kind == "cluster":
        n = max(1, int(sizes.get("sample", 0) // max(1, a.shape[0] if a.dim() else 1)))
    elif kind == "numel":
        n = int(sizes.get("heldout_residual", a.numel()))
    else:
        n = int(kind)
    return n, what


def noise_bound(dtype: torch.dtype, n: int) -> float:
    """Expected worst-case rounding noise in ULP of `dtype`: 1 for the final rounding + the reduction's."""
    u = 2.0 ** -(MANTISSA[dtype] + 1)
    return 1.0 + n * min(U32, u) / u


def ulp_at(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The spacing of `dtype` floats at |x| (float64), floored at the smallest subnormal."""
    info = torch.finfo(dtype)
    _, exp = torch.frexp(x.abs().double().clamp_min(info.tiny))
    return torch.ldexp(torch.ones_like(x, dtype=torch.float64), exp - 1 - MANTISSA[dtype])


def magnitude(name: str, a: torch.Tensor, b: torch.Tensor, n: int, what: str = "") -> Magnitude | None:
    """None unless `a` and `b` are float tensors of one dtype and shape."""
    if a.dtype != b.dtype or a.shape != b.shape or a.dtype not in FLOATS:
        return None
    fa, fb = a.detach().cpu().reshape(-1), b.detach().cpu().reshape(-1)
    numel = fa.numel()
    if numel > MAX_ELEMENTS:
        step = math.ceil(numel / MAX_ELEMENTS)
        fa, fb = fa[::step], fb[::step]
    differ = fa != fb
    da, db = fa[differ], fb[differ]
    diff = (da.double() - db.double()).abs()  # (mismatches,)
    scale = float(fa.double().abs().median()) if fa.numel() else 0.0
    units = diff / ulp_at(torch.maximum(da.abs(), db.abs()).double().clamp_min(scale), a.dtype)
    ulps = ulp_distance(da, db) if da.numel() else torch.zeros(0, dtype=torch.long)
    bound = noise_bound(a.dtype, n)
    max_units = float(units.max()) if units.numel() else 0.0
    verdict = "within" if max_units <= bound else "beyond" if max_units <= BEYOND * bound else "far_beyond"
    return Magnitude(name, str(a.dtype).removeprefix("torch."), numel, fa.numel(), int(differ.sum()), n, what,
                     bound, max_units, _median(units), int(ulps.max()) if ulps.numel() else 0,
                     float(diff.max()) if diff.numel() else 0.0, _median(diff),
                     scale, verdict,
                     _log2_hist(ulps), _decade_hist(diff))


def sentence(m: Magnitude, inputs: list[str] | None = None) -> str:
    """One sentence: how big, against what noise, and the verdict. `inputs`: the stage's input artifacts
    that differ between the runs ([] when all are bitwise equal, None when unknown)."""
    sampled = f" (measured on {m.measured:,} evenly spaced of {m.numel:,} elements)" if m.measured < m.numel else ""
    size = (f"{m.mismatches:,} of {m.numel:,} elements differ{sampled}, by at most {m.max_units:.3g} {m.dtype} "
            f"ULP (median {m.median_units:.3g}; max abs {m.max_abs:.3g}, median |value| {m.scale:.3g})")
    noise = f"{m.reduction_what}, length {m.reduction:,}, rounds to at most {m.bound_units:.3g} ULP"
    why = ""
    if inputs == []:
        why = " Its stage's inputs are bitwise equal: the step itself computes differently."
    elif inputs:
        shown = ", ".join(f"`{n}`" for n in inputs[:4]) + (" ..." if len(inputs) > 4 else "")
        why = f" Its stage's inputs differ ({shown}): this carries their difference along."
    if m.verdict == "within":
        return f"{size}: within {m.dtype} rounding ({noise}).{why}"
    if m.verdict == "beyond":
        return (f"{size}: {m.ratio:.3g}x beyond one {m.dtype} rounding ({noise}), the size of rounding noise "
                f"carried through several operations.{why}")
    return f"{size}: far beyond {m.dtype} rounding ({noise}; {m.ratio:.3g}x that).{why}"


def _median(t: torch.Tensor) -> float:
    return float(t.median()) if t.numel() else 0.0


def _log2_hist(ulps: torch.Tensor) -> dict[str, int]:
    """ULP distances in power-of-two bins: 1, 2-3, 4-7, ..."""
    if not ulps.numel():
        return {}
    bins = torch.floor(torch.log2(ulps.clamp_min(1).double())).long()
    counts = torch.bincount(bins)
    return {(f"{1 << i}" if i == 0 else f"{1 << i}-{(1 << (i + 1)) - 1}"): int(c)
            for i, c in enumerate(counts.tolist()) if c}


def _decade_hist(diff: torch.Tensor) -> dict[str, int]:
    """Absolute differences per decade, keyed by the decade's lower edge ("1e-05": [1e-5, 1e-4))."""
    if not diff.numel():
        return {}
    exps = torch.floor(torch.log10(diff.clamp_min(1e-300))).long()
    lo = int(exps.min())
    counts = torch.bincount(exps - lo)
    return {f"1e{lo + i:+03d}": int(c) for i, c in enumerate(counts.tolist()) if c}
