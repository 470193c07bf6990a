"""A drill recording stands for its run only when it was made in the run's environment: elsewhere task=drill
refuses, naming the differences and the command to run instead (the run's variables spelled out); a recording
made in another environment (force=true) is never reused as the run's. The run is captured under an
ATEN_CPU_CAPABILITY this process does not have (read when torch loads: a process of its own), so this process
is another environment on any CPU, whatever the kernels compute."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from colbert_swap.env.venvs import load_spec, venv_dir
from colbert_swap.errors import UserError
from colbert_swap.env.provenance import env_id, environment, run_environment
from colbert_swap.core.store import RunManifest, Store
from colbert_swap.core.store.origin import Capture
from colbert_swap.tasks import drill
from colbert_swap.tasks.capture import capture
from tests.conftest import TINY, make_cfg, quiet_progress

REPO = Path(__file__).resolve().parents[2]
VAR = "ATEN_CPU_CAPABILITY"
OTHER = "default" if os.environ.get(VAR) != "default" else "avx2"  # the value this process does not run with
MODULE = "bert.embeddings.LayerNorm"
RUN, HERE = "aten-elsewhere", "aten-here"  # captured under VAR=OTHER (a planted cause too), and in this process


def _env(**extra) -> dict:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "HF_HUB_OFFLINE": "1", **extra}


THERE = _env(**{VAR: OTHER})


def cli(store_root: str, *args: str) -> str:
    """`python -m colbert_swap ARGS` in the run's environment (VAR=OTHER)."""
    out = subprocess.run([sys.executable, "-m", "colbert_swap", *args, f"store.root={store_root}", *TINY], cwd=REPO,
                         env=THERE, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout + out.stderr


def shell(command: str) -> str:
    """A command as a hint spells it, run from a shell with this process's variables."""
    out = subprocess.run(["bash", "-c", command], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{command}\n{out.stderr[-3000:]}"
    return out.stdout


def hints(text: str) -> list[str]:
    """The commands in backticks a message tells to run."""
    return re.findall(r"`([^`]*python -m colbert_swap [^`]*)`", text)


def mtime(store: Store, label: str) -> int:
    return store.manifest_path(label).stat().st_mtime_ns


@pytest.fixture(scope="module")
def runs(tiny_cfg, store_root):
    cli(store_root, f"run={RUN}", "perturb=scale_layer")  # a module output differs from HERE's on any CPU
    capture(tiny_cfg(f"run={HERE}"), progress=quiet_progress)
    store = Store(store_root)
    assert store.load(RUN).provenance["env"][VAR] == OTHER
    return store


def test_a_drill_in_another_environment_is_refused_with_the_command_to_run(runs, tiny_cfg, store_root):
    with pytest.raises(UserError) as refused:
        drill.run(tiny_cfg("task=drill", f"run={RUN}", f"module={MODULE}"))
    message = str(refused.value)
    assert "another environment than this one" in message and f"env.{VAR}" in message  # the difference, named
    [command] = hints(message)
    assert f"{VAR}={OTHER} " in command
    assert command.endswith(f"python -m colbert_swap task=drill run={RUN} module={MODULE} store.root={store_root}")
    assert not runs.has_run(f"{RUN}+drill") and not runs.has_run(f"{RUN}+ops.{MODULE}")  # nothing recorded here
    # the command as spelled records both, in the run's environment; the second call reuses them
    shell(command)
    for label in (f"{RUN}+drill", f"{RUN}+ops.{MODULE}"):
        assert runs.load(label).origin.env == runs.load(RUN).env == runs.load(label).env
    before = {label: mtime(runs, label) for label in (f"{RUN}+drill", f"{RUN}+ops.{MODULE}")}
    out = cli(store_root, "task=drill", f"run={RUN}", f"module={MODULE}")
    assert "recording" not in out and {label: mtime(runs, label) for label in before} == before
    # with force=true it is recorded here, kept as this environment's, with a warning that names the difference
    drill.run(tiny_cfg("task=drill", f"run={RUN}", f"module={MODULE}", "force=true"))
    forced = runs.load(f"{RUN}+ops.{MODULE}")
    assert forced.origin.env == env_id(run_environment(runs.load(RUN).config)) != runs.load(RUN).env
    # ... and never taken for the run's: a comparison refuses it, the run's environment records again
    with pytest.raises(UserError, match=f"was recorded in another environment .*{VAR}={OTHER} "):
        drill.run(tiny_cfg("task=drill", f"source={RUN}", f"target={HERE}", f"module={MODULE}"))
    out = cli(store_root, "task=drill", f"run={RUN}", f"module={MODULE}")
    assert "recording the aten operations" in out
    for label in (f"{RUN}+drill", f"{RUN}+ops.{MODULE}"):
        assert runs.load(label).origin.env == runs.load(RUN).env


def test_every_hint_spells_out_the_run_environment(runs, tiny_cfg, store_root, tmp_path):
    # "Next": the comparison, in the target's environment (this one: the variable unset, or its own value)
    out = cli(store_root, "task=drill", f"run={RUN}", f"target={HERE}")
    [next_command] = hints(out.split("Next, ", 1)[1])
    assert VAR in next_command and f"task=drill source={RUN} target={HERE}" in next_command
    # the comparison's next step: the source's operations, in the source's environment (none recorded yet)
    import shutil

    for label in Store(store_root).runs():
        if label.startswith(f"{RUN}+ops."):
            shutil.rmtree(Store(store_root).run_dir(label))
    drill.run(tiny_cfg("task=drill", f"source={RUN}", f"target={HERE}", f"out_dir={tmp_path}"))
    report = json.loads((tmp_path / "report.json").read_text())
    module = report["first_module"]
    assert module  # the planted cause (perturb=scale_layer) on one side
    source_step, target_step = report["next_steps"]
    assert f"{VAR}={OTHER} " in source_step and f"run={RUN} module={module}" in source_step
    assert source_step in report["verdict"] and target_step in report["verdict"]
    shell(hints(source_step)[0])  # as spelled: the source's trace, in its environment
    assert runs.load(f"{RUN}+ops.{module}").origin.env == runs.load(RUN).env
    # now recorded: the comparison says so instead of asking for it again
    drill.run(tiny_cfg("task=drill", f"source={RUN}", f"target={HERE}", f"out_dir={tmp_path / 'again'}"))
    again = json.loads((tmp_path / "again" / "report.json").read_text())
    assert again["next_steps"][0] == "" and f"recorded in the store (`{RUN}+ops.{module}`)" in again["verdict"]
    drill.run(tiny_cfg("task=drill", f"source={RUN}", f"target={HERE}", f"module={module}",
                       f"out_dir={tmp_path / 'ops'}"))
    assert json.loads((tmp_path / "ops" / "report.json").read_text())["warnings"] == []
    # a comparison whose source has no trace of a module: the command spelled out
    with pytest.raises(UserError, match=f"no operation trace of colbert.doc: run `.*{VAR}={OTHER} "):
        drill.run(tiny_cfg("task=drill", f"source={RUN}", f"target={HERE}", "module=colbert.doc"))


def test_a_comparison_is_refused_outside_the_target_environment(runs, tiny_cfg, store_root):
    drill.run(tiny_cfg("task=drill", f"run={HERE}"))
    with pytest.raises(UserError) as refused:  # run in RUN's environment, the target (HERE) is elsewhere
        drill.run(tiny_cfg("task=drill", f"source={HERE}", f"target={RUN}"))
    assert f"{VAR}={OTHER} " in hints(str(refused.value))[0]
    assert f"task=drill source={HERE} target={RUN}" in hints(str(refused.value))[0]


def test_the_hint_names_a_spec_interpreter():
    here = environment()
    cfg = make_cfg("store.root=/tmp/store")
    default = RunManifest("cpu", {}, "h", {**here, "env": {VAR: "default"}, "environment": "cpu-default"}, Capture())
    assert f"{VAR}=default python -m colbert_swap task=drill run=cpu module=m`" in drill.run_in_hint(
        default, ["task=drill", "run=cpu", "module=m"], cfg)
    old = RunManifest("old", {}, "h", {**here, "env": {}, "environment": "torch-2.0.1"}, Capture())
    python = venv_dir(load_spec("torch-2.0.1"), Path("/tmp/store/envs")) / "bin" / "python"
    hint = drill.run_in_hint(old, ["task=drill", "run=old"], cfg)
    assert f"{python} -m colbert_swap task=drill run=old`" in hint and "torch-2.0.1" in hint
    assert drill.run_in_hint(old, ["task=drill", "run=old"]).endswith("` in environment torch-2.0.1 (its venv)")
