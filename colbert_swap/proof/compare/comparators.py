"""Compare two values of one artifact: one frozen result with a typed `Status` and the numbers behind it.

    >>> c = compare("centroids", torch.ones(3), torch.tensor([1.0, 1.0, 1.0001]))
    >>> c.status, c.mismatches, c.allclose["bnb"], c.max_ulp, c.tolerance
    (<Status.DIVERGED: 'diverged'>, 1, False, 839, (1.3e-06, 1e-05))
    >>> c.status == "diverged", f"{c.status}", c.to_json()["status"]
    (True, 'diverged', 'diverged')

Statuses (`Status`, a str: JSON, f-strings, tables and `== "diverged"` see the plain word), best first:
`equal` (bitwise, same dtype and shape), `order_only` (same elements per segment where order carries no
meaning, e.g. embedding ids per centroid), `allclose` (torch.allclose with the comparison's `Tolerance`:
`assert_close`'s per-dtype pairs unless configured otherwise; the pair used is kept in the result),
`diverged`, `unread` (the two hashes differ, so not bitwise equal, but one side's bytes are not in this store: a
run imported from a bundle without them; not compared), `missing` (absent from one side). `SAME`: the two that
leave nothing to explain.

Which comparator compares an artifact follows from the facts its stage declares (core/dag.py `Facts`, read
with `DAG.facts(name)`): `comparator(facts)` is the first of `COMPARATORS` whose `applies(facts)` holds, and
`Elementwise`, last, applies to every artifact. `OrderFree` (`Facts.order_free`) reads the lengths of the
segments within which order carries no meaning. The run comparison (compare/runs.py) asks `comparator` for
every artifact, loads what its `reads` names from both runs into a `Context`, and keys its memo on them.

To add a comparator: one subclass of `Comparator` in this module, with `applies(facts)`, `compare(name, a, b,
ctx) -> Comparison` (`compare()` below and its helpers do the element-wise numbers) and, when it needs other
artifacts of both runs, `reads(facts)`; then one instance in `COMPARATORS`, before the more general ones
(`Elementwise` stays last). Nothing else changes. Its results use the statuses above: a new `Status` member is
a change of every report's vocabulary (proof/report/plots.py and sweep.py colour each status).

Distances in ULP come in two kinds (compare/ulp.py): `max_ulp` is the bit distance, `max_ulp_scaled` the
ULP at the artifact's scale, the unit every rounding-noise verdict uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

import torch

from colbert_swap.core.dag import Facts
from colbert_swap.proof.compare.tolerances import TABLES, Tolerance, tolerance
from colbert_swap.proof.compare.ulp import FLOATS, scaled_ulps, ulp_distance, value_scale


class Status(str, Enum):
    """A comparison's verdict, best first. A str whose str(), format() and JSON are the plain word ("equal"):
    a str-mixin Enum alone prints "Status.EQUAL" from str(), and from f-strings on Python 3.11 and later."""

    EQUAL = "equal"
    ORDER_ONLY = "order_only"
    ALLCLOSE = "allclose"
    DIVERGED = "diverged"
    UNREAD = "unread"  # the hashes differ (not bitwise equal); the values are not in this store: not compared
    MISSING = "missing"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


# Nothing left to explain: bitwise equal, or equal up to an order that carries no meaning.
SAME = (Status.EQUAL, Status.ORDER_ONLY)

# Where the numbers are computed: the GPU when there is one (a 100,000-passage run compares gigabytes).
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
CHUNK = 1 << 24  # elements per step of the scaled-ULP pass (bounded memory on big artifacts)


@dataclass(frozen=True)
class Comparison:
    name: str
    status: Status  # a plain string is taken as its Status ("equal" -> Status.EQUAL)
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

    def __post_init__(self):
        object.__setattr__(self, "status", Status(self.status))

    @property
    def fraction(self) -> float:
        return self.mismatches / self.numel if self.numel else 0.0

    @property
    def same(self) -> bool:
        """Nothing left to explain: bitwise equal, or equal up to an order that carries no meaning."""
        return self.status in SAME

    def to_json(self) -> dict:
        d = asdict(self)
        d["status"] = self.status.value
        d["fraction"] = self.fraction
        return d


def compare(name: str, a: Any, b: Any, stage: str = "", segments: torch.Tensor | None = None,
            tol: Tolerance | None = None) -> Comparison:
    """`segments`: lengths of consecutive runs within which order carries no meaning (both sides agree);
    `tol`: what `allclose` means (default: `Tolerance()`, assert_close's per-dtype pairs)."""
    if a is None or b is None:
        return Comparison(name=name, status=Status.MISSING, stage=stage,
                          note="only in " + ("the second" if a is None else "the first"))
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        return _compare_json(name, a, b, stage)
    dtype = _fmt_dtype(a) if a.dtype == b.dtype else f"{_fmt_dtype(a)} vs {_fmt_dtype(b)}"
    shape = _fmt_shape(a) if a.shape == b.shape else f"{_fmt_shape(a)} vs {_fmt_shape(b)}"
    if a.shape != b.shape or a.dtype != b.dtype:
        return Comparison(name=name, status=Status.DIVERGED, stage=stage, dtype=dtype, shape=shape, numel=a.numel(),
                          mismatches=max(a.numel(), b.numel()),
                          note=f"{'shape' if a.shape != b.shape else 'dtype'} mismatch")
    pair = (tol or Tolerance()).rtol_atol(name, a.dtype)
    try:
        return _compare_tensors(name, a.detach().to(DEVICE), b.detach().to(DEVICE), stage, dtype, shape, segments,
                                pair)
    except torch.cuda.OutOfMemoryError:  # a tensor too big for the GPU's free memory: the same numbers on the CPU
        return _compare_tensors(name, a.detach().cpu(), b.detach().cpu(), stage, dtype, shape, segments, pair)


@dataclass(frozen=True)
class Context:
    """What a comparator is given besides the two values: where they come from, what `allclose` means, the
    artifact's facts, and the artifacts its `reads` names, of each side (absent where that run has none)."""

    stage: str = ""
    tol: Tolerance = field(default_factory=Tolerance)
    facts: Facts = field(default_factory=Facts)
    a: Mapping[str, Any] = field(default_factory=dict)
    b: Mapping[str, Any] = field(default_factory=dict)


class Comparator:
    """One way to compare two values of an artifact, chosen by the facts its stage declares (module docstring:
    how to add one)."""

    def applies(self, facts: Facts) -> bool:
        """Whether this comparator compares an artifact with these facts (the first in COMPARATORS wins)."""
        raise NotImplementedError

    def reads(self, facts: Facts) -> tuple[str, ...]:
        """Other artifacts it needs from both runs: loaded into `Context.a`/`.b`, and part of the memo key."""
        return ()

    def compare(self, name: str, a: Any, b: Any, ctx: Context) -> Comparison:
        raise NotImplementedError


class OrderFree(Comparator):
    """`Facts.order_free` names the lengths of segments within which order carries no meaning (ivf: embedding
    ids per centroid): when both runs have the same lengths, the same elements per segment are `order_only`."""

    def applies(self, facts: Facts) -> bool:
        return bool(facts.order_free)

    def reads(self, facts: Facts) -> tuple[str, ...]:
        return (facts.order_free,)

    def compare(self, name: str, a: Any, b: Any, ctx: Context) -> Comparison:
        la, lb = ctx.a.get(ctx.facts.order_free), ctx.b.get(ctx.facts.order_free)
        same = la is not None and lb is not None and la.shape == lb.shape and bool((la == lb).all())
        return compare(name, a, b, stage=ctx.stage, segments=la if same else None, tol=ctx.tol)


class Elementwise(Comparator):
    """Every element in place: `compare()`. The default, last in COMPARATORS."""

    def applies(self, facts: Facts) -> bool:
        return True

    def compare(self, name: str, a: Any, b: Any, ctx: Context) -> Comparison:
        return compare(name, a, b, stage=ctx.stage, tol=ctx.tol)


# In order: the first whose `applies` holds compares the artifact; Elementwise, which applies to all, last.
COMPARATORS: tuple[Comparator, ...] = (OrderFree(), Elementwise())


def comparator(facts: Facts) -> Comparator:
    """The comparator of an artifact with these facts (`DAG.facts(name)`)."""
    return next(c for c in COMPARATORS if c.applies(facts))


def _compare_tensors(name: str, a: torch.Tensor, b: torch.Tensor, stage: str, dtype: str, shape: str,
                     segments: torch.Tensor | None, pair: tuple[float, float]) -> Comparison:
    differ = ~((a == b) | (_isnan(a) & _isnan(b)))
    mismatches = int(differ.sum())
    tables = {t: _close(a, b, *tolerance(TABLES[t], a.dtype)) for t in TABLES}
    floats = a.dtype in FLOATS
    if mismatches == 0:
        return Comparison(name=name, status=Status.EQUAL, stage=stage, dtype=dtype, shape=shape, numel=a.numel(),
                          mismatches=0, max_abs=0.0, mad=0.0, max_ulp=0 if floats else None, allclose=tables,
                          max_ulp_scaled=0.0 if floats else None, tolerance=pair if floats else None)
    first = [int(i) for i in differ.nonzero()[0]] if a.dim() else []
    diff = (a.double() - b.double()).abs() if a.dtype != torch.bool else differ.double()
    max_ulp = int(ulp_distance(a, b).max()) if floats else None
    scaled = max_scaled_ulps(a, b, differ) if floats else None
    status, note = Status.DIVERGED, ""
    if segments is not None and a.dim() == 1 and _same_per_segment(a, b, segments.to(a.device)):
        status, note = Status.ORDER_ONLY, f"same elements in each of {segments.numel()} segments, in another order"
    elif floats and _close(a, b, *pair):
        status = Status.ALLCLOSE
    return Comparison(name=name, status=status, stage=stage, dtype=dtype, shape=shape, numel=a.numel(),
                      mismatches=mismatches, max_abs=float(diff.max()), mad=float(diff.mean()), max_ulp=max_ulp,
                      allclose=tables, first_mismatch=first, note=note, max_ulp_scaled=scaled,
                      tolerance=pair if floats else None)


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
        return Comparison(name=name, status=Status.EQUAL, stage=stage, dtype="json", numel=1, mismatches=0)
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))
    max_abs = abs(float(a) - float(b)) if numbers else None
    return Comparison(name=name, status=Status.DIVERGED, stage=stage, dtype="json", numel=1, mismatches=1,
                      max_abs=max_abs, mad=max_abs, note=f"{a!r} vs {b!r}" if numbers else "values differ")


def _isnan(t: torch.Tensor) -> torch.Tensor:
    return torch.isnan(t) if t.dtype in FLOATS else torch.zeros_like(t, dtype=torch.bool)


def _fmt_dtype(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _fmt_shape(t: torch.Tensor) -> str:
    return "x".join(map(str, t.shape)) or "scalar"
