"""A newcomer's first hour (issue: help, progress, typos, leftovers, reports worth pasting): each thing
that got in the way, as the command a user types, with what must come out."""

from __future__ import annotations

import json
import re
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from colbert_swap.core.store import Store
from colbert_swap.tasks.capture import capture
from tests.conftest import TINY, make_cfg, quiet_progress

REPO = Path(__file__).resolve().parents[2]


def cli(root, *args: str, ok: bool = True, out_dir: Path | None = None) -> subprocess.CompletedProcess:
    extra = [f"store.root={root}", *TINY] if root else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-m", "colbert_swap", *args, *extra,
                          *([f"out_dir={out_dir}"] if out_dir else [])], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=900)
    if ok:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("newcomer")
    for label, extra in (("target", []), ("seed7", ["perturb=kmeans_seed"]), ("twin", [])):
        capture(make_cfg(f"store.root={root}", *TINY, f"run={label}", *extra), progress=quiet_progress)
    return root


def test_help_lists_tasks_keys_and_groups_never_output_folders():
    leftover = REPO / "outputs" / "hydra" / "help-test" / ".hydra"
    leftover.mkdir(parents=True, exist_ok=True)
    (leftover / "config.yaml").write_text("task: capture\n")
    try:
        out = cli(None, "--help").stdout
        hydra = cli(None, "--hydra-help").stdout
    finally:
        shutil.rmtree(leftover.parent)
    assert "powered by Hydra" not in out and ".hydra" not in out and ".hydra" not in hydra
    for task in ("capture", "compare", "inject", "locate", "isolate", "drill", "search", "matrix", "verify", "rm"):
        assert f"\n  {task} " in out
    for key in ("run", "source", "target", "inject", "stage", "module", "envs", "force", "reuse", "out_dir",
                "store.root"):
        assert f"\n  {key} " in out
    assert "model=base|local|minilm|tiny" in out and "+experiments=" in out
    one = cli(None, "task=locate", "--help").stdout
    assert one.startswith("task=locate: ") and "Round by round" in one and cli(None, "help=locate").stdout == one


@pytest.mark.parametrize("typo,message", [
    ("index.nbit=2", "unknown key 'index.nbit'. Did you mean 'index.nbits'?"),
    ("+index.nbit=2", "unknown key 'index.nbit'. Did you mean 'index.nbits'?"),
    ("sourc=eager", "unknown key 'sourc'. Did you mean 'source'?"),
    ("model=tinny", "model='tinny' is not an option of model. Did you mean 'tiny'?"),
    ("index.kmeans_backend=fasis", "index.kmeans_backend='fasis' is not allowed; expected one of: faiss, torch"),
    ("perturb.attn=eagre", "perturb.attn='eagre' is not allowed; expected one of: null, eager, sdpa, sdpa_math"),
    ("model.kind=hf", "model.kind='hf' is not allowed; expected one of: random_bert, minilm, path"),
])
def test_a_typo_is_one_clear_error_before_any_work(tmp_path, typo, message):
    out = cli(tmp_path, typo, "run=typo", ok=False)
    assert out.returncode == 2 and f"error: {message}" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "runs" / "typo").exists()


def test_a_failed_validation_leaves_nothing_and_an_incomplete_run_can_be_removed(tmp_path, monkeypatch):
    out = cli(tmp_path, "model=local", "model.path=/does/not/exist", "run=local", ok=False)
    assert out.returncode == 2 and not (tmp_path / "runs" / "local").exists()
    assert cli(tmp_path, "task=verify").returncode == 0

    import dataclasses

    from colbert_swap.colbert.stages import DAG

    index = next(i for i, s in enumerate(DAG.stages) if s.name == "sample")

    def sample(**kwargs):
        raise RuntimeError("stopped on purpose")

    original = DAG.stages[index]
    DAG.stages[index] = dataclasses.replace(original, fn=sample)  # a capture that stops half-way
    try:
        with pytest.raises(RuntimeError):
            capture(make_cfg(f"store.root={tmp_path}", *TINY, "run=half"), progress=quiet_progress)
    finally:
        DAG.stages[index] = original
    verify = cli(tmp_path, "task=verify", ok=False)
    assert verify.returncode == 1
    assert "run 'half' is incomplete (a capture that stopped): run the same command to resume it, or " \
           "`python -m colbert_swap task=rm run=half` to remove it" in verify.stdout
    assert "removed run 'half' (incomplete)" in cli(tmp_path, "task=rm", "run=half").stdout
    assert cli(tmp_path, "task=verify").returncode == 0 and not (tmp_path / "runs" / "half").exists()
    (tmp_path / "runs" / "ghost").mkdir()  # a folder a crashed run left without a manifest
    assert "folder" in cli(tmp_path, "task=verify", ok=False).stdout
    cli(tmp_path, "task=rm", "run=ghost")
    capture(make_cfg(f"store.root={tmp_path}", *TINY, "run=done"), progress=quiet_progress)
    refused = cli(tmp_path, "task=rm", "run=done", ok=False)
    assert refused.returncode == 2 and "is complete; pass force=true" in refused.stderr
    cli(tmp_path, "task=rm", "run=done", "force=true")
    assert not Store(tmp_path).has_run("done")


def test_verify_lists_the_unreferenced_files(tmp_path):
    capture(make_cfg(f"store.root={tmp_path}", *TINY, "run=a"), progress=quiet_progress)
    capture(make_cfg(f"store.root={tmp_path}", *TINY, "run=b", "perturb=kmeans_seed"), progress=quiet_progress)
    shutil.rmtree(Store(tmp_path).run_dir("b"))
    out = cli(tmp_path, "task=verify", out_dir=tmp_path / "report").stdout
    orphans = [line for line in out.splitlines() if line.startswith("unreferenced: ")]
    assert orphans and all(Path(line.split(": ", 1)[1].split(" ")[0]).exists() or "more" in line for line in orphans)
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["unreferenced"] and report["problems"] == []


def test_errors_name_what_to_do(root):
    out = cli(root, "task=compare", "source=seed77", "target=target", ok=False)
    assert "Did you mean 'seed7'?" in out.stderr and "captured runs there: seed7, target, twin" in out.stderr
    assert "needs stage=STAGE" in cli(root, "task=isolate", "source=seed7", ok=False).stderr
    same = cli(root, "task=compare", "source=target", "target=target", ok=False)
    assert "source and target are the same run ('target')" in same.stderr


def test_every_reporting_task_writes_json_md_and_html(root, tmp_path):
    shown = cli(root, "run=target", out_dir=tmp_path / "capture").stdout
    assert "| ivf_pid " in shown and "missing" not in shown  # a run that was not searched lacks nothing
    cli(root, "task=compare", "source=seed7", "target=target", out_dir=tmp_path / "compare")
    for task in ("capture", "compare"):
        for name in ("report.json", "report.md", "report.html"):
            assert (tmp_path / task / name).stat().st_size > 0, (task, name)
        report = json.loads((tmp_path / task / "report.json").read_text())
        assert "environments" in report and all("env_id" in e for e in report["environments"].values())
    assert not (tmp_path / "compare" / "explain").exists()  # colbert-ai's chatter goes to the run's own log
    html = (tmp_path / "compare" / "report.html").read_text()
    assert "<table>" in html and "data:image/png;base64," in html  # figures inlined: one file to attach
    md = (tmp_path / "compare" / "report.md").read_text()
    assert re.search(r"\| perturb knobs set +\| kmeans_seed=7 ", md) and "'attn': None" not in md
    assert md.count("Modulo the centroid matching") <= 1 and "1 artifacts" not in md
    assert "the size of rounding noise" not in md.split("**`avg_residual`**")[-1].split("\n")[0]


def test_an_injection_nothing_reads_says_so(root, tmp_path):
    cli(root, "inject=ivf_pid", "source=seed7", "target=target", "force=true", out_dir=tmp_path)  # another shape
    md = (tmp_path / "report.md").read_text()
    assert "No stage reads `ivf_pid`: nothing was recomputed." in md
    assert "changes nothing downstream: no stage reads it" in md


def test_sweep_summaries_label_every_cell(root):
    sweep = Path(root) / "sweeps" / "compare"
    cli(root, "-m", "task=compare", "source=seed7,twin", "target=target", f"hydra.sweep.dir={sweep}")
    summary = (sweep / "summary.md").read_text()
    assert summary.startswith("# sweep: 2 compare jobs") and "seed7 vs target" in summary
    assert "injection experiments" not in summary
    sweep = Path(root) / "sweeps" / "inject"
    cli(root, "-m", "inject=centroids,codes", "source=seed7", "target=target", f"hydra.sweep.dir={sweep}")
    summary = (sweep / "summary.md").read_text()
    assert "`injected`: taken from the source" in summary
    data = json.loads((sweep / "summary.json").read_text())
    row = next(j for j in data["jobs"] if j["injected"] == ["codes"])
    assert "codes.0" in row["injected_artifacts"] and "| codes " in summary
    line = next(l for l in summary.splitlines() if l.startswith("| codes "))
    cells = [c.strip() for c in line.strip("|").split("|")]
    header = [c.strip() for c in next(l for l in summary.splitlines() if l.startswith("| injected ")).strip("|").split("|")]
    assert cells[header.index("codes.0")] == "injected"
    assert cells[header.index("sample_pids")] == "equal*"  # upstream: the target's own, not recomputed
    assert cells[header.index("all_codes")] in ("equal", "order_only")  # recomputed downstream of codes
