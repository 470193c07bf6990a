"""Why an environment failed, read from its log: the kind decides the advice, the reason is always shown."""

from __future__ import annotations

from pathlib import Path

from colbert_swap.env.failure import from_log

CRASH = """$ /envs/t/bin/python -m colbert_swap run=torch-2.0.1 store.root=/s
[    4.4s] capturing run 'torch-2.0.1' into /s/runs/torch-2.0.1
Error executing job with overrides: ['run=torch-2.0.1']
Traceback (most recent call last):
  File "/work/main/colbert_swap/__main__.py", line 33, in _hydra_main
    status = run(cfg)
  File "/work/main/colbert_swap/core/store/blobs.py", line 130, in put
    self._wait_for_room(cpu.nbytes)
                        ^^^^^^^^^^
AttributeError: 'Tensor' object has no attribute 'nbytes'

Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.
"""

COLBERT = """Traceback (most recent call last):
  File "/work/main/colbert_swap/colbert/stages/setup.py", line 40, in checkpoint
    return Checkpoint(name, colbert_config=config)
  File "/envs/t/lib/python3.11/site-packages/colbert/modeling/checkpoint.py", line 19, in __init__
    super().__init__(name, colbert_config)
ImportError: cannot import name 'AdamW' from 'transformers'
"""

LIBRARY = """Traceback (most recent call last):
  File "/work/main/colbert_swap/colbert/stages/setup.py", line 40, in checkpoint
    return model(ids)
  File "/envs/t/lib/python3.11/site-packages/transformers/modeling_utils.py", line 99, in forward
    raise ValueError("bad")
ValueError: bad
"""

INSTALL = """$ uv pip install --python /envs/b/bin/python colbert-swap-no-such-package==9.9
Using Python 3.11.7 environment at: /envs/b
  × No solution found when resolving dependencies:
  ╰─▶ Because colbert-swap-no-such-package was not found in the package registry and you require
      colbert-swap-no-such-package==9.9, we can conclude that your requirements are unsatisfiable.
"""


def test_a_crash_inside_colbert_swap_is_a_bug_with_its_reason_and_place(tmp_path: Path):
    f = from_log("torch-2.0.1", tmp_path / "t.log", "capture", 1, CRASH)
    assert f.kind == "colbert_swap"
    assert f.reason == "AttributeError: 'Tensor' object has no attribute 'nbytes'"
    assert f.where == "colbert_swap/core/store/blobs.py:130 in put"
    assert f.line() == ("colbert_swap crashed: AttributeError: 'Tensor' object has no attribute 'nbytes' "
                        "(colbert_swap/core/store/blobs.py:130 in put)")
    assert "bug in colbert_swap" in f.advice() and "fix the spec" not in f.advice() and str(tmp_path) in f.advice()
    assert "AttributeError" in f.tail and "self._wait_for_room(cpu.nbytes)" in f.tail
    assert f.to_json()["line"] == f.line() and f.to_json()["kind"] == "colbert_swap"
    assert f.text().startswith("environment 'torch-2.0.1': colbert_swap crashed: AttributeError")


def test_colbert_ai_and_other_libraries_are_told_apart_from_our_bugs(tmp_path: Path):
    colbert = from_log("t", tmp_path / "t.log", "capture", 1, COLBERT)
    assert colbert.kind == "colbert-ai" and colbert.package == "colbert-ai"
    assert colbert.reason == "ImportError: cannot import name 'AdamW' from 'transformers'"
    assert colbert.where == "colbert/modeling/checkpoint.py:19 in __init__"
    assert "incompatibility" in colbert.advice() and "bug in colbert_swap" not in colbert.advice()
    library = from_log("t", tmp_path / "t.log", "capture", 1, LIBRARY)
    assert (library.kind, library.package, library.reason) == ("library", "transformers", "ValueError: bad")
    assert library.line().startswith("transformers failed: ValueError: bad")


def test_a_refusal_an_install_failure_and_a_kill(tmp_path: Path):
    refused = from_log("t", tmp_path / "t.log", "capture", 2, "error: run 't' exists with another config\n")
    assert refused.kind == "refused" and refused.reason == "run 't' exists with another config"
    install = from_log("b", tmp_path / "b.log", "installing its requirements", 1, INSTALL)
    assert install.kind == "install" and install.reason == "× No solution found when resolving dependencies:"
    assert "colbert-swap-no-such-package was not found" in install.tail
    assert install.line().startswith("installing its requirements failed: × No solution found")
    assert "fix its requirements" in install.advice()
    killed = from_log("t", tmp_path / "t.log", "capture", -9, "[ 1.0s] building the model\n")
    assert killed.kind == "killed" and killed.reason == "signal 9" and "run the same command again" in killed.advice()
    assert from_log("t", tmp_path / "none.log", "capture", 1).reason == "exit 1"  # an empty (or missing) log
