"""Compare two values of one artifact: one frozen result with a status and the numbers behind it.

    >>> c = compare("centroids", torch.ones(3), torch.tensor([1.0, 1.0, 1.0001]))
    >>> c.status, c.mismatches, c.allclose["bnb"], c.max_ulp, c.tolerance
    ('diverged', 1, False, 839, (1.3e-06, 1e-05))

Statuses, best first: `equal` (bitwise, same dtype and shape), `order_only` (same elements per segment
where order carries no meaning, e.g. embedding ids per centroid), `allclose` (torch.allclose with the
comparison's `Tolerance`: `assert_close`'s per-dtype pairs unless configured otherwise; the pair used is
kept in the result), `diverged`, `missing` (absent from one side).

Distances in ULP come in two kinds (compare/ulp.py): `max_ulp` is the bit distance, `max_ulp_scaled` the
ULP at the artifact's scale, the unit every rounding-noise verdict uses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from colbert_swap.proof.compare.tolerances import TABLES, Tolerance, tolerance
from colbert_swap.proof.compare.ulp import FLOATS, scaled_ulps, ulp_distance, value_scale

# Where the numbers are computed: the GPU when there is one (a 100,000-passage run compares gigabytes).
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
CHUNK = 1 << 24  # elements per step of the scaled-ULP pass (bounded memory on big artifacts)


@dataclass(frozen=True)
class Comparison:
    name: str
    status: str
    stage: str = ""
    dtype: str = ""  # "float16", "json", or "float16 vs float32"
    shape: str = ""  # "34653x32" or "34653x32 vs 34640x32"
    numel: int = 0
    mismatches: int = 0  # elements that are not bitwise equal
    max_abs: float | None = None
    mad: float | None = None  # mean absolute difference over all elements
    max_ulp: int | None = None  # bit distance (representable floats in between)
    allclose: dict[str, bool] = field(default_factory=dict)  # per tolerance table
    first_mismatch: list[int] | None = None
    note: str = ""
    max_ulp_scaled: float | None = None  # ULP at scale: |a - b| / ulp(max(|a|, |b|, median |a|))
    tolerance: tuple[float, float] | None = None  # (rtol, atol) behind the status `allclose`

    @property
    def fraction(self) -> float:
        return self.mismatches / self.numel if self.numel else 0.0

    @property
    def same(self) -> bool:
        """Nothing left to explain: bitwise equal, or equal up to an order that carries no meaning."""
        return self.status in ("equal", "order_only")

    def to_json(self) -> dict:
        d = asdict(self)
        d["fraction"] = self.fraction
        return d


def compare(name: str, a: Any, b: Any, stage: str = "", segments: torch.Tensor | None = None,
            tol: Tolerance | None = None) -> Comparison:
    """`segments`: lengths of consecutive runs within which order carries no meaning (both sides agree);
    `tol`: what `allclose` means (default: `Tolerance()`, assert_close's per-dtype pairs)."""
    if a is None or b is None:
        return Comparison(name, "missing", stage, note="only in " + ("the second" if a is None else "the first"))
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        return _compare_json(name, a, b, stage)
    dtype = _fmt_dtype(a) if a.dtype == b.dtype else f"{_fmt_dtype(a)} vs {_fmt_dtype(b)}"
    shape = _fmt_shape(a) if a.shape == b.shape else f"{_fmt_shape(a)} vs {_fmt_shape(b)}"
    if a.shape != b.shape or a.dtype != b.dtype:
        return Comparison(name, "diverged", stage, dtype, shape, a.numel(), max(a.numel(), b.numel()),
                          note=f"{'shape' if a.shape != b.shape else 'dtype'} mismatch")
    pair = (tol or Tolerance()).rtol_atol(name, a.dtype)
    try:
        return _compare_tensors(name, a.detach().to(DEVICE), b.detach().to(DEVICE), stage, dtype, shape, segments,
                                pair)
    except torch.cuda.OutOfMemoryError:  # a tensor too big for the GPU's free memory: the same numbers on the CPU
        return _compare_tensors(name, a.detach().cpu(), b.detach().cpu(), stage, dtype, shape, segments, pair)


def _compare_tensors(name: str, a: torch.Tensor, b: torch.Tensor, stage: str, dtype: str, shape: str,
                     segments: torch.Tensor | None, pair: tuple[float, float]) -> Comparison:
    differ = ~((a == b) | (_isnan(a) & _isnan(b)))
    mismatches = int(differ.sum())
    tables = {t: _close(a, b, *tolerance(TABLES[t], a.dtype)) for t in TABLES}
    floats = a.dtype in FLOATS
    if mismatches == 0:
        return Comparison(name, "equal", stage, dtype, shape, a.numel(), 0, 0.0, 0.0, 0 if floats else None,
                          tables, max_ulp_scaled=0.0 if floats else None, tolerance=pair if floats else None)
    first = [int(i) for i in differ.nonzero()[0]] if a.dim() else []
    diff = (a.double() - b.double()).abs() if a.dtype != torch.bool else differ.double()
    max_ulp = int(ulp_distance(a, b).max()) if floats else None
    scaled = max_scaled_ulps(a, b, differ) if floats else None
    status, note = "diverged", ""
    if segments is not None and a.dim() == 1 and _same_per_segment(a, b, segments.to(a.device)):
        status, note = "order_only", f"same elements in each of {segments.numel()} segments, in another order"
    elif floats and _close(a, b, *pair):
        status = "allclose"
    return Comparison(name, status, stage, dtype, shape, a.numel(), mismatches, float(diff.max()), float(diff.mean()),
                      max_ulp, tables, first, note, scaled, pair if floats else None)


def max_scaled_ulps(a: torch.Tensor, b: torch.Tensor, differ: torch.Tensor | None = None) -> float:
    """The largest ULP at scale over every mismatching element (in chunks: bounded memory)."""
    scale = value_scale(a)
    fa, fb = a.reshape(-1), b.reshape(-1)
    mask = (fa != fb) if differ is None else differ.reshape(-1)
    out = 0.0
    for start in range(0, fa.numel(), CHUNK):
        m = mask[start:start + CHUNK]
        if bool(m.any()):
            out = max(out, float(scaled_ulps(fa[start:start + CHUNK][m], fb[start:start + CHUNK][m], scale).max()))
    return out


def _same_per_segment(a: torch.Tensor, b: torch.Tensor, segments: torch.Tensor) -> bool:
    if int(segments.sum()) != a.numel():
        return False
    seg = torch.repeat_interleave(torch.arange(segments.numel(), device=a.device), segments.long())

    def canonical(t: torch.Tensor) -> torch.Tensor:
        order = torch.argsort(t, stable=True)
        order = order[torch.argsort(seg[order], stable=True)]
        return t[order]

    return torch.equal(canonical(a), canonical(b))


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float, atol: float) -> bool:
    if a.dtype not in FLOATS:
        return torch.equal(a, b)
    return bool(torch.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True))


def _compare_json(name: str, a: Any, b: Any, stage: str) -> Comparison:
    if a == b:
        return Comparison(name, "equal", stage, "json", numel=1, mismatches=0)
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))
    max_abs = abs(float(a) - float(b)) if numbers else None
    return Comparison(name, "diverged", stage, "json", numel=1, mismatches=1, max_abs=max_abs, mad=max_abs,
                      note=f"{a!r} vs {b!r}" if numbers else "values differ")


def _isnan(t: torch.Tensor) -> torch.Tensor:
    return torch.isnan(t) if t.dtype in FLOATS else torch.zeros_like(t, dtype=torch.bool)


def _fmt_dtype(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _fmt_shape(t: torch.Tensor) -> str:
    return "x".join(map(str, t.shape)) or "scalar"
