"""Reuse knows the code: a replay with reuse=true takes another run's outputs of a stage only where that run
computed them with the code this process runs for the stage (colbert_swap/core/code.py, ArtifactRecord.code).

The stage is edited for real in a copy of the package (finalize.py: the stages after the per-chunk ones), and the
hashing is pointed at that copy: the finalize stages are recomputed, the unchanged train and index stages are
still reused. A run whose records keep no code hash (written before they did) is never reused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import colbert_swap
import colbert_swap.colbert.resources as resources
import colbert_swap.runs.replay as replay_module
from colbert_swap.colbert.stages import DAG
from colbert_swap.core import code
from colbert_swap.core.code import CodeScope, code_hash
from colbert_swap.core.store import RunManifest, Store
from colbert_swap.runs.replay import phases, replay
from colbert_swap.tasks.capture import capture
from tests.conftest import quiet_progress

pytestmark = pytest.mark.numerics

POINT = "centroids"  # downstream: train's residual stages, index's codes and residuals, finalize's stages
FINALIZE = "colbert_swap.colbert.stages.finalize"


@pytest.fixture(scope="module")
def target(tiny_cfg):
    return capture(tiny_cfg("run=code-target"), progress=quiet_progress)


def _downstream(target: RunManifest, store: Store):
    return DAG.downstream_of([POINT], store.get(target, "num_chunks"), phases(target))


def _replay(tiny_cfg, target: RunManifest, label: str) -> tuple[RunManifest, dict[str, str]]:
    """A null injection of the centroids (source = target), reuse=true: node -> its progress line."""
    lines: list[str] = []
    cfg = tiny_cfg("reuse=true")
    replayed = replay(cfg, Store(cfg.store.root), target, target, [POINT], label=label, progress=lines.append)
    steps = {line.split("] ", 1)[1].split(" ", 1)[0]: line for line in lines if line.startswith("[")}
    return replayed, steps


@pytest.fixture
def edited_finalize(tmp_path, monkeypatch):
    """A copy of the package with finalize.py edited, and the stages' code hashed from that copy."""
    copy = tmp_path / "src"
    shutil.copytree(Path(colbert_swap.__file__).parent, copy / "colbert_swap",
                    ignore=shutil.ignore_patterns("__pycache__"))
    module = copy / "colbert_swap" / "colbert" / "stages" / "finalize.py"
    source = module.read_text()
    edited = source.replace("    return torch.cat([c.long() for c in chunk_codes])",  # all_codes, rewritten
                            "    codes = [c.long() for c in chunk_codes]\n    return torch.cat(codes)", 1)
    assert edited != source
    module.write_text(edited)
    scope = resources._code_scope()
    monkeypatch.setattr(resources, "_code_scope", lambda: CodeScope(scope.follow, scope.trees, root=copy))
    yield CodeScope(scope.follow, scope.trees, root=copy)
    code.clear()


def test_the_records_keep_the_code_that_computed_them_and_reuse_takes_the_same(target, tiny_cfg):
    scope, store = resources._code_scope(), Store(tiny_cfg().store.root)
    for name, record in target.artifacts.items():
        assert record.code == code_hash(DAG.producer(name), scope), name
    assert {n: r.code for n, r in store.load("code-target").artifacts.items()} == \
        {n: r.code for n, r in target.artifacts.items()}  # through JSON
    assert set(target.code_hashes()) == {r.stage for r in target.artifacts.values()}

    replayed, steps = _replay(tiny_cfg, target, "code-same")
    nodes = _downstream(target, store)
    assert nodes and all("reused" in steps[n.name] for n in nodes), steps
    assert all(replayed.artifacts[o].code == target.artifacts[o].code for n in nodes for o in n.outputs)


def test_an_edited_stage_is_recomputed_and_the_unchanged_ones_still_reused(target, tiny_cfg, edited_finalize):
    store = Store(tiny_cfg().store.root)
    nodes = _downstream(target, store)
    edited = {n.name for n in nodes if n.stage.fn.__module__ == FINALIZE}
    assert edited and edited != {n.name for n in nodes}
    replayed, steps = _replay(tiny_cfg, target, "code-edited")
    for node in nodes:
        new = code_hash(node.stage, edited_finalize)
        for o in node.outputs:
            assert replayed.artifacts[o].ref.hash == target.artifacts[o].ref.hash  # the code ran is the same
            assert replayed.artifacts[o].code == new
        if node.name in edited:
            assert "other code" in steps[node.name] and "recomputed" in steps[node.name], steps[node.name]
            assert new != target.artifacts[node.outputs[0]].code
        else:  # train and index: their modules do not import finalize.py
            assert "reused" in steps[node.name], steps[node.name]
            assert new == target.artifacts[node.outputs[0]].code
    saved = store.load("code-edited")
    assert {n: saved.code_hashes()[n] for n in edited} == {n.name: code_hash(n.stage, edited_finalize)
                                                            for n in nodes if n.name in edited}


def test_a_run_without_code_hashes_is_never_reused(target, tiny_cfg, monkeypatch):
    old = RunManifest.from_json(target.to_json())
    for record in old.artifacts.values():
        record.code = None  # as a run written before the records kept it
    monkeypatch.setattr(replay_module, "reuse_candidates", lambda store, target, label: [target])
    replayed, steps = _replay(tiny_cfg, old, "code-old")
    nodes = _downstream(target, Store(tiny_cfg().store.root))
    assert all("no code hash" in steps[n.name] and "recomputed" in steps[n.name] for n in nodes), steps
    assert all(replayed.artifacts[o].ref.hash == target.artifacts[o].ref.hash for n in nodes for o in n.outputs)


def test_a_stored_replay_of_other_code_is_computed_again(target, tiny_cfg, edited_finalize):
    """The same replay asked again after a stage was edited is no longer the one in the store: it is computed
    again (its label names the injection, not the code), and its finalize stages get the edited code's hash."""
    _replay(tiny_cfg, target, "code-again")
    lines: list[str] = []
    cfg = tiny_cfg("reuse=true")
    replay(cfg, Store(cfg.store.root), target, target, [POINT], label="code-again", progress=lines.append)
    assert any("already in the store" in line for line in lines), lines  # the same code: the stored replay

    store = Store(cfg.store.root)
    stored = store.load("code-again")
    for record in stored.artifacts.values():  # as if an older version of finalize.py had computed it
        if record.stage in {n.name for n in _downstream(target, store) if n.stage.fn.__module__ == FINALIZE}:
            record.code = "0" * 16
    store.save(stored)
    lines.clear()
    again = replay(cfg, store, target, target, [POINT], label="code-again", progress=lines.append)
    assert any("computed by other code than this" in line for line in lines), lines
    assert not any("already in the store" in line for line in lines)
    assert "0" * 16 not in {r.code for r in again.artifacts.values()}
