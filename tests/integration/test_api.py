"""The Python API as the README shows it (its block runs here as it is, in a fresh store), and --json."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.numerics
REPO = Path(__file__).resolve().parents[2]


def readme_block() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("### From Python, and as JSON", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readmes_python_api_block_runs_and_says_what_its_comments_say(tmp_path, capsys):
    code = readme_block().replace("/tmp/swap-api", str(tmp_path / "store"))
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    out = capsys.readouterr().out
    cmp, inj, loc, hits, dr, rep = (scope[k] for k in ("cmp", "inj", "loc", "hits", "dr", "rep"))
    assert cmp.artifacts.first_diverged() == ["prenorm_centroids"] and "prenorm_centroids" in cmp.verdict
    assert "makes all" in inj.verdict and "downstream artifacts identical" in inj.verdict
    assert loc.root_cause == ["prenorm_centroids"]
    assert hits.retrieval.status in ("identical", "same top-k sets", "changed")
    assert dr.first is None and dr.rows and dr.verdict.startswith(f"All {len(dr.rows)} module outputs are bitwise equal")
    assert rep.data["exit"] == 0 and "0 problems" in rep.verdict
    for printed in (cmp.verdict, inj.verdict, "['prenorm_centroids']", hits.retrieval.status, f"{rep.verdict} 0"):
        assert printed in out  # what the block prints is what its comments say it is


def test_json_puts_one_object_on_stdout_and_everything_else_on_stderr(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cli = lambda *a: subprocess.run([sys.executable, "-m", "colbert_swap", *a, f"store.root={tmp_path}",  # noqa: E731
                                     "collection.num_passages=120", "index.doc_maxlen=64", "--json"],
                                    cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    done = cli("run=j")
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)  # the artifact table and progress went to stderr
    assert out["task"] == "capture" and out["exit"] == 0 and out["error"] is None and out["run"] == "j"
    assert out["verdict"].startswith("run 'j': ") and Path(out["report"]).is_file()
    assert out["reproduce"]["runs"]["j"]["capture"].startswith("python -m colbert_swap run=j ")
    assert "| artifact" in done.stderr or "num_passages" in done.stderr

    bad = cli("task=compare", "source=j", "target=nope")
    assert bad.returncode == 2 and json.loads(bad.stdout) == {
        "task": "compare", "exit": 2, "error": json.loads(bad.stdout)["error"], "report": None}
    assert "run 'nope' is not in the store" in json.loads(bad.stdout)["error"]
