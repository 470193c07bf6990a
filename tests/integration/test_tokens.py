"""Tokenization as artifacts of its own (`sample_tokens`, `tokens.N`): a tokenizer change and a model change
are told apart.

A planted tokenizer difference (one word rewritten in a few passages, in the source run only) acts on every
machine: `locate` must name the token artifacts, and injecting them must make everything equal. A model
change (a planted weight scale) keeps the tokens equal, and the reports say so. The slow (Python) and fast
(Rust) tokenizers split a character differently only where their Unicode tables differ: measured first."""

from __future__ import annotations

import pytest
import torch

from colbert_swap.proof.compare.runs import compare_runs
from colbert_swap.runs.replay import compact
from colbert_swap.colbert.stages import DAG
from colbert_swap.core.store import Store
from colbert_swap.tasks.capture import capture
from colbert_swap.tasks.inject import inject
from colbert_swap.tasks.locate import locate
from colbert_swap.tasks.locate import verdict as locate_verdict
from tests.conftest import quiet_progress

PLANTED = "zebra"  # what the planted tokenizer reads first in a few passages (one in seven, by content)


def planted_text(text: str) -> str:
    import zlib

    return f"{PLANTED} {text}" if zlib.crc32(text.encode()) % 7 == 0 else text


@pytest.fixture(scope="module")
def token_runs(tiny_cfg):
    """tok-base (as colbert-ai tokenizes), tok-planted (a tokenizer that reads `zebra` before a few passages),
    tok-scale (a planted model change)."""
    from colbert.modeling.tokenization import DocTokenizer

    out = {"base": capture(tiny_cfg("run=tok-base"), progress=quiet_progress)}
    original = DocTokenizer.tensorize

    def planted(self, batch_text, bsize=None):
        return original(self, [planted_text(t) for t in batch_text], bsize=bsize)

    DocTokenizer.tensorize = planted
    try:
        out["planted"] = capture(tiny_cfg("run=tok-planted"), progress=quiet_progress)
    finally:
        DocTokenizer.tensorize = original
    out["scale"] = capture(tiny_cfg("run=tok-scale", "perturb=scale_layer"), progress=quiet_progress)
    return out


def test_a_capture_stores_colbert_ais_tensorize_output(token_runs, tiny_cfg):
    """sample_tokens holds exactly what DocTokenizer.tensorize gives each group, in passage order."""
    from colbert_swap.colbert.resources import Resources

    cfg = tiny_cfg("run=tok-base")
    store = Store(cfg.store.root)
    run = token_runs["base"]
    resources = Resources(cfg, store, store.run_dir("tok-base"))
    pids = store.get(run, "sample_pids").tolist()
    passages = [resources.corpus.passages[p] for p in pids]
    bsize = resources.colbert_config.index_bsize
    batches, reverse = resources.checkpoint.doc_tokenizer.tensorize(passages, bsize=bsize)  # one group here
    ids = torch.cat([b[0] for b in batches])[reverse]
    masks = torch.cat([b[1] for b in batches])[reverse]
    assert torch.equal(store.get(run, "sample_tokens").long(), ids)
    assert torch.equal(store.get(run, "sample_token_masks").long(), masks)
    assert torch.equal(store.get(run, "sample_token_order"), reverse)
    assert DAG.producer("local_sample_embs").inputs[0] == ("sample_tokens", "sample_tokens")


def test_a_tokenizer_difference_is_located_to_the_token_artifacts(token_runs, tiny_cfg):
    cfg = tiny_cfg("source=tok-planted", "target=tok-base")
    store = Store(cfg.store.root)
    before = compare_runs(store, token_runs["planted"], token_runs["base"])
    assert not before["sample_tokens"].same and not before["tokens.0"].same
    result = locate(cfg, store, progress=quiet_progress)
    names = [n for g in result.minimal for n in compact(g, result.num_chunks)]
    assert names == ["sample_tokens", "tokens"]
    assert result.final_cmp.diverged() == [] and result.whole.index == {}
    assert "The tokenizer's output differs" in locate_verdict(result)


def test_injecting_the_tokens_replays_the_encoder_on_them(token_runs, tiny_cfg):
    """inject=sample_tokens brings the masks and the order along (one tokenizer output), of another width if
    need be, and the report names the passages and tokens that changed, decoded."""
    from colbert_swap.tasks.inject import explanations

    cfg = tiny_cfg("source=tok-planted", "target=tok-base")
    store = Store(cfg.store.root)
    result = inject(cfg, store, ["sample_tokens", "tokens"], progress=quiet_progress)
    assert set(result.replayed.origin.injected) == {"sample_tokens", "sample_token_masks", "sample_token_order",
                                                   "tokens.0", "token_masks.0", "token_order.0"}
    assert result.names == ["sample_tokens", "tokens"]
    assert result.whole.identical, result.verdict
    assert "the tokenizer explains the embeddings" in result.verdict
    text, data = explanations(store, result, store.root / "explain-test")
    ids = data["injected"]["sample_tokens"]["tokens"]
    assert ids["passages_changed"] > 0 and ids["changed"][0]["a"][0] == PLANTED
    assert ids["changed"][0]["position"] == 2  # [CLS] [D] then the planted word
    assert "tokenized differently" in text


def test_a_model_difference_keeps_the_tokens_equal(token_runs, tiny_cfg):
    cfg = tiny_cfg("source=tok-scale", "target=tok-base")
    store = Store(cfg.store.root)
    before = compare_runs(store, token_runs["scale"], token_runs["base"])
    assert all(before[n].same for n in ("sample_tokens", "sample_token_masks", "sample_token_order", "tokens.0"))
    assert not before["local_sample_embs"].same
    result = inject(cfg, store, ["sample_tokens"], progress=quiet_progress)
    assert "the model computes differently on the same tokens" in result.verdict


def test_eager_attention_is_located_to_the_embeddings_with_tokens_equal(tiny_cfg):
    cfg = tiny_cfg("source=tok-eager", "target=tok-base")
    store = Store(cfg.store.root)
    if not store.has_run("tok-base"):
        capture(tiny_cfg("run=tok-base"), progress=quiet_progress)
    eager = capture(tiny_cfg("run=tok-eager", "perturb=eager"), progress=quiet_progress)
    before = compare_runs(store, eager, store.load("tok-base"))
    if not before.diverged():
        pytest.skip(f"eager attention gives SDPA's run bitwise on this machine "
                    f"({torch.backends.cpu.get_cpu_capability()}): nothing to locate")
    assert before["sample_tokens"].same
    result = locate(cfg, store, progress=quiet_progress)
    assert [n for g in result.minimal for n in g][0] == "local_sample_embs"
    assert "Tokens equal" in locate_verdict(result)


SLOW_FAST = "end\u061dmark"  # U+061D (Unicode 14): punctuation to Python 3.11's tables; the Rust tokenizer's differ


def test_slow_and_fast_tokenizers_where_they_differ(tiny_cfg, tmp_path):
    """perturb.tokenizer=slow: measured on a probe first; where the two split it differently, a collection
    holding it is located to the tokens, and the slow run's index is made identical by injecting them."""
    from transformers import AutoTokenizer

    from colbert_swap.colbert.resources import Resources

    base = tiny_cfg()
    store = Store(base.store.root)
    path = Resources(base, store, tmp_path).checkpoint_path
    fast, slow = (AutoTokenizer.from_pretrained(path, use_fast=f) for f in (True, False))
    if fast(SLOW_FAST)["input_ids"] == slow(SLOW_FAST)["input_ids"]:
        pytest.skip(f"the slow and fast tokenizers split {SLOW_FAST!r} alike here")
    collection = tmp_path / "c.tsv"
    words = "river city music history science ocean forest light energy".split()
    collection.write_text("".join(f"{i}\t{' '.join(words[(i + j) % 9] for j in range(5 + i % 20))}"
                                  f"{' ' + SLOW_FAST if i % 10 == 3 else ''}\n" for i in range(120)))
    over = ["collection=tsv", f"collection.path={collection}"]
    capture(tiny_cfg("run=tok-fast", *over), progress=quiet_progress)
    capture(tiny_cfg("run=tok-slow", "perturb=slow_tokenizer", *over), progress=quiet_progress)
    cfg = tiny_cfg("source=tok-slow", "target=tok-fast", *over)
    result = locate(cfg, store, progress=quiet_progress)
    assert [n for g in result.minimal for n in compact(g, result.num_chunks)] == ["sample_tokens", "tokens"]
    assert result.whole.index == {}


def test_a_difference_of_the_length_sort_alone_is_not_called_a_tokenizer_difference(token_runs):
    """An H200 and a CPU machine tokenized every passage alike but sorted passages of equal length in another order
    (torch.sort is not stable): the verdict said the passages were split into other tokens. Only the order differs
    here, so it says that; where the ids differ too, it says the tokenizer's output differs."""
    import copy
    import dataclasses
    from types import SimpleNamespace

    from colbert_swap.tasks.locate import tokens_sentence

    base, planted = token_runs["base"], token_runs["planted"]
    reordered = copy.deepcopy(base)
    for name in ("sample_token_order", "token_order.0"):
        record = reordered.artifacts[name]
        reordered.artifacts[name] = dataclasses.replace(record, ref=dataclasses.replace(record.ref, hash="0" * 32))
    groups = [["sample_tokens", "sample_token_masks", "sample_token_order"], ["tokens.0", "token_masks.0", "token_order.0"]]

    order_only = tokens_sentence(SimpleNamespace(minimal=groups, source=reordered, target=base, num_chunks=1))
    tokens_differ = tokens_sentence(SimpleNamespace(minimal=groups, source=planted, target=base, num_chunks=1))

    assert "The tokens are equal; only colbert-ai's length sort" in order_only and "other tokens" not in order_only
    assert "`sample_token_order`" in order_only
    assert tokens_differ.startswith(" The tokenizer's output differs")
