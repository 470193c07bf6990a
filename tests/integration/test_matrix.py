"""task=matrix / bisect / env_capture driven with cheap environments: this interpreter with other config
knobs (conf/env/here*.yaml), so nothing is downloaded. The real cross-version run is in docs/."""

from __future__ import annotations

import json
import os

import pytest
import re
import subprocess
import sys
from pathlib import Path

from types import SimpleNamespace

from colbert_swap.api import run
from colbert_swap.api import compose
from colbert_swap.env.specs import axis
from colbert_swap.errors import UserError
from colbert_swap.study.matrix import Pair, Study, expand_envs, pair_folder
from colbert_swap.core.store import Store
from tests.conftest import TINY

pytestmark = pytest.mark.numerics
REPO = Path(__file__).resolve().parents[2]


def test_matrix_after_a_joblib_sweep_of_env_captures(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    sweep = subprocess.run([sys.executable, "-m", "colbert_swap", "-m", "task=env_capture",
                            "environment=here,here-scale-layer", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                            f"store.root={tmp_path}", f"hydra.sweep.dir={tmp_path}/sweep", *TINY],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    store = Store(tmp_path)
    assert store.load("here").complete and store.load("here-scale-layer").complete
    assert store.load("here-scale-layer").config["perturb"]["scale"] == 1.0078125  # the spec's override reached it

    out = tmp_path / "report"
    status = run(compose(f"store.root={tmp_path}", *TINY, "task=matrix", "envs=[here,here-scale-layer,here-kmeans-seed]",
                         f"out_dir={out}"))
    assert status == 0
    report = json.loads((out / "report.json").read_text())
    first, second = report["pairs"]
    assert (first["a"], first["b"]) == ("here", "here-scale-layer") and first["index_changed"]
    assert "centroids.pt" in first["index_files_differing"]  # decided from colbert-ai's files themselves
    # every capture searched too (matrix.retrieval): the query encoder is the changed model as well
    assert first["first_diverged"] == ["local_sample_embs"]
    assert first["root_cause"] == ["local_sample_embs", "embs", "Q"]
    assert second["root_cause"] == ["local_sample_embs", "prenorm_centroids", "embs", "Q"]  # weights and seed both
    assert first["retrieval"]["status"] == "changed" and second["retrieval"]["status"] == "changed"
    md = (out / "report.md").read_text()
    assert re.search(r"\| here -> here-scale-layer +\| changed +\| changed", md)
    assert "`local_sample_embs`, `embs`, `Q`" in md
    assert "is in the store already" not in md  # progress goes to the console, the report is the table

    # the encoder changes are drilled, each side in its own environment: the planted weight scale
    assert first["first_module"] == "bert.encoder.layer.0.output.dense"
    assert first["first_op"]["kind"] == "same operation, different inputs"
    assert first["first_op"]["parameters"] == ["bert.encoder.layer.0.output.dense.weight"]
    assert second["first_module"] == "bert.encoder.layer.0.output.dense"  # scaled in here-scale-layer only
    assert first["packages_differing"] == []  # `python: current`: one interpreter, the same packages
    assert [s["name"] for s in first["steps"]] == ["locate", "drill-source", "drill", "ops-source", "ops"]
    for step in ("locate", "drill", "ops"):
        assert f"](here-vs-here-scale-layer/{step}/report.md)" in md
        assert (out / "here-vs-here-scale-layer" / step / "report.md").exists()
    assert "| pair " in md and "| module / op " in md and "| packages that differ |" in md
    assert "`bert.encoder.layer.0.output.dense` / `aten.linear.default` (same operation, different inputs)" in md
    rows = report["compatibility"]["rows"]
    assert [(r["env"], r["index"]) for r in rows] == [("here", "index identical"), ("here-scale-layer", "index differs"),
                                                       ("here-kmeans-seed", "index differs")]
    assert report["reference"] == "here" and rows[0]["retrieval"] == "identical"
    assert rows[1]["retrieval"].startswith("changed (ΔnDCG@10 ") and rows[2]["retrieval"].startswith("changed")
    assert "Retrieval against here: identical rankings in" not in report["verdict"]
    assert "Retrieval against here: other passages in here-scale-layer" in report["verdict"]
    assert report["verdict"].startswith("here gives the index; here-scale-layer changes it (root cause "
                                        "`local_sample_embs`, `embs`, `Q`; module `bert.encoder.layer.0.output.dense`; op "
                                        "`aten.linear.default` runs on different inputs")
    assert "## Compatibility against here" in md and "| `here` (reference) | index identical" in md

    # the same matrix again, into a new folder (as Hydra gives each run): every locate and drill is kept
    logs = {p: p.read_text() for p in (tmp_path / "matrix").glob("*/*.log")}
    again = tmp_path / "again"
    assert run(compose(f"store.root={tmp_path}", *TINY, "task=matrix", "envs=[here,here-scale-layer,here-kmeans-seed]",
                       f"out_dir={again}", "reference=here-kmeans-seed")) == 0
    redone = json.loads((again / "report.json").read_text())
    assert all(s["reused"] for p in redone["pairs"] for s in p["steps"]) and len(redone["pairs"][1]["steps"]) == 5
    assert {p: p.read_text() for p in (tmp_path / "matrix").glob("*/*.log")} == logs  # nothing ran again
    assert (again / "here-vs-here-scale-layer" / "ops" / "report.md").exists()  # its links work there too
    assert [r["index"] for r in redone["compatibility"]["rows"]] == ["index differs", "index differs", "index identical"]


def _spec(folder: Path, name: str, overrides: list[str]) -> str:
    path = folder / f"{name}.yaml"
    path.write_text(f"name: {name}\npython: current\noverrides: {json.dumps(overrides)}\n")
    return str(path)


def test_bisect_finds_the_first_change_with_fewer_captures(tmp_path):
    specs = [_spec(tmp_path, f"v{i}", [] if i < 3 else ["perturb=scale_layer"]) for i in range(8)]
    out = tmp_path / "report"
    run(compose(f"store.root={tmp_path}/store", *TINY, "task=bisect", f"envs=[{','.join(specs)}]", f"out_dir={out}"))
    report = json.loads((out / "report.json").read_text())
    assert (report["pair"]["a"], report["pair"]["b"]) == ("v2", "v3")
    assert report["pair"]["root_cause"] == ["local_sample_embs", "embs", "Q"]
    assert report["pair"]["first_module"] == "bert.encoder.layer.0.output.dense"
    assert report["pair"]["first_op"]["kind"] == "same operation, different inputs"
    assert report["pair"]["packages_differing"] == []
    md = (out / "report.md").read_text()
    assert "](v2-vs-v3/ops/report.md)" in md and (out / "v2-vs-v3" / "drill" / "report.md").exists()
    assert sorted(report["captured"]) == ["v0", "v1", "v2", "v3", "v7"]  # 5 of 8: the ends, then halving
    assert [s[1] for s in report["steps"]] == ["index differs", "index differs", "same index", "same index"]


def test_a_failing_environment_is_reported_and_the_others_kept(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text(f"name: broken\npython: {sys.executable}\nrequirements: [colbert-swap-no-such-package==9.9]\n"
                   "pip_args: [--no-index]\n")
    out = tmp_path / "report"
    status = run(compose(f"store.root={tmp_path}/store", *TINY, "task=matrix", f"envs=[here,{bad},here-kmeans-seed]",
                         f"out_dir={out}", f"env_cache={tmp_path}/envs"))
    assert status == 1
    report = json.loads((out / "report.json").read_text())
    assert report["captured"] == ["here", "here-kmeans-seed"] and list(report["failures"]) == ["broken"]
    failure = report["failures"]["broken"]
    assert failure["kind"] == "install" and failure["step"] == "installing its requirements"
    assert "colbert-swap-no-such-package" in failure["tail"]  # the installer's own error, quoted
    assert "fix its requirements" in failure["advice"]
    assert [(p["a"], p["b"]) for p in report["pairs"]] == [("here", "here-kmeans-seed")]  # its neighbours compared
    assert [(p["a"], p["b"]) for p in report["not_compared"]] == [("here", "broken"), ("broken", "here-kmeans-seed")]
    assert report["complete"] is False
    assert "could not be captured" in (out / "report.md").read_text()
    assert "colbert-swap-no-such-package" in (out / "report.md").read_text()
    pair = report["pairs"][0]  # the k-means seed changes the centroids, not the encoder: located, not drilled
    assert pair["root_cause"] == ["prenorm_centroids"] and pair["first_module"] is None
    assert [s["name"] for s in pair["steps"]] == ["locate"]
    assert "not drilled (root cause outside the encoder)" in (out / "report.md").read_text()
    assert [(r["env"], r["index"]) for r in report["compatibility"]["rows"]] == [
        ("here", "index identical"), ("broken", "not captured"), ("here-kmeans-seed", "index differs")]
    assert "Not captured: broken (installing its requirements failed: " in report["verdict"]
    assert "Not compared: here -> broken (broken was not captured: " in report["verdict"]
    assert "The study is incomplete." in report["verdict"]


def test_a_failed_reference_a_spec_given_by_path_and_the_reason_shown(tmp_path, monkeypatch):
    """The reference cannot be captured: its reason is shown everywhere, the first captured environment stands in,
    and a spec given by its path is named (and paired) as by its name."""
    bad = tmp_path / "refused.yaml"
    bad.write_text("name: refused\npython: current\noverrides: [index.kmeans_backend=nosuch]\n")
    by_path = REPO / "conf" / "env" / "here-kmeans-seed.yaml"
    out, said = tmp_path / "report", []
    monkeypatch.setattr("colbert_swap.tasks.matrix.progress_printer", lambda: said.append)  # the console's lines
    status = run(compose(f"store.root={tmp_path}/store", *TINY, "task=matrix", f"envs=[{bad},here,{by_path}]",
                         f"reference={bad}", f"out_dir={out}"))
    assert status == 1  # incomplete: the reference was not captured
    printed = "\n".join(said)
    assert "environment 'refused' failed: colbert_swap refused the capture: index.kmeans_backend='nosuch' is not " \
           "allowed" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["captured"] == ["here", "here-kmeans-seed"]  # by path, labelled by the spec's name
    assert report["failures"]["refused"]["kind"] == "refused"
    assert report["reference"] == "here" and report["reference_asked"] == "refused"
    assert [(p["a"], p["b"]) for p in report["pairs"]] == [("here", "here-kmeans-seed")]
    assert report["pairs"][0]["root_cause"] == ["prenorm_centroids"]
    assert [(p["a"], p["b"]) for p in report["not_compared"]] == [("refused", "here")]
    text = report["verdict"]
    assert text.startswith("here gives the index; here-kmeans-seed changes it (root cause `prenorm_centroids`)")
    assert "Against here (standing in for the reference refused, which was not captured): the index is " \
           "identical in no other environment and differs in here-kmeans-seed." in text
    assert "index.kmeans_backend='nosuch' is not allowed" in text and "keeps" not in text
    md = (out / "report.md").read_text()
    assert "## Compatibility against here" in md and "(stand-in reference)" in md
    assert "colbert_swap refused the capture: index.kmeans_backend='nosuch' is not allowed" in md


def test_envs_takes_axis_names_spec_names_and_both():
    torch = axis("torch")
    assert expand_envs("torch") == torch and torch[0] == "torch-1.13.1" and torch[-1] == "torch-2.15.0"
    assert expand_envs(compose("envs=torch").matrix.envs) == torch  # envs=torch on the command line
    assert expand_envs(compose("envs=[here,torch]").matrix.envs) == ["here", *torch]
    assert expand_envs(compose("envs=[torch-2.0.1,here-eager]").matrix.envs) == ["torch-2.0.1", "here-eager"]
    both = expand_envs(["torch", "transformers"])  # transformers starts from torch-2.15.0: listed once
    assert both.count("torch-2.15.0") == 1 and both[len(torch)] == "huggingface_hub-0.36.2"


def test_each_pair_over_several_axes_changes_what_its_step_names():
    """The faiss axis starts from torch-2.15.0, not from the transformers axis's last spec: every adjacent pair
    of the whole study differs in the packages its step changes (transformers moves with its tokenizers)."""
    from colbert_swap.env import specs as env_specs
    from colbert_swap.study.matrix import adjacent, env_steps

    specs = env_specs.generated(env_specs.TABLE)
    pins = {n: dict(r.split("==") for r in spec["requirements"]) for n, spec in specs.items()}
    steps = env_steps(["torch", "transformers", "faiss", "numpy"])
    assert ("torch-2.15.0", "faiss-1.8.0") in steps and ("transformers-4.57.6", "faiss-1.8.0") not in steps
    assert len(steps) == len(expand_envs(["torch", "transformers", "faiss", "numpy"])) - 1
    for a, b in steps:
        changed = {k for k in pins[a].keys() | pins[b].keys() if pins[a].get(k) != pins[b].get(k)}
        assert changed - {"setuptools"} <= set(specs[b]["changes"]), (a, b, changed)
    assert env_steps(["here", "faiss"])[0] == ("here", "torch-2.15.0")  # into the axis from what precedes it
    assert adjacent([("a", "b"), ("b", "c")], ["a", "c"]) == [("a", "c")]  # over a failed capture


def test_the_reference_is_the_first_env_unless_named(tmp_path):
    cfg = lambda *o: compose(f"store.root={tmp_path}", *o)  # noqa: E731
    assert Study(cfg(), Store(tmp_path), ["here", "here-kmeans-seed"]).reference() == "here"
    assert Study(cfg("reference=here-kmeans-seed"), Store(tmp_path), ["here", "here-kmeans-seed"]).reference() \
        == "here-kmeans-seed"
    with pytest.raises(UserError, match=r"reference='here-eager' is not one of envs: here, here-kmeans-seed"):
        Study(cfg("reference=here-eager"), Store(tmp_path), ["here", "here-kmeans-seed"]).reference()


class FakeRunner:
    """Stands in for environments.run_in: writes the report.json each task would, fails where told."""

    def __init__(self, fail: str | None = None):
        self.calls: list[tuple[str, list[str]]] = []
        self.fail = fail

    def __call__(self, spec, python, args, log):
        out = Path(next(a for a in args if a.startswith("out_dir="))[len("out_dir="):])
        self.calls.append((spec.name, [a for a in args if a.startswith(("task=", "run=", "source=", "module="))]))
        if out.name == self.fail:
            return SimpleNamespace(returncode=1)
        report = {"locate": {"root_cause": ["local_sample_embs", "embs"], "verdict": "Root cause: ..."},
                  "drill": {"first_module": "bert.encoder.layer.0.output.dense"},
                  "ops": {"first_op": {"kind": "equal inputs, different output", "op": "aten.addmm.default"}}}
        out.mkdir(parents=True)
        (out / "report.json").write_text(json.dumps(report.get(out.name, {})))
        return SimpleNamespace(returncode=0)


def test_a_stopped_pair_resumes_at_the_step_that_did_not_finish(tmp_path):
    store = Store(tmp_path)
    study = Study(compose(f"store.root={tmp_path}"), store, ["here", "here-scale-layer"], progress=lambda m: None)
    key = {"version": 1, "runs": [["here", "t0", "h"], ["here-scale-layer", "t1", "h"]], "probes": 24}

    def located(runner: FakeRunner, key: dict) -> Pair:
        study.runner = runner
        pair = Pair("here", "here-scale-layer", comparison=None, whole=None)
        study._locate_and_drill(pair, pair_folder(store, key))
        return pair

    stopped = located(FakeRunner(fail="ops"), key)  # the op drill in here-scale-layer's environment fails
    assert stopped.drill.module == "bert.encoder.layer.0.output.dense" and stopped.drill.op is None
    assert "failed (exit 1); see " in stopped.drill.error and stopped.drill.error.endswith("ops.log")
    assert [s.ok for s in stopped.steps] == [True, True, True, True, False]
    resumed = FakeRunner()
    pair = located(resumed, key)
    assert resumed.calls == [("here-scale-layer", ["task=drill", "source=here", "module=bert.encoder.layer.0.output.dense"])]
    assert [s.reused for s in pair.steps] == [True, True, True, True, False]
    assert pair.drill.op.op == "aten.addmm.default" and pair.drill.error is None
    done = FakeRunner()
    assert all(s.reused for s in located(done, key).steps) and done.calls == []
    recaptured = FakeRunner()  # run here-scale-layer captured again: another `created`, the pair is redone
    located(recaptured, {**key, "runs": [key["runs"][0], ["here-scale-layer", "t2", "h"]]})
    assert [c[0] for c in recaptured.calls] == ["here-scale-layer", "here", "here-scale-layer", "here", "here-scale-layer"]
    assert recaptured.calls[0][1] == ["task=locate", "source=here"]


def test_matrix_parity_checks_each_capture_against_colbert_ais_indexer_in_its_environment(tmp_path):
    """matrix.parity=true: task=parity runs in each environment after its capture; `here` is colbert-ai's
    Indexer there, here-scale-layer is perturbed, so it is not compared (never 'identical')."""
    out = tmp_path / "report"
    status = run(compose(f"store.root={tmp_path}", *TINY, "task=matrix", "envs=[here,here-scale-layer]",
                         "matrix.parity=true", "matrix.retrieval=false", f"out_dir={out}"))
    assert status == 0
    report = json.loads((out / "report.json").read_text())
    rows = report["compatibility"]["rows"]
    assert [(r["env"], r["index"], r["parity"]["status"]) for r in rows] == [
        ("here", "index identical", "identical"), ("here-scale-layer", "index differs", "not compared")]
    assert rows[1]["parity"]["detail"].startswith("perturbed (perturb.scale")
    assert rows[1]["parity"]["detail"].endswith("colbert-ai's Indexer cannot be perturbed")
    md = (out / "report.md").read_text()
    assert re.search(r"\| `here` \(reference\) +\| index identical .*\| parity: identical +\|", md)
    row = next(line for line in md.splitlines() if line.startswith("| `here-scale-layer`"))
    assert "parity: not compared: perturbed (perturb.scale" in row and "parity: identical" not in row
    assert "no verdict" not in report["verdict"] and report["complete"]
    # each ran in its environment, as a spawned task: its report is kept, the Indexer's files in the run's folder
    here = json.loads((tmp_path / "matrix" / "parity" / "here" / "report.json").read_text())
    assert here["status"] == "identical" and here["environments"]["here"]["environment"] == "here"
    assert (Store(tmp_path).run_dir("here") / "indexer" / "parity.json").exists()
    assert not (Store(tmp_path).run_dir("here-scale-layer") / "indexer").exists()
