"""What a run reads besides its config: the seeded checkpoint is the same bits on every CPU (it was not: torch's
normal_ gave other last bits under other kernels), and runs record the content of their checkpoint and collection,
so that two runs of one config that read different files are not compared as if they had read the same."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import xxhash

from colbert_swap.colbert.models import exact_normal
from colbert_swap.core.store import Store
from colbert_swap.errors import UserError
from colbert_swap.tasks.capture import capture
from colbert_swap.tasks.compare import compare
from tests.conftest import TINY, make_cfg, quiet_progress

REPO = Path(__file__).resolve().parents[2]


def test_exact_normal_is_pinned_bit_for_bit():
    """The draw behind every seeded checkpoint: these bits on every machine, numpy and torch (a change here changes
    every seeded model: models.BUILD must change with it)."""
    values = exact_normal(100_003, 0.02, [0, 7], chunk=4096)
    assert xxhash.xxh3_64_hexdigest(values.numpy().tobytes()) == "3b56be925ed1d899"
    assert abs(float(values.mean())) < 2e-4 and abs(float(values.std()) - 0.02) < 2e-4


def test_the_seeded_checkpoint_is_the_same_under_other_cpu_kernels_folders_and_gpus(tmp_path):
    """Built here and in a process with torch's plainest kernels (ATEN_CPU_CAPABILITY=default), another working
    directory and a GPU in sight (colbert-ai's config takes its `root` and `gpus` from those, and an H200's build
    had another digest than a CPU machine's): the same files, so runs record the same input digests."""
    code = ("import sys, torch; torch.cuda.device_count = (lambda: 1) if sys.argv[2] == 'gpu' else "
            "torch.cuda.device_count; from colbert_swap.config import ModelConfig; from colbert_swap.colbert.models "
            "import checkpoint_path; print(checkpoint_path(ModelConfig(), sys.argv[1]))")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    folders = []
    (tmp_path / "elsewhere").mkdir()
    for name, extra, cwd, gpu in (("here", {}, None, "no"),
                                  ("default", {"ATEN_CPU_CAPABILITY": "default"}, tmp_path / "elsewhere", "gpu")):
        done = subprocess.run([sys.executable, "-c", code, str(tmp_path / name), gpu], env={**env, **extra},
                              capture_output=True, text=True, timeout=600, cwd=cwd)
        assert done.returncode == 0, done.stderr[-2000:]
        folders.append(Path(done.stdout.strip().splitlines()[-1]))
    a, b = folders
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
    for path in a.iterdir():
        assert (b / path.name).read_bytes() == path.read_bytes(), path.name


def test_runs_that_read_other_files_under_one_config_are_refused_unless_forced(tmp_path):
    root = tmp_path / "store"
    cfg = lambda *o: make_cfg(f"store.root={root}", *TINY, f"out_dir={tmp_path / 'out'}", *o)  # noqa: E731
    a = capture(cfg("run=a"), progress=quiet_progress)
    assert set(a.inputs) == {"checkpoint", "collection"}
    store = Store(root)
    other = store.load("a")  # the same run, as if its checkpoint had been another machine's copy of other bits
    other.label, other.inputs = "b", {**a.inputs, "checkpoint": "0" * 32}
    store.run_dir("b").mkdir(parents=True)
    store.save(other)
    with pytest.raises(UserError, match=r"runs 'a' and 'b' read different files under one config: the checkpoint's "
                                        r"content \(digest [0-9a-f]{12} vs 000000000000\)"):
        compare(cfg("task=compare", "source=a", "target=b"), store)
    forced = compare(cfg("task=compare", "source=a", "target=b", "force=true"), store)
    assert forced.verdict.startswith("Runs a and b read different files: the checkpoint's content")


def test_a_run_is_not_extended_from_other_files_than_it_recorded(tmp_path):
    """A search added to a complete run (or a resume) reads the checkpoint again: from other files than the run
    recorded, its new artifacts would come from another model, so it is refused and the record kept."""
    from colbert_swap.tasks import run

    root = tmp_path / "store"
    cfg = lambda *o: make_cfg(f"store.root={root}", *TINY, f"out_dir={tmp_path / 'out'}", *o)  # noqa: E731
    capture(cfg("run=c"), progress=quiet_progress)
    store = Store(root)
    recorded = store.load("c")
    recorded.inputs = {**recorded.inputs, "checkpoint": "0" * 32}  # as if made from another machine's checkpoint
    store.save(recorded)
    with pytest.raises(UserError, match=r"run 'c' was computed from other files than this store holds \(the "
                                        r"checkpoint's content: digest 000000000000 recorded, [0-9a-f]{12} here\)"):
        run(cfg("task=search", "run=c", "search.num_queries=4"))
    assert store.load("c").inputs["checkpoint"] == "0" * 32 and "ranked_pids" not in store.load("c").artifacts
