"""The sentences of a "what this means" paragraph, one builder per analysis."""

from __future__ import annotations

from colbert_swap.proof.analysis.centroids import Matching, NearTwins
from colbert_swap.proof.analysis.tokens import Attribution


KINDS = {"identical": "the same centroids", "relabeled": "the same centroids relabeled: the same clustering",
         "rounding": "the same clustering up to rounding", "moved": "the same clustering, centroids slightly moved",
         "mostly_same": "mostly the same clustering, a few centroids elsewhere",
         "different": "a different clustering"}


def g(x: float | None) -> str:
    return "n/a" if x is None else "0" if x == 0 else f"{x:.3g}"


def pct(n: int, total: int) -> str:
    return f"{n / total:.2%}" if total else "n/a"


def tokens(att: Attribution) -> str:
    text = att.headline()
    if att.changed and att.attributed and att.by_position[0][1] < att.changed and "spread over" not in text:
        positions = ", ".join(f"{p} ({n:,})" for p, n, _ in att.by_position[:3])
        text += f"; by position: {positions}"
    if att.note:
        text += f" ({att.note})"
    return text + "."


def matching(m: Matching) -> str:
    s = m.stats()
    head = (f"Matching its {s['centroids']:,} centroids one to one ({s['method']}): {s['matched']:,} matched, "
            f"{s['relabeled']:,} under another label, {s['exact']:,} at distance 0")
    dist = (f"matched distance median {g(s['median'])}, 90th percentile {g(s['p90'])}, max {g(s['max'])}, "
            f"against a median spacing of {g(s['spacing'])} between neighbouring centroids")
    if s["kind"] == "relabeled":
        return f"{head}, every match at distance 0: the same centroids relabeled, the same clustering."
    if s["kind"] == "identical":
        return f"{head}: the same centroids."
    if s["kind"] == "rounding":
        return f"{head}; {dist}; all within rounding ({g(s['noise'])}): the same clustering."
    if s["kind"] == "moved":
        return (f"{head}; {dist}; every centroid has a counterpart within half the spacing: the same clustering "
                "with slightly moved centroids.")
    near = f"{s['below_half_spacing']:,} of {s['centroids']:,} have a counterpart within half the spacing"
    if s["kind"] == "mostly_same":
        return (f"{head}; {dist}; {near}: mostly the same clustering, with "
                f"{s['centroids'] - s['below_half_spacing']:,} centroid(s) elsewhere.")
    return f"{head}; {dist}; {near}: a different clustering."


def codes(twins: NearTwins | None, modulo: dict | None, match: Matching | None) -> str:
    parts = []
    if modulo is not None:
        n = modulo["embeddings"]
        parts.append(f"The centroids differ ({KINDS[match.kind]}): {modulo['same_label']:,} of {n:,} codes keep "
                     f"their label, {modulo['same_modulo_matching']:,} ({pct(modulo['same_modulo_matching'], n)}) "
                     "land on the matched centroid")
    if twins is not None:
        sampled = f" (measured on {twins.analysed:,})" if twins.analysed < twins.flips else ""
        verb = "flips" if modulo is None else "flips left after the matching"
        near = (twins.centroid_distance["median"] is not None
                and twins.centroid_distance["median"] < 0.5 * twins.spacing)
        text = (f"Of the {twins.flips:,} {verb}{sampled}, {twins.ties:,} are ties within numerical noise (score gap "
                f"between old and new centroid: median {g(twins.gap['median'])}; noise threshold: median "
                f"{g(twins.noise['median'])}). Old and new centroid lie {g(twins.centroid_distance['median'])} apart "
                f"(median; max {g(twins.centroid_distance['max'])}) against a median spacing of {g(twins.spacing)}"
                + (": near twins" if near else "")
                + f"; the old centroid now ranks {g(twins.old_rank['median'])} (median) among the embedding's nearest, "
                f"whose two nearest are {g(twins.margin['median'])} apart in score (median)")
        if twins.by_embedding is not None:
            text += (f"; what moved the gap more: the centroids' movement in {twins.by_centroids:,} flips, the "
                     f"embedding's change in {twins.by_embedding:,}")
        parts.append(text)
    return ". ".join(p.rstrip(".") for p in parts) + "." if parts else ""


def residuals(causes: dict) -> str:
    n = causes["changed"]
    parts = []
    if "code_changed" in causes:
        parts.append(f"{causes['code_changed']:,} of {n:,} changed rows changed their code too")
    if "embedding_changed" in causes:
        parts.append(f"{causes['embedding_changed']:,} their embedding")
    if causes.get("centroids_changed"):
        parts.append("the centroids the residuals are taken against differ as well")
    if causes.get("cutoffs_changed"):
        parts.append("the bucket cutoffs that quantize them differ, so components near a cutoff land in another bucket")
    return ("; ".join(parts) + ".") if parts else ""


def labels(name: str, data: dict, match: Matching | None, said_in: str | None = None) -> str:
    """The label-level paragraph; `said_in`: the artifact whose paragraph already gave the codes' agreement
    (it is the same for every label-level artifact, so it is said once)."""
    codes = data.get("codes")
    ivf = data.get("ivf_pid")
    parts = []
    if codes and said_in:
        parts.append(f"It follows from the codes (see `{said_in}`)")
    elif codes and match is not None:
        n = codes["embeddings"]
        parts.append(f"Modulo the centroid matching ({KINDS[match.kind]}), {codes['same_modulo_matching']:,} of "
                     f"{n:,} embeddings ({pct(codes['same_modulo_matching'], n)}) sit in the corresponding list")
    elif codes:
        parts.append(f"This follows from {codes['moved']:,} of {codes['embeddings']:,} embeddings moving from "
                     f"{codes['centroids_left']:,} centroids to {codes['centroids_joined']:,} others")
    if ivf and name.startswith("ivf"):
        parts.append(f"{ivf['identical_lists']:,} of {ivf['lists']:,} pid lists are identical"
                     + (" modulo the matching" if match is not None else "")
                     + f" (mean Jaccard {ivf['mean_jaccard']:.3f})")
    return "; ".join(parts) + "." if parts else ""
