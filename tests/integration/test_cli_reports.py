"""The commands a user types: compare, inject, locate and a sweep, each ending in a readable report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from colbert_swap.tasks.capture import capture
from tests.conftest import TINY, quiet_progress

REPO = Path(__file__).resolve().parents[2]
REPORT_KEYS = {"task", "source", "target", "injected", "root_cause", "artifacts", "verdict"}


pytestmark = pytest.mark.numerics


@pytest.fixture(scope="module")
def pair(tiny_cfg, store_root):
    """A target and a source whose model has one layer scaled: a difference that acts on every machine."""
    capture(tiny_cfg("run=target"), progress=quiet_progress)
    capture(tiny_cfg("run=scaled", "perturb=scale_layer"), progress=quiet_progress)
    return store_root


def cli(store_root: str, *args: str, out_dir: Path | None = None) -> subprocess.CompletedProcess:
    extra = [f"out_dir={out_dir}"] if out_dir else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-m", "colbert_swap", *args, f"store.root={store_root}", *TINY, *extra],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_compare_report(pair, tmp_path):
    out = cli(pair, "task=compare", "source=scaled", "target=target", out_dir=tmp_path)
    report = json.loads((tmp_path / "report.json").read_text())
    assert REPORT_KEYS <= set(report) and report["task"] == "compare"
    assert report["first_diverged"] == ["local_sample_embs"]
    assert report["artifacts"]["sample_pids"]["status"] == "equal"
    assert report["artifacts"]["local_sample_embs"]["status"] in ("diverged", "allclose")
    md = (tmp_path / "report.md").read_text()
    assert "| `local_sample_embs`" in md and "## Environments" in md and "perturb" in md
    assert report["tolerance"]["table"] == "assert_close" and "Status `allclose`: torch.allclose with `assert_close`" in md
    assert report["whole_run"]["index_files_identical"] is False and "index files of scaled and target differ" in out.stdout
    assert "first divergence is `local_sample_embs`" in out.stdout and str(tmp_path / "report.md") in out.stdout
    assert "## What this means" in md and "**`codes.0`**: " in md and (tmp_path / "explain-embs.0.png").exists()
    assert set(report["explain"]) == {n for n, a in report["artifacts"].items() if a["status"] not in ("equal", "order_only")}


def test_inject_report_has_before_and_after_tables(pair, tmp_path):
    out = cli(pair, "inject=[local_sample_embs,embs]", "source=scaled", "target=target", out_dir=tmp_path)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["task"] == "inject" and report["injected"] == ["local_sample_embs", "embs"]
    assert report["artifacts"] and all(a["status"] in ("equal", "order_only") for a in report["artifacts"].values())
    for name, a in report["artifacts"].items():
        assert {"status", "stage", "max_abs", "mad", "mismatches"} <= set(a), name
    md = (tmp_path / "report.md").read_text()
    assert "## Before injection (scaled vs target)" in md and "## After injection" in md
    assert "## What this means: the injected artifacts (scaled vs target)" in md and "**`embs.0`**: " in md
    assert report["whole_run"]["identical"] and report["whole_run"]["index_files_identical"]
    assert "## Where the replayed run's artifacts were computed" in md and "injected from scaled" in md
    assert set(report["explain"]["injected"]) == {"local_sample_embs", "embs.0"} and report["explain"]["left"] == {}
    assert "makes all" in out.stdout


def test_locate_report_names_the_root_cause(pair, tmp_path):
    cli(pair, "task=locate", "source=scaled", "target=target", out_dir=tmp_path)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["root_cause"] == ["local_sample_embs", "embs"]
    assert report["root_cause_stages"] == ["local_sample_embs", "embs"]
    md = (tmp_path / "report.md").read_text()
    assert "Root cause: `local_sample_embs`" in md and "## What this means (scaled vs target)" in md
    assert report["explain"]["codes.0"]["tokens"]["changed"] == report["before"]["codes.0"]["mismatches"]


@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_sweep_writes_a_summary_across_jobs(pair, launcher):
    args = ["-m", "inject=local_sample_embs,centroids,codes", "source=scaled", "target=target",
            f"hydra.sweep.dir={pair}/sweeps/{launcher}"]
    if launcher == "joblib":
        args += ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    out = cli(pair, *args)
    sweep = Path(pair) / "sweeps" / launcher
    assert "sweep summary" in out.stdout
    summary = json.loads((sweep / "summary.json").read_text())
    assert [j["injected"] for j in summary["jobs"]] == [["local_sample_embs"], ["centroids"], ["codes"]]
    assert (sweep / "summary.md").read_text().count("\n| ") >= 6
    assert (sweep / "heatmap.png").read_bytes()[:4] == b"\x89PNG" and "](heatmap.png)" in (sweep / "summary.md").read_text()
    html = (sweep / "summary.html").read_text()
    assert html.count("<tr>") == 4 and "#b7e1b0" in html  # header + 3 rows, with equal (green) cells


def test_the_tolerance_behind_allclose_is_chosen_and_reported(pair, tmp_path):
    """compare.tolerance picks the table; compare.per_artifact overrides it for one artifact."""
    cli(pair, "task=compare", "source=scaled", "target=target", "compare.tolerance=torch",
        "compare.per_artifact={sample:[1.0,1.0]}", out_dir=tmp_path)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["tolerance"]["table"] == "torch" and report["tolerance"]["per_artifact"] == {"sample": [1.0, 1.0]}
    assert report["artifacts"]["sample"]["status"] == "allclose" and report["artifacts"]["sample"]["tolerance"] == [1.0, 1.0]
    assert report["artifacts"]["embs.0"]["tolerance"] == [1e-5, 1e-8]
    assert "`torch` (rtol/atol: other dtypes 1e-05/1e-08); per artifact: `sample` 1/1" in (tmp_path / "report.md").read_text()


def test_ready_made_sweep_lists_valid_injection_points():
    from hydra import compose, initialize_config_dir

    from colbert_swap.config import CONF
    from colbert_swap.runs.replay import resolve

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["+experiments=sweep"], return_hydra_config=True)
    points = str(cfg.hydra.sweeper.params.inject).split(",")
    assert len(points) >= 8 and points[0] == "local_sample_embs"
    assert resolve(points, num_chunks=2)  # every point is a real artifact name (raises otherwise)
