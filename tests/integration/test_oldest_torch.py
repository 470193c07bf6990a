"""The oldest torch the README promises, torch 1.13.1, in a venv of its own: capture, compare, inject, locate.

The venv is built by the project's own environment code (`environments.ensure` on conf/env/axes.yaml's
`torch-1.13.1` spec) into COLBERT_SWAP_ENV_CACHE, or ~/.cache/colbert_swap/envs, so a later run on the same
machine reuses it; the commands run there through `environments.run_in` (its own TORCH_EXTENSIONS_DIR, so
colbert-ai's C++ extension is compiled once for that torch). Every task writes its report.json under
`out_dir=`, and the assertions read those, not the console.

Marked `oldest_torch` and left out of the plain `python -m pytest` (pyproject's addopts: `-m 'not
oldest_torch'`): it builds a venv (about 20 s with uv's cache filled, minutes on a fresh machine) and
compiles the extension there. `.ci/run` runs it: `python -m pytest -m oldest_torch -p no:cacheprovider`.
Running only this file needs the marker too: `python -m pytest -m oldest_torch tests/integration/test_oldest_torch.py`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from colbert_swap.env.venvs import ensure, load_spec, run_in

pytestmark = pytest.mark.oldest_torch

OLDEST = "torch-1.13.1"  # README: "torch 1.13.1 works too, in an environment of its own"
BASE, SCALED = "base", "scaled"  # the tiny default run, and the same with one BERT layer's weights scaled


def env_cache() -> Path:
    return Path(os.environ.get("COLBERT_SWAP_ENV_CACHE") or Path.home() / ".cache" / "colbert_swap" / "envs")


class Oldest:
    """The torch 1.13.1 venv and one store of its runs."""

    def __init__(self, root: Path):
        self.spec = load_spec(OLDEST)
        self.python = ensure(self.spec, env_cache(), print)
        self.store, self.out, self.log = root / "store", root / "out", root / "commands.log"

    def run(self, name: str, *args: str) -> dict:
        """`python -m colbert_swap ARGS` in the venv; must exit 0; its report.json."""
        out = self.out / name
        done = run_in(self.spec, self.python, [f"store.root={self.store}", f"out_dir={out}", *args], self.log)
        tail = "".join(self.log.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-30:])
        assert done.returncode == 0, f"`{' '.join(args)}` exited {done.returncode} under {OLDEST}:\n{tail}"
        return json.loads((out / "report.json").read_text())

    def manifest(self, label: str) -> dict:
        return json.loads((self.store / "runs" / label / "manifest.json").read_text())


@pytest.fixture(scope="module")
def oldest(tmp_path_factory) -> Oldest:
    env = Oldest(tmp_path_factory.mktemp("oldest-torch"))
    env.run("capture-base", f"run={BASE}")
    env.run("capture-scaled", f"run={SCALED}", "perturb=scale_layer")
    return env


def test_runs_are_captured_under_torch_1_13_1(oldest):
    for label in (BASE, SCALED):
        manifest = oldest.manifest(label)
        assert manifest["complete"] is True
        assert manifest["provenance"]["torch"].split("+")[0] == "1.13.1"  # e.g. 1.13.1+cu117 from PyPI
    assert oldest.manifest(SCALED)["config"]["perturb"]["scale_module"] == "bert.encoder.layer.0.output.dense"
    assert oldest.manifest(BASE)["config"]["perturb"]["scale_module"] is None


def test_compare_finds_local_sample_embs_first(oldest):
    report = oldest.run("compare", "task=compare", f"source={SCALED}", f"target={BASE}")
    assert report["first_diverged"] == ["local_sample_embs"]
    assert report["whole_run"]["identical"] is False
    assert {"local_sample_embs", "embs.0", "centroids"} <= set(report["whole_run"]["differing"])
    assert report["whole_run"]["index_files_identical"] is False


def test_inject_local_sample_embs(oldest):
    report = oldest.run("inject", "inject=local_sample_embs", f"source={SCALED}", f"target={BASE}")
    replay = f"{BASE}+local_sample_embs@{SCALED}"
    assert report["injected"] == ["local_sample_embs"]
    assert report["replay_run"] == replay
    assert oldest.manifest(replay)["provenance"]["torch"].split("+")[0] == "1.13.1"
    differing = set(report["whole_run"]["differing"])
    # What only reads local_sample_embs (k-means and what follows from its centroids) now equals the source's;
    # the passages' own embeddings are outside the injection's reach and still differ.
    assert not differing & {"local_sample_embs", "sample", "prenorm_centroids", "centroids", "bucket_cutoffs",
                            "avg_residual"}
    assert "embs.0" in differing
    assert report["whole_run"]["identical"] is False


def test_locate_names_local_sample_embs_and_embs(oldest):
    report = oldest.run("locate", "task=locate", f"source={SCALED}", f"target={BASE}")
    assert report["root_cause"] == ["local_sample_embs", "embs"]
    assert report["whole_run"]["identical"] is True
    assert report["whole_run"]["differing"] == []
    assert report["whole_run"]["index_files_identical"] is True
    assert "makes every artifact identical" in report["verdict"]
    replay = report["replay_run"]
    assert oldest.manifest(replay)["provenance"]["torch"].split("+")[0] == "1.13.1"
