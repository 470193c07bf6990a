"""perturb.threads=N: a capture computes with N threads, records them, is another environment (its own env
id), and a report of it against a default capture says so before any artifact. Holds whether or not the thread
count changes numbers on this CPU (on an AVX512 Xeon it does not; on an AVX2 EPYC faiss's k-means does)."""

from __future__ import annotations

import json

import pytest
import torch

from colbert_swap.env.provenance import env_id, environment, run_environment
from colbert_swap.runs.search import check_environment
from colbert_swap.core.store import Store
from colbert_swap.tasks import compare as compare_task
from colbert_swap.tasks.capture import capture
from colbert_swap.tasks.inject import inject
from tests.conftest import quiet_progress

OTHER = 1 if torch.get_num_threads() > 1 else 2  # perturb.threads=1, unless this machine computes on one thread


@pytest.fixture(scope="module")
def runs(tiny_cfg):
    default = capture(tiny_cfg("run=thr-default"), progress=quiet_progress)
    other = capture(tiny_cfg("run=thr-other", f"perturb.threads={OTHER}"), progress=quiet_progress)
    return default, other


def test_a_capture_records_the_thread_counts_it_computed_with(runs):
    import faiss

    default, other = runs
    here = environment()["threads"]
    assert default.provenance["threads"]["torch"] == here["torch"] == torch.get_num_threads()  # the machine's
    assert default.provenance["threads"]["faiss"] == faiss.omp_get_max_threads()
    t = other.provenance["threads"]
    assert t["torch"] == t["faiss"] == other.provenance["torch_threads"] == OTHER
    assert {lib["num_threads"] for lib in t["blas"]} == {OTHER}
    assert torch.get_num_threads() == here["torch"]  # the process is as it was after the capture
    assert other.config["perturb"]["threads"] == OTHER


def test_other_thread_counts_are_another_environment(runs):
    default, other = runs
    assert default.env != other.env
    assert other.env == env_id(run_environment(other.config)) and default.env == env_id(environment())
    assert all(other.computed_in(n) == other.env for n in other.artifacts)
    check_environment(other)  # a search of it computes here, with its threads: no ElsewhereError


def test_the_compare_report_says_first_that_the_environments_differ(runs, tiny_cfg, tmp_path):
    cfg = tiny_cfg("task=compare", "source=thr-other", "target=thr-default", f"out_dir={tmp_path}")
    assert compare_task.run(cfg) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["verdict"].startswith("Runs thr-other and thr-default differ in their environment: thread counts "
                                        f"(faiss/OpenMP {OTHER} vs ")
    markdown = (tmp_path / "report.md").read_text()
    row = next(line for line in markdown.splitlines() if line.startswith("| threads: faiss (OpenMP)"))
    assert row.split("|")[2].strip() == str(OTHER) and "differs" in row
    assert "| BLAS and OpenMP libraries" in markdown and "| CPUs usable / present" in markdown


def test_a_replay_of_a_run_with_its_threads_computes_with_them(runs, tiny_cfg):
    default, other = runs
    cfg = tiny_cfg("source=thr-default", "target=thr-other", "inject=prenorm_centroids")
    store = Store(cfg.store.root)
    result = inject(cfg, store, ["prenorm_centroids"], progress=quiet_progress)
    assert result.verdict.startswith("Runs thr-default and thr-other differ in their environment: thread counts")
    replayed = result.replayed
    assert replayed.env == other.env  # computed with the target's perturb.threads, here
    recomputed = [n for n in result.downstream if n in replayed.artifacts]
    assert recomputed and all(replayed.computed_in(n) == other.env for n in recomputed)
