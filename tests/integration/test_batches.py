"""capture.batches=true (issue 20): each encoder batch's padded output (`sample_batches`, `batches.N`) and
colbert-ai's `D` (`sample_D`, `D.N`) as artifacts of their own, between the tokens and the embeddings.

What holds on every machine: the run's other artifacts and its index are bit-identical to a capture
without them; `sample_D` is what colbert-ai's own `docFromText(..., keep_dims=True)` returns; a null
injection of the new artifacts is exact; a planted model change is located to the batches with the tokens
equal, and injecting them makes the whole run equal."""

from __future__ import annotations

import pytest
import torch

from colbert_swap.proof.compare.runs import compare_runs
from colbert_swap.errors import UserError
from colbert_swap.colbert.index_files import index_differences
from colbert_swap.runs.replay import compact, options, phases, replay
from colbert_swap.colbert.stages import DAG
from colbert_swap.core.store import Store
from colbert_swap.tasks.capture import capture
from colbert_swap.tasks.locate import locate
from colbert_swap.tasks.locate import verdict as locate_verdict
from tests.conftest import quiet_progress

CHUNKED = ["index.chunksize=40"]  # 120 passages: three chunks
BATCHES = ["capture.batches=true", *CHUNKED]
NEW = ["sample_batches", "sample_D", *(f"{name}.{c}" for name in ("batches", "D") for c in range(3))]


def hashes(manifest):
    return {k: r.ref.hash for k, r in manifest.artifacts.items()}


@pytest.fixture(scope="module")
def batch_runs(tiny_cfg):
    return {"off": capture(tiny_cfg("run=batches-off", *CHUNKED), progress=quiet_progress),
            "on": capture(tiny_cfg("run=batches-on", *BATCHES), progress=quiet_progress),
            "scale": capture(tiny_cfg("run=batches-scale", *BATCHES, "perturb=scale_layer"), progress=quiet_progress)}


def test_batches_add_artifacts_and_change_nothing_else(batch_runs, tiny_cfg):
    off, on = batch_runs["off"], batch_runs["on"]
    assert set(on.artifacts) - set(off.artifacts) == set(NEW)
    assert {k: v for k, v in hashes(on).items() if k not in NEW} == hashes(off)
    store = Store(tiny_cfg().store.root)
    assert index_differences(store.run_dir("batches-on") / "index", store.run_dir("batches-off") / "index") == {}
    assert options(on) == {"batches"} and options(off) == frozenset()


def test_sample_D_is_colbert_ais_docFromText_output(batch_runs, tiny_cfg):
    """One group here (index_bsize 16 x 50 > 120 passages): docFromText(keep_dims=True) is D, padded."""
    from colbert_swap.colbert.resources import Resources

    cfg = tiny_cfg("run=batches-on", *BATCHES)
    store = Store(cfg.store.root)
    run = batch_runs["on"]
    resources = Resources(cfg, store, store.run_dir("batches-on"))
    passages = [resources.corpus.passages[p] for p in store.get(run, "sample_pids").tolist()]
    with torch.inference_mode():
        D = resources.checkpoint.docFromText(passages, bsize=resources.colbert_config.index_bsize, keep_dims=True)[0]
    batches, sample_D, order = (store.get(run, n) for n in ("sample_batches", "sample_D", "sample_token_order"))
    assert sample_D.shape == D.shape == batches.shape
    assert torch.equal(sample_D, D)
    assert torch.equal(batches[order], sample_D)
    lengths = store.get(run, "sample_token_masks").sum(1)
    assert torch.equal(lengths[order.sort().indices], lengths.sort().values)  # batches: colbert-ai's length order


def test_runs_with_and_without_batches_compare_equal(batch_runs, tiny_cfg):
    store = Store(tiny_cfg().store.root)
    comparison = compare_runs(store, batch_runs["off"], batch_runs["on"])
    assert comparison.diverged() == []
    assert not set(NEW) & {c.name for c in comparison.results}  # compared only where both runs keep them
    from colbert_swap.proof.compare.runs import whole_run
    from colbert_swap.tasks.compare import verdict

    text = verdict(comparison, whole_run(store, comparison, batch_runs["off"], batch_runs["on"]))
    assert "artifacts both runs hold are bitwise equal" in text  # the verdict speaks of the whole runs:
    assert f"batches-on alone also keeps {len(NEW)} artifacts (`sample_batches`, `sample_D`, `batches.0`" in text
    assert text.endswith("colbert-ai's index files of batches-off and batches-on are identical.")


@pytest.mark.parametrize("point", ["sample_batches", "sample_D", "batches", "D"])
def test_null_injection_of_the_batches_is_exact(batch_runs, tiny_cfg, point):
    cfg = tiny_cfg("reuse=false")
    store = Store(cfg.store.root)
    target = batch_runs["on"]
    replayed = replay(cfg, store, target, target, [point], label=f"null-batches-{point}")
    downstream = [o for n in DAG.downstream_of(replayed.origin.injected, 3, phases(target), options(target))
                  for o in n.outputs]
    assert {"local_sample_embs", "embs.0"} & set(downstream), point
    assert all(replayed.artifacts[n] is not target.artifacts[n] for n in downstream)
    assert hashes(replayed) == hashes(target)


def test_a_model_change_is_located_to_the_batches_with_tokens_equal(batch_runs, tiny_cfg):
    cfg = tiny_cfg("source=batches-scale", "target=batches-on")
    store = Store(cfg.store.root)
    result = locate(cfg, store, progress=quiet_progress)
    names = [n for g in result.minimal for n in compact(g, result.num_chunks)]
    assert "sample_batches" in names and "batches" in names, names
    assert not {"sample_tokens", "tokens", "local_sample_embs", "embs"} & set(names), names
    assert result.final_cmp.diverged() == []  # injecting the located batches makes the whole run equal
    assert "Tokens equal" in locate_verdict(result)


def test_batches_need_both_runs_to_keep_them(batch_runs, tiny_cfg):
    cfg = tiny_cfg()
    store = Store(cfg.store.root)
    with pytest.raises(UserError, match="capture.batches=true"):
        replay(cfg, store, batch_runs["off"], batch_runs["on"], ["sample_batches"])


def test_the_dag_has_the_batches_only_when_asked():
    plain = {n.name: n.input_names() for n in DAG.nodes(2)}
    asked = {n.name: n.input_names() for n in DAG.nodes(2, options=["batches"])}
    assert "batches.0" not in plain and "D.1" in asked and "sample_D" in asked
    assert "D.1" in asked["embs.1"] and "D.1" not in plain["embs.1"]
    assert "sample_D" in asked["local_sample_embs"] and "sample_D" not in plain["local_sample_embs"]
    assert {n: i for n, i in asked.items() if n in plain and n not in ("embs.0", "embs.1", "local_sample_embs")} == \
        {n: i for n, i in plain.items() if n not in ("embs.0", "embs.1", "local_sample_embs")}
