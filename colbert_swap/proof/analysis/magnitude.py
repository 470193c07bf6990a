"""How big a float difference is, compared with the rounding noise of its dtype.

    >>> m = magnitude("sample", torch.tensor([1.0, 2.0]).half(), torch.tensor([1.0, 2.002]).half(), 1)
    >>> m.verdict, m.max_units
    ('within', 1.0)

A difference is measured in *ULP at scale* (compare/ulp.py): |a - b| / ulp(max(|a|, |b|, s)) in the
artifact's dtype, where s is the artifact's median magnitude: rounding errors of a sum scale with its
operands, not with its result, so a value that cancels to nearly zero is not held to its own tiny ULP (the
bit distance, `max_ulp_bits`, counts billions of floats between two tiny values of opposite sign). It is
the same number as the comparison table's "max ULP at scale", over every element. The expected
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

from colbert_swap.core.dag import Reduction
from colbert_swap.proof.compare.ulp import FLOATS, MANTISSA, scaled_ulps, ulp_distance, value_scale

U32 = 2.0 ** -24  # unit roundoff of the float32 accumulators
MAX_ELEMENTS = 4_000_000  # medians and histograms of more mismatches use an evenly strided sample of them
CHUNK = 1 << 24  # elements per step of the exact pass (max, counts)
BEYOND = 64  # "beyond" up to this many times the bound, "far_beyond" above
NO_REDUCTION = Reduction.over(1, "no known reduction")  # an artifact whose stage declares none


@dataclass(frozen=True)
class Magnitude:
    name: str
    dtype: str
    numel: int
    sampled: int  # mismatches behind the medians and histograms (all of them, or a strided sample)
    mismatches: int  # over every element
    reduction: int
    reduction_what: str
    bound_units: float  # expected rounding noise, in ULP at scale of the dtype
    max_units: float  # max ULP at scale, over every element (= the comparison's max_ulp_scaled)
    median_units: float  # over the mismatching elements
    max_ulp_bits: int  # max bit distance, over every element (= the comparison's max_ulp)
    max_abs: float
    median_abs: float  # over the mismatching elements
    scale: float  # median |value| of the first tensor: what "small" is measured against
    verdict: str  # within | beyond | far_beyond
    ulp_hist: dict[str, int]  # ULP at scale: "<1", "1", "2-3", "4-7", ... -> mismatching elements
    abs_hist: dict[str, int]  # "1e-08".. decade -> mismatching elements

    @property
    def ratio(self) -> float:
        return self.max_units / self.bound_units if self.bound_units else math.inf

    def to_json(self) -> dict:
        return {**asdict(self), "ratio": self.ratio}


def reduction_length(name: str, a: torch.Tensor, config: dict, sizes: dict) -> tuple[int, str]:
    """Length of the reduction behind one element of artifact `name`, and what it is: the `Reduction` declared
    on its stage (none: length 1) resolved for `a`'s shape and the run's `sizes` (divergence._Pair.sizes: the
    checkpoint's hidden size; the rows and the elements of the input it reduces, `Reduction.of`)."""
    from colbert_swap.colbert.stages import DAG

    reduction = DAG.facts(name).reduction or NO_REDUCTION
    n = reduction.resolve(tuple(a.shape), hidden=sizes.get("hidden"), clustered=sizes.get("clustered"),
                          reduced=sizes.get("reduced"))
    return n, reduction.what


def noise_bound(dtype: torch.dtype, n: int) -> float:
    """Expected worst-case rounding noise in ULP of `dtype`: 1 for the final rounding + the reduction's."""
    u = 2.0 ** -(MANTISSA[dtype] + 1)
    return 1.0 + n * min(U32, u) / u


def magnitude(name: str, a: torch.Tensor, b: torch.Tensor, n: int, what: str = "") -> Magnitude | None:
    """None unless `a` and `b` are float tensors of one dtype and shape. Max, counts and the verdict are
    exact over every element; medians and histograms use at most MAX_ELEMENTS mismatches."""
    if a.dtype != b.dtype or a.shape != b.shape or a.dtype not in FLOATS:
        return None
    fa, fb = a.detach().cpu().reshape(-1), b.detach().cpu().reshape(-1)
    scale = value_scale(fa)
    mismatches = int((fa != fb).sum())
    stride = max(1, math.ceil(mismatches / MAX_ELEMENTS))
    max_units = max_abs = 0.0
    max_bits, seen, kept_units, kept_diff = 0, 0, [], []
    for start in range(0, fa.numel(), CHUNK):
        xa, xb = fa[start:start + CHUNK], fb[start:start + CHUNK]
        differ = xa != xb
        da, db = xa[differ], xb[differ]
        if not da.numel():
            continue
        units = scaled_ulps(da, db, scale)
        diff = (da.double() - db.double()).abs()
        max_units, max_abs = max(max_units, float(units.max())), max(max_abs, float(diff.max()))
        max_bits = max(max_bits, int(ulp_distance(da, db).max()))
        pick = torch.arange((-seen) % stride, da.numel(), stride)  # every stride-th mismatch overall
        kept_units.append(units[pick])
        kept_diff.append(diff[pick])
        seen += da.numel()
    units = torch.cat(kept_units) if kept_units else torch.zeros(0, dtype=torch.float64)
    diff = torch.cat(kept_diff) if kept_diff else torch.zeros(0, dtype=torch.float64)
    bound = noise_bound(a.dtype, n)
    verdict = "within" if max_units <= bound else "beyond" if max_units <= BEYOND * bound else "far_beyond"
    return Magnitude(name, str(a.dtype).removeprefix("torch."), fa.numel(), units.numel(), mismatches, n, what,
                     bound, max_units, _median(units), max_bits, max_abs, _median(diff), scale, verdict,
                     _log2_hist(units), _decade_hist(diff))


def sentence(m: Magnitude, inputs: list[str] | None = None) -> str:
    """One sentence: how big, against what noise, and the verdict. `inputs`: the stage's input artifacts
    that differ between the runs ([] when all are bitwise equal, None when unknown)."""
    sampled = f"; medians over {m.sampled:,} evenly spaced of them" if m.sampled < m.mismatches else ""
    size = (f"{m.mismatches:,} of {m.numel:,} elements differ, by at most {m.max_units:.3g} {m.dtype} ULP at scale "
            f"(median {m.median_units:.3g}; max abs {m.max_abs:.3g}, median |value| {m.scale:.3g}; bit distance up "
            f"to {m.max_ulp_bits:,}{sampled})")
    noise = f"{m.reduction_what}, length {m.reduction:,}, rounds to at most {m.bound_units:.3g} ULP at scale"
    if inputs:  # the stage read other inputs: its own rounding bound says nothing about this difference
        shown = ", ".join(f"`{n}`" for n in inputs[:4]) + (" ..." if len(inputs) > 4 else "")
        return (f"{size}. Its stage's inputs differ ({shown}): this carries their difference along; it is not "
                f"rounding noise of this step ({noise}).")
    why = " Its stage's inputs are bitwise equal: the step itself computes differently." if inputs == [] else ""
    if m.verdict == "within":
        return f"{size}: within {m.dtype} rounding ({noise}).{why}"
    if m.verdict == "beyond":
        return (f"{size}: {m.ratio:.3g}x beyond one {m.dtype} rounding ({noise}), the size of rounding noise "
                f"carried through several operations.{why}")
    return f"{size}: far beyond {m.dtype} rounding ({noise}; {m.ratio:.3g}x that).{why}"


def _median(t: torch.Tensor) -> float:
    return float(t.median()) if t.numel() else 0.0


def _log2_hist(units: torch.Tensor) -> dict[str, int]:
    """ULP at scale in power-of-two bins: <1, 1, 2-3, 4-7, ... (a bin's key is its lower edge's range)."""
    if not units.numel():
        return {}
    below = int((units < 1).sum())
    bins = torch.floor(torch.log2(units[units >= 1].double())).long()
    counts = torch.bincount(bins) if bins.numel() else torch.zeros(0, dtype=torch.long)
    out = {"<1": below} if below else {}
    out.update({(f"{1 << i}" if i == 0 else f"{1 << i}-{(1 << (i + 1)) - 1}"): int(c)
                for i, c in enumerate(counts.tolist()) if c})
    return out


def _decade_hist(diff: torch.Tensor) -> dict[str, int]:
    """Absolute differences per decade, keyed by the decade's lower edge ("1e-05": [1e-5, 1e-4))."""
    if not diff.numel():
        return {}
    exps = torch.floor(torch.log10(diff.clamp_min(1e-300))).long()
    lo = int(exps.min())
    counts = torch.bincount(exps - lo)
    return {f"1e{lo + i:+03d}": int(c) for i, c in enumerate(counts.tolist()) if c}
