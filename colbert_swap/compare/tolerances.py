"""Tolerance tables per dtype: (rtol, atol). One table per convention the seed posts use.

    >>> tolerance(BNB, torch.float16)
    (0.001, 0.0001)
"""

from __future__ import annotations

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


def tolerance(table: dict, dtype: torch.dtype) -> tuple[float, float]:
    return table.get(dtype, table["*"])
