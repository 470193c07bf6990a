"""Tolerance tables per dtype: (rtol, atol). One table per convention the seed posts use, and the
`Tolerance` a comparison applies: a table, then per-artifact overrides.

    >>> tolerance(BNB, torch.float16)
    (0.001, 0.0001)
    >>> Tolerance("bnb", {"embs": (1e-2, 1e-3)}).rtol_atol("embs.0", torch.float16)
    (0.01, 0.001)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

# torch.allclose's own defaults, whatever the dtype.
TORCH_DEFAULT = {"*": (1e-5, 1e-8)}

# bitsandbytes tests/test_optim.py (the seed post's "bnb" column): fp32, bf16, everything else.
BNB = {torch.float32: (1e-5, 1e-6), torch.bfloat16: (1e-2, 1e-3), "*": (1e-3, 1e-4)}

# torch.testing.assert_close defaults (torch/testing/_comparison.py).
ASSERT_CLOSE = {
    torch.float16: (1e-3, 1e-5), torch.bfloat16: (1.6e-2, 1e-5), torch.float32: (1.3e-6, 1e-5),
    torch.float64: (1e-7, 1e-7), "*": (0.0, 0.0),
}

TABLES = {"torch": TORCH_DEFAULT, "bnb": BNB, "assert_close": ASSERT_CLOSE}
DEFAULT_TABLE = "assert_close"  # per dtype, as torch.testing compares


def tolerance(table: dict, dtype: torch.dtype) -> tuple[float, float]:
    return table.get(dtype, table["*"])


@dataclass(frozen=True)
class Tolerance:
    """What the status `allclose` means: torch.allclose with `table`'s (rtol, atol) for the dtype, unless
    the artifact (by name, `embs.0`, or template, `embs`) has its own pair in `per_artifact`."""

    table: str = DEFAULT_TABLE
    per_artifact: dict[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self):
        if self.table not in TABLES:
            from colbert_swap.errors import UserError

            raise UserError(f"compare.tolerance={self.table!r} is unknown; expected one of: {', '.join(TABLES)}")

    @classmethod
    def from_config(cls, compare_cfg, declared: dict[str, tuple[float, float]] | None = None) -> "Tolerance":
        """compare.tolerance and compare.per_artifact (which win over tolerances declared on the stages)."""
        from colbert_swap.errors import UserError

        def value(key: str):
            if compare_cfg is None:
                return None
            return compare_cfg.get(key) if hasattr(compare_cfg, "get") else getattr(compare_cfg, key, None)

        table = value("tolerance") or DEFAULT_TABLE
        given = value("per_artifact") or {}
        try:
            overrides = {str(k): (float(v[0]), float(v[1])) for k, v in dict(given).items() if len(v) == 2}
            assert len(overrides) == len(given)
        except (TypeError, ValueError, AssertionError):
            raise UserError(f"compare.per_artifact={given!r}: expected {{ARTIFACT: [rtol, atol], ...}}, e.g. "
                            "compare.per_artifact={embs:[1e-3,1e-5]}") from None
        return cls(table, {**(declared or {}), **overrides})

    def rtol_atol(self, name: str, dtype: torch.dtype) -> tuple[float, float]:
        for key in (name, name.split(".")[0]):
            if key in self.per_artifact:
                return self.per_artifact[key]
        return tolerance(TABLES[self.table], dtype)

    def key(self) -> tuple:
        return (self.table, tuple(sorted(self.per_artifact.items())))

    def to_json(self) -> dict:
        per_dtype = {str(k).removeprefix("torch."): list(v) for k, v in TABLES[self.table].items()}
        return {"table": self.table, "per_dtype": per_dtype,
                "per_artifact": {k: list(v) for k, v in self.per_artifact.items()}}

    def describe(self) -> str:
        """For a report's legend: which tolerance the status `allclose` stands for."""
        pairs = ", ".join(f"{str(k).removeprefix('torch.')} {v[0]:g}/{v[1]:g}" for k, v in TABLES[self.table].items()
                          if k != "*")
        rest = TABLES[self.table]["*"]
        text = f"`{self.table}` (rtol/atol: {pairs + ', ' if pairs else ''}other dtypes {rest[0]:g}/{rest[1]:g})"
        if self.per_artifact:
            text += "; per artifact: " + ", ".join(f"`{k}` {v[0]:g}/{v[1]:g}" for k, v in self.per_artifact.items())
        return text
