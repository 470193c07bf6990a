"""Explaining a divergence on hand-built cases with known answers: a planted tie between two near-twin
centroids, a permuted centroid set, magnitudes against rounding noise."""

from __future__ import annotations

import pytest
import torch

from colbert_swap.proof.analysis import centroids as cen
from colbert_swap.proof.analysis.magnitude import magnitude, noise_bound
from colbert_swap.proof.compare.ulp import ulp_at
from colbert_swap.proof.analysis.tokens import TokenMap, attribute, changed_rows

DIM, PASSAGES, LENGTH, TIE_TOKEN, TIE_POS = 8, 5, 4, 7, 1


def codes_of(embs: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """colbert-ai's ResidualCodec.compress_into_codes on the CPU."""
    return (centroids.float() @ embs.T.float()).max(dim=0).indices


def planted():
    """Six centroids, two of them near twins (x +- delta along axis 2); in every passage the token at
    position 1 sits exactly between the twins, on the twin-1 side in run a and, one rounding away, on the
    twin-2 side in run b. One more token really moves (from centroid 3 to centroid 4)."""
    x = torch.zeros(DIM)
    x[0], x[1] = 0.6, 0.8
    axis = torch.zeros(DIM)
    axis[2] = 0.01
    centroids = torch.stack([x + axis, x - axis, *torch.eye(DIM)[3:7]]).half()  # (6, DIM)
    rows = PASSAGES * LENGTH
    pid = torch.arange(PASSAGES).repeat_interleave(LENGTH)
    position = torch.arange(LENGTH).repeat(PASSAGES)
    token = 100 + torch.arange(rows)  # every other row a distinct token
    tie = position == TIE_POS
    token[tie] = TIE_TOKEN
    embs_a = torch.eye(DIM)[3 + torch.arange(rows) % 4].clone()  # near centroids 2..5
    embs_a[tie] = x
    embs_a[tie, 2] = 1e-5
    embs_b = embs_a.clone()
    embs_b[tie, 2] = -1e-5
    embs_b[6] = torch.eye(DIM)[4]  # a real move: row 6 (passage 1, position 2) from centroid 3 to 4
    tokens = TokenMap(pid, position, token, {TIE_TOKEN: "[D]"}, PASSAGES, PASSAGES)
    return centroids, embs_a.half(), embs_b.half(), tokens


def test_a_planted_tie_flips_exactly_the_tied_tokens():
    centroids, embs_a, embs_b, tokens = planted()
    codes_a, codes_b = codes_of(embs_a, centroids), codes_of(embs_b, centroids)
    changed = changed_rows(codes_a, codes_b)
    tied = (tokens.position == TIE_POS).nonzero().flatten()
    assert changed.tolist() == sorted([*tied.tolist(), 6])
    assert set(codes_a[tied].tolist()) == {0} and set(codes_b[tied].tolist()) == {1}

    groups = attribute(changed, tokens, "codes")
    assert groups.by_token_position[0] == ("[D]", TIE_POS, PASSAGES, PASSAGES)
    assert groups.headline().startswith(f"{PASSAGES} of {PASSAGES + 1} changed codes are token `[D]` at position 1")
    assert groups.passages_changed == PASSAGES

    twins = cen.near_twins(embs_b[changed], centroids, codes_a[changed], codes_b[changed],
                           embs_before=embs_a[changed], centroids_before=centroids)
    assert twins.flips == PASSAGES + 1 and twins.ties == PASSAGES  # the real move is no tie
    assert twins.centroid_distance["median"] == pytest.approx(float((centroids[0] - centroids[1]).double().norm()))
    assert twins.by_embedding == PASSAGES + 1 and twins.by_centroids == 0  # the centroids did not move


def test_a_tie_is_not_declared_when_the_gap_is_wide():
    centroids, embs_a, _, _ = planted()
    far = embs_a[[0]]  # sits on centroid 2, far from centroid 3
    twins = cen.near_twins(far, centroids, torch.tensor([3]), torch.tensor([2]))
    assert twins.ties == 0 and twins.gap["median"] == pytest.approx(1.0, abs=1e-3)


def test_a_permuted_centroid_set_is_a_relabeling_at_distance_zero():
    gen = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(64, 16, generator=gen), dim=-1).half()
    perm = torch.randperm(64, generator=gen)  # a's centroid i is b's centroid perm[i]
    b = torch.empty_like(a)
    b[perm] = a
    m = cen.match_centroids(a, b)
    assert torch.equal(m.perm, perm) and m.kind == "relabeled"
    assert m.stats()["max"] == 0 and m.stats()["exact"] == 64 and m.relabeled == int((perm != torch.arange(64)).sum())
    codes_a = torch.randint(0, 64, (500,), generator=gen)
    modulo = cen.codes_modulo(m, codes_a, perm[codes_a])
    assert modulo["same_modulo_matching"] == 500 and modulo["same_label"] < 500
    lengths = torch.full((64,), 2)
    pids_a = torch.arange(128)
    pids_b = torch.empty_like(pids_a).view(64, 2)
    pids_b[perm] = pids_a.view(64, 2)
    ivf = cen.ivf_modulo(m, pids_a, lengths, pids_b.flatten(), lengths)
    assert ivf["identical_lists"] == 64 and ivf["mean_jaccard"] == 1.0


@pytest.mark.parametrize("hungarian", [True, False])
def test_a_permuted_and_nudged_set_is_matched_back(hungarian, monkeypatch):
    if not hungarian:
        monkeypatch.setattr(cen, "HUNGARIAN_MAX", 0)  # mutual nearest neighbours
    gen = torch.Generator().manual_seed(2)
    a = torch.nn.functional.normalize(torch.randn(64, 16, generator=gen), dim=-1)
    perm = torch.randperm(64, generator=gen)
    b = torch.empty_like(a)
    b[perm] = a + 1e-4 * torch.randn(64, 16, generator=gen)
    m = cen.match_centroids(a, b)
    assert torch.equal(m.perm, perm) and m.kind == "moved" and m.method == ("hungarian" if hungarian else
                                                                             "mutual nearest neighbours")
    assert 0 < m.stats()["max"] < 1e-3


def test_moved_and_different_clusterings_are_told_apart():
    gen = torch.Generator().manual_seed(1)
    a = torch.nn.functional.normalize(torch.randn(64, 16, generator=gen), dim=-1)
    assert cen.match_centroids(a, a + 1e-3).kind == "moved"
    other = torch.nn.functional.normalize(torch.randn(64, 16, generator=gen), dim=-1)
    m = cen.match_centroids(a, other)
    assert m.kind == "different" and m.stats()["median"] > 0.1
    few_elsewhere = a.clone()
    few_elsewhere[:3] = -a[:3]  # 3 of 64 centroids at the antipode: the rest stays put
    assert cen.match_centroids(a, few_elsewhere).kind == "mostly_same"


def test_magnitude_against_rounding_noise():
    x = torch.linspace(0.1, 1.0, 1000)
    half = x.half()
    one_ulp = (half.double() + ulp_at(half, torch.float16)).half()
    m = magnitude("embs.0", half, one_ulp, n=32)
    assert m.verdict == "within" and m.max_ulp_bits == 1 and m.mismatches == 1000 and sum(m.ulp_hist.values()) == 1000
    assert m.max_units == 1 and set(m.ulp_hist) <= {"<1", "1"}
    assert noise_bound(torch.float32, 32) == 33 and noise_bound(torch.float16, 32) < 1.01
    wide = magnitude("prenorm_centroids", x, x + 1e-3, n=6)
    assert wide.verdict == "far_beyond" and wide.max_abs == pytest.approx(1e-3, rel=1e-3)
    # a value that cancels to nearly zero is not held to its own tiny ULP
    a = torch.tensor([0.5] * 9 + [1e-9])
    b = a.clone()
    b[-1] = -1e-9
    tiny = magnitude("local_sample_embs", a, b, n=32)
    assert tiny.verdict == "within" and tiny.max_ulp_bits > 10**6
