"""The golden capture: the default run's ordered artifacts, their kinds and dtypes (the same on every
machine), and their shapes and content hashes where they were measured in this very environment (a
shape can depend on the numbers too: `ivf_pid` holds each centroid's distinct passages).

A refactoring must not change a single bit of what a capture computes. The hashes depend on the CPU's
kernels, so tests/golden/default-capture.json keeps them per environment id (provenance.env_id); record
the current machine's with `python -m tests.integration.test_golden --record` (after checking, on the
commit before the change, that they are what that commit captures)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from colbert_swap.api import compose
from colbert_swap.env.provenance import env_id, environment
from colbert_swap.tasks.capture import capture

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "default-capture.json"
pytestmark = pytest.mark.numerics


def default_capture(root: str):
    manifest = capture(compose(f"store.root={root}", "run=golden"), progress=lambda message: None)
    return {"artifacts": [[n, r.ref.kind, r.ref.dtype] for n, r in manifest.artifacts.items()],
            "hashes": {n: [r.ref.hash, list(r.ref.shape or [])] for n, r in manifest.artifacts.items()}}


def test_the_default_capture_is_the_golden_one(tmp_path):
    golden = json.loads(GOLDEN.read_text())
    got = default_capture(str(tmp_path))
    assert got["artifacts"] == golden["artifacts"]  # names in execution order, kinds, dtypes
    here = env_id(environment())
    if here not in golden["hashes"]:
        pytest.skip(f"no golden hashes measured in this environment ({here}); measured in: "
                    f"{', '.join(golden['hashes'])}")
    assert got["hashes"] == golden["hashes"][here]


if __name__ == "__main__" and "--record" in sys.argv:
    import tempfile

    with tempfile.TemporaryDirectory() as root:
        got = default_capture(root)
    golden = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {"hashes": {}}
    golden["artifacts"] = got["artifacts"]
    golden["hashes"][env_id(environment())] = got["hashes"]
    GOLDEN.write_text(json.dumps(golden, indent=1) + "\n")
    print(f"recorded {len(got['hashes'])} hashes for {env_id(environment())} in {GOLDEN}")
