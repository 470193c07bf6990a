"""A report stands on its own when pasted into an issue: the command that made it, each run's full config and a
command that captures the run again (run here: the very same artifacts), figures named rather than embedded by
a path that breaks, and a zip to attach."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from colbert_swap.core.store import Store
from tests.conftest import TINY

pytestmark = pytest.mark.numerics
REPO = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "colbert_swap", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)


def test_a_reports_capture_command_captures_the_same_run_again(tmp_path):
    first, second = tmp_path / "one", tmp_path / "two"
    for label, extra in (("a", []), ("b", ["perturb=kmeans_seed"])):
        done = cli(f"run={label}", f"store.root={first}", *TINY, *extra)
        assert done.returncode == 0, done.stderr[-2000:]
    done = cli("task=search", "source=a", "target=b", f"store.root={first}", *TINY, "search.num_queries=5",
               f"out_dir={tmp_path}/report")
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    md = (tmp_path / "report" / "report.md").read_text()

    assert report["reproduce"]["command"] == ("python -m colbert_swap task=search source=a target=b "
                                              f"store.root={first} " + " ".join(TINY) + " search.num_queries=5 "
                                              f"out_dir={tmp_path}/report")
    assert f"This report: `{report['reproduce']['command']}`" in md
    runs = report["reproduce"]["runs"]
    assert set(runs) == {"a", "b"} and runs["b"]["config"]["perturb"]["kmeans_seed"] is not None
    assert "perturb.kmeans_seed=" in runs["b"]["capture"] and "collection.num_passages=120" in runs["b"]["capture"]

    # the command, as pasted, captures the run again elsewhere: the same artifacts, bit for bit
    args = shlex.split(runs["b"]["capture"])[3:] + [f"store.root={second}"]
    done = cli(*args)
    assert done.returncode == 0, done.stderr[-2000:]
    again, before = (Store(root).load("b").artifacts for root in (second, first))
    assert len(again) > 20 and {n: r.ref.hash for n, r in again.items()} == {n: before[n].ref.hash for n in again}

    assert not re.search(r"!\[[^\]]*\]\([^)]*\.png\)", md)  # a figure is named, not embedded by a relative path
    assert report["figures"] and f"*Figure `{report['figures'][0]}`: inlined in report.html" in md
    with zipfile.ZipFile(tmp_path / "report" / "report.zip") as z:
        assert {"report.md", "report.json", "report.html", *report["figures"]} <= set(z.namelist())
    said = cli("task=verify", f"store.root={first}").stdout
    assert re.search(r"report: \S+/report.md \(to attach to an issue: \S+/report.zip, \d+ KB\)", said), said
