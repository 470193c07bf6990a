"""Explicit random generators, so a stage can be replayed alone from a recorded state.

colbert-ai draws from the *global* generators its Launcher seeds with 12345: python's `random` for
`sample_pids` and torch's CPU generator for the `sample` shuffle. We seed the globals the same way, build
the model at the same point (model construction may draw), then copy the global states into a
`RngStream` that the stages draw from instead. Same states, same numbers, nothing global touched later.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch


def seed_globals(seed: int) -> None:
    """colbert.infra.launcher.set_seed."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


@dataclass
class RngStream:
    python: random.Random
    torch: torch.Generator

    @classmethod
    def from_globals(cls) -> "RngStream":
        py = random.Random()
        py.setstate(random.getstate())
        gen = torch.Generator()
        gen.set_state(torch.get_rng_state())
        return cls(python=py, torch=gen)

    def state(self) -> dict:
        version, internal, gauss = self.python.getstate()
        return {"python": {"version": version, "state": list(internal), "gauss": gauss},
                "torch": self.torch.get_state()}  # uint8 tensor

    @classmethod
    def from_state(cls, state: dict) -> "RngStream":
        py = random.Random()
        p = state["python"]
        py.setstate((p["version"], tuple(p["state"]), p["gauss"]))
        gen = torch.Generator()
        gen.set_state(state["torch"].clone())
        return cls(python=py, torch=gen)
