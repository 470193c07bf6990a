"""Two captures in one environment are bit-identical, whether in one process or from the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from colbert_swap.colbert.index_files import index_differences
from colbert_swap.core.dag import INDEXING
from colbert_swap.colbert.stages import DAG
from colbert_swap.core.store import Store
from colbert_swap.tasks.capture import capture
from tests.conftest import TINY, quiet_progress

REPO = Path(__file__).resolve().parents[2]


def test_two_captures_are_identical_and_stored_once(tiny_cfg):
    cfg_a, cfg_b = tiny_cfg("run=det-a"), tiny_cfg("run=det-b")
    store = Store(cfg_a.store.root)
    a = capture(cfg_a, progress=quiet_progress)
    blobs_after_a = sorted(store.blobs.root.rglob("*.safetensors"))
    b = capture(cfg_b, progress=quiet_progress)

    expected = DAG.artifacts(store.get(a, "num_chunks"), INDEXING)  # not searched: no search artifacts
    assert list(a.artifacts) == expected  # every artifact, in pipeline order
    assert {k: r.ref.hash for k, r in a.artifacts.items()} == {k: r.ref.hash for k, r in b.artifacts.items()}
    assert a.rng == b.rng
    assert sorted(store.blobs.root.rglob("*.safetensors")) == blobs_after_a  # content-addressed: nothing new
    assert index_differences(store.run_dir("det-a") / "index", store.run_dir("det-b") / "index") == {}


def test_cli_capture_in_a_fresh_process_matches(tiny_cfg, store_root):
    a = capture(tiny_cfg("run=det-a"), progress=quiet_progress)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-m", "colbert_swap", "run=det-cli", f"store.root={store_root}", *TINY],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "local_sample_embs" in out.stdout and "det-cli" in out.stdout  # the summary table
    cli = Store(store_root).load("det-cli")
    assert {k: r.ref.hash for k, r in cli.artifacts.items()} == {k: r.ref.hash for k, r in a.artifacts.items()}
    assert cli.complete and cli.provenance["torch"] and cli.provenance["transformers"]
    assert {"python", "torch", "cuda", "cudnn", "gpu", "transformers", "colbert-ai", "faiss",
            "cpu_capability"} <= set(cli.provenance)


def test_recapturing_a_complete_run_is_a_no_op_and_a_changed_config_is_refused(tiny_cfg):
    import pytest

    from colbert_swap.errors import UserError

    first = capture(tiny_cfg("run=det-a"), progress=quiet_progress)
    again = capture(tiny_cfg("run=det-a"), progress=quiet_progress)
    assert again.created == first.created
    with pytest.raises(UserError, match=r"another config \(index.nbits: 2 stored, 1 now\)"):  # the keys, not hashes
        capture(tiny_cfg("run=det-a", "index.nbits=1"), progress=quiet_progress)
