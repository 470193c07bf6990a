"""The determinism check: a stage run again on a run's own inputs, in this process and in a fresh one, says
whether it repeats itself; `locate` calls a root-cause stage that does not repeat itself noise, not a cause.

The stage that does not repeat itself is planted (`perturb.noise=prenorm_centroids`: a tiny nudge drawn from
os.urandom at every run), so what is asserted holds on any CPU: every other stage of the tiny capture is
bitwise reproducible in one process and across processes on every machine (the thread count is not varied:
that k-means keeps its bits across thread counts is a property of the CPU, checked by `.ci/run`)."""

from __future__ import annotations

import json

import pytest
import torch

from colbert_swap.colbert import infra
from colbert_swap.study.determinism import PROCESSES, REPRODUCIBLE, RUN_TO_RUN, THREADS, classify
from colbert_swap.errors import UserError
from colbert_swap.core.store import Store
from colbert_swap.tasks import determinism as task
from colbert_swap.tasks import locate as locate_task
from colbert_swap.tasks.capture import capture
from colbert_swap.tasks.locate import locate
from colbert_swap.tasks.locate import verdict as locate_verdict
from tests.conftest import quiet_progress

pytestmark = pytest.mark.numerics

NOISE = "perturb.noise=prenorm_centroids"


@pytest.fixture(scope="module")
def runs(tiny_cfg):
    """A plain tiny capture, and two captures whose k-means output gets noise of its own at every run."""
    return {"plain": capture(tiny_cfg("run=det-plain"), progress=quiet_progress),
            "noisy1": capture(tiny_cfg("run=det-noisy1", NOISE), progress=quiet_progress),
            "noisy2": capture(tiny_cfg("run=det-noisy2", NOISE), progress=quiet_progress)}


def test_every_stage_of_the_tiny_capture_is_reproducible_here_and_in_a_fresh_process(runs, tiny_cfg, tmp_path):
    cfg = tiny_cfg("task=determinism", "run=det-plain", "determinism.threads=0", f"out_dir={tmp_path}")
    assert task.run(cfg) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["task"] == "determinism" and report["reproducible"] is True and report["not_reproducible"] == []
    stages = report["stages"]
    assert {"sample_tokens", "local_sample_embs", "sample", "prenorm_centroids", "embs", "codes", "ivf_pid"} \
        <= set(stages)
    for name, check in stages.items():
        assert check["status"] == REPRODUCIBLE, name
        # once here: the bits the capture's process recorded (so not run twice), and a fresh process's
        assert check["run_to_run"] is None and check["recorded"] is True and check["fresh"] is True, name
        assert check["threads"] is None
    assert report["fresh"] is True and {"in_process_s", "fresh_process_s"} <= set(report["costs"])
    assert report["verdict"].startswith("Every stage of run det-plain checked")
    assert ("when run again on the run's own inputs: in this process, as det-plain's own process recorded them and "
            "in a fresh process.") in report["verdict"]


def test_a_process_with_another_thread_count_is_compared_too(runs, tiny_cfg):
    cfg = tiny_cfg("run=det-plain", "stages=[postnorm_centroids]", "determinism.fresh=false", "determinism.threads=1",
                   "determinism.twice=true")
    result = task.determinism(cfg, Store(cfg.store.root), progress=quiet_progress)
    (check,) = result.checks
    assert check.stage == "postnorm_centroids" and check.status == REPRODUCIBLE  # a row-wise normalize: any count
    assert check.threads is True and check.thread_count == 1 and check.fresh is None and result.thread_count == 1
    assert check.run_to_run is True and check.recorded is True
    assert "in this process (twice), as det-plain's own process recorded them and in a process with 1 thread" \
        in result.verdict


def test_the_planted_noise_stage_differs_run_to_run(runs, tiny_cfg, tmp_path):
    cfg = tiny_cfg("task=determinism", "run=det-noisy1", "stages=[sample,prenorm_centroids,postnorm_centroids]",
                   "determinism.threads=1", f"out_dir={tmp_path}")
    assert task.run(cfg) == 1  # not every stage reproducible: the check fails
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["reproducible"] is False and report["not_reproducible"] == ["prenorm_centroids"]
    noisy = report["stages"]["prenorm_centroids"]
    assert noisy["status"] == RUN_TO_RUN and noisy["run_to_run"] is False
    assert noisy["differing"] == ["prenorm_centroids"]
    assert 0 < noisy["max_abs"] < 1e-4  # a tiny nudge
    assert report["stages"]["sample"]["status"] == report["stages"]["postnorm_centroids"]["status"] == REPRODUCIBLE
    # the fresh process with 1 thread gave other bits there: a second one, with this process's threads, too
    assert noisy["threads"] is False and noisy["fresh"] is False and report["stages"]["sample"]["fresh"] is True
    assert {"in_process_s", "threads_process_s", "fresh_process_s"} <= set(report["costs"])
    assert "`prenorm_centroids` differs run to run" in report["verdict"] and "noise" in report["verdict"]


def test_locate_calls_a_stage_that_does_not_repeat_itself_noise_not_a_cause(runs, tiny_cfg, tmp_path):
    """Two captures with the same noisy k-means in one environment differ at prenorm_centroids on equal inputs."""
    store = Store(tiny_cfg().store.root)
    assert runs["noisy1"].artifacts["sample"].ref == runs["noisy2"].artifacts["sample"].ref  # equal inputs
    assert runs["noisy1"].artifacts["prenorm_centroids"].ref != runs["noisy2"].artifacts["prenorm_centroids"].ref
    cfg = tiny_cfg("task=locate", "source=det-noisy1", "target=det-noisy2", f"out_dir={tmp_path}")
    result = locate(cfg, store, progress=quiet_progress)
    assert result.root_cause == ["prenorm_centroids"]  # what injection explains: still the list
    assert {(c.environment, c.status) for c in result.noise} == {("target", RUN_TO_RUN), ("source", RUN_TO_RUN)}
    text = locate_verdict(result)
    assert text.startswith("Noise, not a cause: `prenorm_centroids` (stage `prenorm_centroids`) differs between two "
                           "runs here on equal inputs")
    assert "its difference is noise of this environment" in text and "not evidence of a cause" in text
    assert "Root cause:" not in text

    assert locate_task.run(cfg) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["root_cause"] == ["prenorm_centroids"] and report["verdict"] == text
    assert [(n["artifact"], n["stage"], n["environment"], n["status"]) for n in report["noise"]] == [
        ("prenorm_centroids", "prenorm_centroids", "target", RUN_TO_RUN),
        ("prenorm_centroids", "prenorm_centroids", "source", RUN_TO_RUN)]
    assert "**differs run to run**" in (tmp_path / "report.md").read_text()


def test_locate_checks_a_real_cause_and_finds_it_reproducible(runs, tiny_cfg):
    capture(tiny_cfg("run=det-seed", "perturb=kmeans_seed"), progress=quiet_progress)
    cfg = tiny_cfg("source=det-seed", "target=det-plain")
    result = locate(cfg, Store(cfg.store.root), progress=quiet_progress)
    assert result.root_cause == ["prenorm_centroids"] and result.noise == []
    assert [(c.environment, c.status) for c in result.noise_checks] == [("target", REPRODUCIBLE),
                                                                         ("source", REPRODUCIBLE)]
    text = locate_verdict(result)
    assert text.startswith("Root cause: `prenorm_centroids` (stage `prenorm_centroids`).")
    assert "Not noise: run again here on the inputs of det-plain and det-seed, `prenorm_centroids` reproduces" in text


def test_locate_says_what_it_could_not_check(runs, tiny_cfg, monkeypatch):
    """A run computed in another environment cannot be run again here: the verdict says so, names no noise."""
    import colbert_swap.study.determinism

    monkeypatch.setattr(colbert_swap.study.determinism, "computed_where",
                        lambda run, node, here=None: ("elsewhere", "torch 2.1.0 vs 2.13.0"))
    cfg = tiny_cfg("source=det-noisy1", "target=det-noisy2")
    result = locate(cfg, Store(cfg.store.root), progress=quiet_progress)
    assert result.noise == [] and result.root_cause == ["prenorm_centroids"]
    text = locate_verdict(result)
    assert text.startswith("Root cause: `prenorm_centroids`")
    assert ("Not checked for noise: run det-noisy2 was computed in another environment (torch 2.1.0 vs 2.13.0); run "
            "det-noisy1 was computed in another environment (torch 2.1.0 vs 2.13.0).") in text


def test_locate_noise_check_can_be_turned_off(runs, tiny_cfg):
    cfg = tiny_cfg("source=det-noisy1", "target=det-noisy2", "locate.noise_check=false")
    result = locate(cfg, Store(cfg.store.root), progress=quiet_progress)
    assert result.noise_checks == () and locate_verdict(result).startswith("Root cause: `prenorm_centroids`")


def test_status_order():
    kw = dict(thread_count=1, diffs={}, seconds=0.0)
    same = {"x": "a"}
    assert classify("s", ["x"], first=same, second=same, recorded=same, fresh=same, threads=same, **kw).status \
        == REPRODUCIBLE
    assert classify("s", ["x"], first=same, second={"x": "b"}, recorded={"x": "c"}, fresh=None, threads=None,
                    **kw).status == RUN_TO_RUN
    assert classify("s", ["x"], first=same, second=same, recorded=same, fresh={"x": "b"}, threads={"x": "b"},
                    **kw).status == PROCESSES
    assert classify("s", ["x"], first=same, second=same, recorded=None, fresh=same, threads={"x": "b"},
                    **kw).status == THREADS
    check = classify("s", ["x"], first=same, second=same, recorded={"x": "b"}, fresh=None, threads=None,
                     recorded_status=THREADS, **kw)
    assert check.status == THREADS and check.recorded is False


def test_the_noise_knob_is_validated_and_acts_only_on_float_outputs(tiny_cfg):
    with pytest.raises(UserError, match=r"perturb.noise='prenorm_centroid' is not a stage. Did you mean "
                                        r"'prenorm_centroids'"):
        tiny_cfg("perturb.noise=prenorm_centroid")
    knobs = {"noise": "prenorm_centroids"}
    x = torch.randn(64, 8)
    a, b = infra.noise(knobs, "prenorm_centroids", x), infra.noise(knobs, "prenorm_centroids", x)
    assert not torch.equal(a, b) and not torch.equal(a, x) and torch.allclose(a, x, rtol=1e-5, atol=0)
    assert infra.noise(knobs, "postnorm_centroids", x) is x  # other stages untouched
    with pytest.raises(UserError, match="returns no floating-point tensor"):
        infra.noise({"noise": "num_passages"}, "num_passages", 120)
