"""`ivf` in another order within each centroid (as the seed post saw across torch versions) is
`order_only`, and the pid-level `ivf_pid` that colbert-ai keeps stays `equal`."""

from __future__ import annotations

import copy

import torch

from colbert_swap.proof.compare.runs import compare_runs
from colbert_swap.core.store import ArtifactRecord, Store
from colbert_swap.tasks.capture import capture
from tests.conftest import quiet_progress


def test_ivf_permuted_within_centroids_is_order_only(tiny_cfg):
    cfg = tiny_cfg("run=order-a")
    store = Store(cfg.store.root)
    a = capture(cfg, progress=quiet_progress)
    ivf, lengths = store.get(a, "ivf"), store.get(a, "ivf_lengths")
    shuffled, offset = ivf.clone(), 0
    for n in lengths.tolist():  # reverse every centroid's list of embedding ids
        shuffled[offset:offset + n] = ivf[offset:offset + n].flip(0)
        offset += n
    assert not torch.equal(shuffled, ivf)
    b = copy.deepcopy(a)
    b.label = "order-b"
    b.artifacts["ivf"] = ArtifactRecord(ref=store.blobs.put(shuffled), stage="ivf")
    store.save(b)
    result = compare_runs(store, a, store.load("order-b"))
    assert result["ivf"].status == "order_only" and result["ivf_pid"].status == "equal"
    assert result.diverged() == []
