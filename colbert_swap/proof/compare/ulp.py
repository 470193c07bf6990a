"""Two ways to count the distance between floats in units of the last place (ULP), and which is which.

- **bit distance** (`ulp_distance`): how many representable floats lie between a and b. Exact, but near
  zero it counts billions of tiny floats: 1e-9 and -1e-9 in float32 are ~1.6e9 apart.
- **ULP at scale** (`scaled_ulps`): |a - b| divided by the spacing of the dtype's floats at
  max(|a|, |b|, s), where s is the artifact's median |value|. Rounding errors of a sum scale with its
  operands, not with a result that cancels to ~0, so this is the unit rounding noise is measured in; it is
  what every verdict on rounding noise uses.

    >>> a = torch.tensor([0.5, 0.5, 1e-9]); b = torch.tensor([0.5, 0.5, -1e-9])
    >>> int(ulp_distance(a, b).max()) > 10**9, float(scaled_ulps(a, b, value_scale(a)).max()) < 1
    (True, True)
"""

from __future__ import annotations

import math

import torch

FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
MANTISSA = {torch.float16: 10, torch.bfloat16: 7, torch.float32: 23, torch.float64: 52}
SCALE_SAMPLE = 4_000_000  # the median |value| is taken over at most this many evenly spaced elements
_INT_VIEW = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32,
             torch.float64: torch.int64}


def ulp_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Bit distance: representable floats between same-dtype a and b (0 for +0 vs -0), as int64."""
    view = _INT_VIEW[a.dtype]
    bits = torch.finfo(a.dtype).bits

    def ordered(t: torch.Tensor) -> torch.Tensor:
        i = t.contiguous().view(view).long()
        magnitude = i & ((1 << (bits - 1)) - 1)
        return torch.where(i < 0, -magnitude, i)

    return (ordered(a) - ordered(b)).abs()


def ulp_at(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The spacing of `dtype` floats at |x| (float64), floored at the smallest normal."""
    info = torch.finfo(dtype)
    _, exp = torch.frexp(x.abs().double().clamp_min(info.tiny))
    return torch.ldexp(torch.ones_like(x, dtype=torch.float64), exp - 1 - MANTISSA[dtype])


def value_scale(t: torch.Tensor) -> float:
    """The median |value| of a float tensor (over an evenly strided sample of at most SCALE_SAMPLE)."""
    flat = t.detach().reshape(-1)
    if not flat.numel():
        return 0.0
    if flat.numel() > SCALE_SAMPLE:
        flat = flat[:: math.ceil(flat.numel() / SCALE_SAMPLE)]
    return float(flat.double().abs().median())


def scaled_ulps(a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    """ULP at scale: |a - b| / ulp(max(|a|, |b|, scale)) in a's dtype, as float64."""
    diff = (a.double() - b.double()).abs()
    return diff / ulp_at(torch.maximum(a.abs(), b.abs()).double().clamp_min(scale), a.dtype)
