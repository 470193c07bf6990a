"""Bad input on the command line ends in one clear error (exit code 2, no traceback) and changes no run."""

from __future__ import annotations

import pytest

from colbert_swap.api import run
from colbert_swap.api import compose
from colbert_swap.errors import UserError
from colbert_swap.core.store import Store
from tests.conftest import TINY


def _files(tmp_path):
    (tmp_path / "bad.tsv").write_text("0\tfine\n7\tpid does not match its line\n")
    (tmp_path / "empty.tsv").write_text("")
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"title": "no text"}\n')
    (tmp_path / "latin1.tsv").write_bytes("0\tcaf\xe9\n".encode("latin-1"))


CASES = [
    (["model=local", "model.path=/nonexistent/checkpoint"], r"model.path='/nonexistent/checkpoint' is not a directory"),
    (["collection=tsv", "collection.path=/nonexistent.tsv"], r"collection.path='/nonexistent.tsv' is not a file"),
    (["collection=tsv", "collection.path={tmp}/bad.tsv"], r"bad.tsv:2: pid '7' must equal"),
    (["collection=tsv", "collection.path={tmp}/empty.tsv"], r"empty.tsv is empty"),
    (["collection=jsonl", "collection.path={tmp}/bad.jsonl"], r"bad.jsonl:2: expected a JSON object with a 'text'"),
    (["collection=tsv", "collection.path={tmp}/latin1.tsv"], r"latin1.tsv:1: not UTF-8 text"),
    (["run=../escape"], r"run name '../escape' is not allowed"),
    (["task=compare", "source=nosuch", "target=alsonot"], r"run 'nosuch' is not in the store"),
    (["task=bogus"], r"task='bogus' is unknown"),
]


@pytest.mark.parametrize("overrides, message", CASES, ids=[c[1][:30] for c in CASES])
def test_bad_input_is_one_clear_error(tmp_path, overrides, message):
    _files(tmp_path)
    store = tmp_path / "store"
    cfg = compose(f"store.root={store}", *TINY, *[o.format(tmp=tmp_path) for o in overrides])
    with pytest.raises(UserError, match=message):
        run(cfg)
    assert all(not Store(store).load(label).complete for label in Store(store).runs())
    for label in Store(store).runs():  # refused before the sample was encoded: only the plan's two nodes ran
        assert set(Store(store).load(label).artifacts) <= {"num_passages", "num_chunks"}  # nothing half-done claims done


def test_an_injection_of_another_dtype_is_refused(tiny_cfg):
    from dataclasses import replace

    from colbert_swap.runs.replay import replay
    from colbert_swap.tasks.capture import capture
    from tests.conftest import quiet_progress

    target = capture(tiny_cfg("run=target"), progress=quiet_progress)
    store = Store(tiny_cfg().store.root)
    half = store.load("target")
    half.label = "half-source"
    record = half.artifacts["local_sample_embs"]
    half.artifacts["local_sample_embs"] = replace(record, ref=store.blobs.put(store.get(target, "local_sample_embs").half()))
    store.save(half)
    with pytest.raises(UserError, match=r"cannot inject 'local_sample_embs': source 'half-source' has float16 .* "
                                        r"target 'target' has float32"):
        replay(tiny_cfg(), store, target, store.load("half-source"), ["local_sample_embs"])


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="on a GPU machine flash-kmeans runs")
def test_the_flash_kmeans_backend_on_a_machine_without_a_gpu_is_one_error_line(tmp_path):
    """`index.kmeans_backend=flash` on the CPU: exit 2, one `error:` line naming why and what to use instead, no
    traceback, and no run claims to be complete."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))}
    store = tmp_path / "store"
    out = subprocess.run([sys.executable, "-m", "colbert_swap", "index.kmeans_backend=flash", f"store.root={store}",
                          *TINY], cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 2, out.stderr[-3000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: index.kmeans_backend=flash needs a CUDA GPU (flash-kmeans runs triton kernels); this "
                      "machine has none: use faiss or torch"], out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    assert all(not Store(store).load(label).complete for label in Store(store).runs())
    for label in Store(store).runs():  # refused before the sample was encoded: only the plan's two nodes ran
        assert set(Store(store).load(label).artifacts) <= {"num_passages", "num_chunks"}
