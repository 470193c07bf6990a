"""Explain every diverging artifact of a run comparison: one `Explanation` (a paragraph and its numbers)
per artifact.

    explanations = analyze(store, a, b, comparison)   # [] at once when nothing diverges

Pure analysis: it reads artifacts and computes; colbert_swap/proof/report/meaning.py draws the figures and
renders the section. Float artifacts get their magnitude against rounding noise; centroid sets a
label-invariant matching; `embs.N`, `codes.N` and `residuals.N` token attribution; `codes.N` the near-twin
analysis of each flip; the label-level artifacts (`all_codes`, `values`, `ivf*`) their agreement modulo
the centroid matching. Everything is computed on demand and at most once per run pair.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import torch

from colbert_swap.proof.compare.comparators import FLOATS, Status
from colbert_swap.proof.compare.runs import RunComparison
from colbert_swap.proof.analysis import centroids as cen
from colbert_swap.proof.analysis import magnitude as mag
from colbert_swap.proof.analysis import paragraphs
from colbert_swap.proof.analysis.tokens import (Attribution, TokenChanges, TokenMap, attribute, changed_rows, doc_tokenizer,
                                          token_changes, token_map)
from colbert_swap.colbert.stages import DAG
from colbert_swap.core.store import RunManifest, Store
from colbert_swap.colbert.plan import plan

CACHE_BYTES = 256 << 20
TOKEN_ARTIFACTS = {"sample_tokens": "Token ids (colbert-ai's `tensorize_output`)", "tokens": "Token ids (colbert-ai's `tensorize_output`)",
                   "sample_token_masks": "Attention masks", "token_masks": "Attention masks",
                   "sample_token_order": "Length-sort order", "token_order": "Length-sort order"}
TOKEN_PART = {"sample_tokens": "ids", "tokens": "ids", "sample_token_masks": "masks", "token_masks": "masks",
              "sample_token_order": "order", "token_order": "order"}
REUSE_ABOVE = 2048


@dataclass(frozen=True)
class Explanation:
    name: str
    text: str  # the "what this means" paragraph (markdown)
    data: dict = field(default_factory=dict)
    magnitude: mag.Magnitude | None = None  # behind the histogram report/meaning.py draws

    def to_json(self) -> dict:
        return {"text": self.text, **self.data}


class _Pair:
    """Both runs' artifacts, loaded once; derived analyses cached."""

    def __init__(self, store: Store, a: RunManifest, b: RunManifest):
        self.store, self.a, self.b = store, a, b
        self._cache: dict[tuple[str, str], object] = {}

    def get(self, side: str, name: str):
        """An artifact of run a or b; kept in memory unless it is large (then read again when needed)."""
        key = (side, name)
        if key in self._cache:
            return self._cache[key]
        run = self.a if side == "a" else self.b
        value = self.store.get(run, name) if name in run.artifacts else None
        if not isinstance(value, torch.Tensor) or value.numel() * value.element_size() <= CACHE_BYTES:
            self._cache[key] = value
        return value

    def said(self, name: str) -> str | None:
        """The first label-level artifact explained in this pair (None when `name` is it)."""
        first = self._cache.setdefault(("said", "labels"), name)
        return None if first == name else first

    def same(self, name: str) -> bool:
        ra, rb = self.a.artifacts.get(name), self.b.artifacts.get(name)
        return ra is not None and rb is not None and ra.ref.hash == rb.ref.hash

    @cached_property
    def num_chunks(self) -> int:
        return plan(self.store, self.a).num_chunks

    def chunk_offset(self, chunk: int) -> int:
        return sum(int(self.get("a", f"doclens.{c}").sum()) for c in range(chunk))

    @cached_property
    def tokens(self) -> TokenMap | str:
        """The token map of run a (its rows are b's rows too when both runs' doclens agree), or why not."""
        if any(not self.same(f"doclens.{c}") for c in range(self.num_chunks)):
            return "the runs' doclens differ, so their embedding rows are different tokens"
        rows = self.changed_token_rows()
        try:
            return token_map(self.store, self.a, rows=rows)
        except Exception as exc:  # a missing checkpoint or collection must not sink the whole report
            return f"token attribution unavailable ({type(exc).__name__}: {exc})"

    @cached_property
    def sample_tokens(self) -> TokenMap | str:
        """The token map of local_sample_embs' rows (the sampled passages, in pid order)."""
        if not (self.same("sample_doclens") and self.same("sample_pids")):
            return "the runs sampled different passages"
        rows = changed_rows(self.get("a", "local_sample_embs"), self.get("b", "local_sample_embs"))
        try:
            return token_map(self.store, self.a, rows=rows, sample=True)
        except Exception as exc:
            return f"token attribution unavailable ({type(exc).__name__}: {exc})"

    @cached_property
    def hidden(self) -> int | None:
        """The encoder's hidden size, from run a's checkpoint (model=local: whatever the checkpoint says)."""
        from colbert_swap.config import ModelConfig
        from colbert_swap.colbert.models import checkpoint_path, hidden_size

        model = self.a.config.get("model") or {}
        try:
            spec = ModelConfig(**{k: v for k, v in model.items() if k in ModelConfig.__dataclass_fields__})
            return hidden_size(checkpoint_path(spec, self.store.root / "models"))
        except Exception:  # a checkpoint that is gone: the bound falls back to the embedding size
            return None

    def changed_token_rows(self) -> torch.Tensor:
        rows = []
        for c in range(self.num_chunks):
            off = self.chunk_offset(c)
            for t in ("embs", "codes", "residuals"):
                name = f"{t}.{c}"
                if not self.same(name) and self.get("a", name) is not None and self.get("b", name) is not None \
                        and self.get("a", name).shape == self.get("b", name).shape:
                    rows.append(changed_rows(self.get("a", name), self.get("b", name)) + off)
        return torch.unique(torch.cat(rows)) if rows else torch.zeros(0, dtype=torch.long)

    def attribution(self, name: str, what: str) -> Attribution | str:
        tokens = self.sample_tokens if name == "local_sample_embs" else self.tokens
        if isinstance(tokens, str):
            return tokens
        offset = 0 if name == "local_sample_embs" else self.chunk_offset(int(name.split(".")[1]))
        return attribute(changed_rows(self.get("a", name), self.get("b", name)), tokens, what, offset=offset)

    def token_artifacts(self, name: str) -> tuple[str, str, str] | None:
        """The (ids, masks, order) artifacts of the tokenizer output that `name` belongs to or is encoded
        from: `sample_tokens` for `local_sample_embs`, `tokens.N` for `embs.N` (the DAG says which)."""
        names = DAG.together(name) if DAG.facts(name).together else DAG.together_inputs(name)
        return tuple(names) if len(names) == 3 else None

    def tokens_same(self, name: str) -> bool | None:
        """Whether the tokens `name` is computed from are the same in both runs (None: not captured)."""
        names = self.token_artifacts(name)
        if names is None or any(n not in self.a.artifacts or n not in self.b.artifacts for n in names):
            return None
        return all(self.same(n) for n in names)

    def token_changes(self, name: str) -> TokenChanges | str:
        ids, masks, order = self.token_artifacts(name)
        key = ("token_changes", ids)
        if key in self._cache:
            return self._cache[key]
        if ids == "sample_tokens":
            if not self.same("sample_pids"):
                return "the runs sampled different passages"
            pids = self.get("a", "sample_pids").long()
        else:
            chunk = int(ids.split(".")[1])
            offset = sum(self.a.artifacts[f"tokens.{c}"].ref.shape[0] for c in range(chunk))
            pids = torch.arange(self.a.artifacts[ids].ref.shape[0]) + offset
        try:
            tokenizer = doc_tokenizer(self.a, self.store)[0]
        except Exception:  # a checkpoint that is gone: ids without their texts
            tokenizer = None

        def decode(values: list[int]) -> list[str]:
            if tokenizer is None:
                return [str(v) for v in values]
            texts = tokenizer.tok.convert_ids_to_tokens(values)
            return ["[D]" if v == tokenizer.D_marker_token_id else t for v, t in zip(values, texts)]

        out = token_changes(self.get("a", ids), self.get("a", masks), self.get("b", ids), self.get("b", masks),
                            pids, decode, self.get("a", order), self.get("b", order), (self.a.label, self.b.label))
        self._cache[key] = out
        return out

    def matching(self, name: str) -> cen.Matching:
        """A centroid set's one-to-one matching. Above REUSE_ABOVE centroids, the sets upstream of
        `half_centroids` take its permutation (one Hungarian solve, ~10 s at 8,192, instead of four)."""
        key = ("matching", name)
        if key not in self._cache:
            a, b = self.get("a", name), self.get("b", name)
            if a.shape[0] > REUSE_ABOVE and name != "half_centroids" and not self.same("half_centroids") \
                    and self.get("a", "half_centroids") is not None \
                    and self.get("a", "half_centroids").shape == a.shape == self.get("b", "half_centroids").shape:
                self._cache[key] = cen.with_perm(a, b, self.matching("half_centroids").perm,
                                                 "the matching of `half_centroids`")
            else:
                self._cache[key] = cen.match_centroids(a, b)
        return self._cache[key]

    @cached_property
    def code_matching(self) -> cen.Matching | None:
        """The matching of the centroids chunk compression used (`half_centroids`), when they differ."""
        if self.same("half_centroids") or self.get("a", "half_centroids") is None \
                or self.get("b", "half_centroids") is None \
                or self.get("a", "half_centroids").shape != self.get("b", "half_centroids").shape:
            return None
        return self.matching("half_centroids")

    def sizes(self, name: str) -> dict:
        """What the reduction behind `name` reads of the run: the checkpoint's hidden size, and the rows
        (`clustered`) and elements (`reduced`) of the input it reduces (`Reduction.of`)."""
        out = {"hidden": self.hidden}
        reduction = DAG.facts(name).reduction
        record = self.a.artifacts.get(reduction.of) if reduction is not None and reduction.of else None
        if record is not None and record.ref.shape:
            out["clustered"], out["reduced"] = record.ref.shape[0], math.prod(record.ref.shape)
        return out


def analyze(store: Store, a: RunManifest, b: RunManifest, comparison: RunComparison,
            names: list[str] | None = None) -> list[Explanation]:
    """One explanation per diverging artifact (restricted to `names` when given), in pipeline order."""
    wanted = [r for r in comparison.results if not r.same and r.status not in (Status.MISSING, Status.UNREAD)
              and (names is None or r.name in names)]
    if not wanted:
        return []
    pair = _Pair(store, a, b)
    out = []
    for r in wanted:
        try:
            explanation = _explain_one(pair, r)
        except Exception as exc:  # a report must not be lost to one artifact's analysis: say what failed
            explanation = Explanation(r.name, f"could not be explained ({type(exc).__name__}: {exc}).",
                                      {"kind": "error"})
        if explanation is not None:
            out.append(explanation)
    return out


def _explain_one(pair: _Pair, r) -> Explanation | None:
    va, vb = pair.get("a", r.name), pair.get("b", r.name)
    if not isinstance(va, torch.Tensor) or not isinstance(vb, torch.Tensor):
        return None
    template = r.name.split(".")[0]
    if template in TOKEN_ARTIFACTS:
        changes = pair.token_changes(r.name)
        if isinstance(changes, str):
            return Explanation(r.name, changes + ".", {"kind": "tokens"})
        text = {"ids": changes.headline, "masks": changes.masks_sentence, "order": changes.order_sentence}
        return Explanation(r.name, f"{TOKEN_ARTIFACTS[template]}: {text[TOKEN_PART[template]]()}.",
                           {"kind": "tokens", "tokens": changes.to_json()})
    facts = DAG.facts(r.name)  # what the stage that made it declares: centroid set, label level, reduction
    if facts.label_level and (va.shape != vb.shape or va.dtype != vb.dtype):
        data = {"kind": "shape", "labels": _labels(pair)}
        return Explanation(r.name, f"{r.note} ({r.shape}). " + paragraphs.labels(r.name, data["labels"],
                                                                                pair.code_matching, pair.said(r.name)),
                           data)
    if va.shape != vb.shape or va.dtype != vb.dtype:
        return Explanation(r.name, f"`{r.name}`: {r.note} ({r.dtype}, {r.shape}): the runs computed different "
                                   "things here, so no element-wise explanation applies.", {"kind": "shape"})
    data: dict = {}
    parts: list[str] = []
    m = None
    if facts.centroid_set:  # labels first: element-wise numbers mean little when labels moved
        match = pair.matching(r.name)
        data["matching"] = match.stats()
        parts.append(paragraphs.matching(match) + " Label by label:")
    if va.dtype in FLOATS:
        n, what = mag.reduction_length(r.name, va, pair.a.config, pair.sizes(r.name))
        m = mag.magnitude(r.name, va, vb, n, what)
        data["magnitude"] = m.to_json()
        parts.append(mag.sentence(m, _inputs_differ(pair, r.name)))
    if pair.tokens_same(r.name) and not DAG.facts(r.name).together:
        parts.append(f"Its input tokens (`{pair.token_artifacts(r.name)[0]}`, masks and order) are the same in both "
                     "runs: the model computes differently on the same input.")
    if template in ("local_sample_embs", "embs", "codes", "residuals"):
        what = {"embs": "embedding rows", "codes": "codes", "residuals": "residual rows",
                "local_sample_embs": "sample embedding rows"}[template]
        att = pair.attribution(r.name, what)
        data["tokens"] = att if isinstance(att, str) else att.to_json()
        parts.append(att if isinstance(att, str) else paragraphs.tokens(att))
    if template == "codes":
        twins, modulo = _codes(pair, r.name)
        data["near_twins"], data["modulo_matching"] = twins.to_json() if twins else None, modulo
        parts.append(paragraphs.codes(twins, modulo, pair.code_matching))
    if template == "residuals":
        data["residual_causes"] = _residual_causes(pair, r.name)
        parts.append(paragraphs.residuals(data["residual_causes"]))
    if facts.label_level:
        data["labels"] = _labels(pair)
        parts.append(paragraphs.labels(r.name, data["labels"], pair.code_matching, pair.said(r.name)))
    return Explanation(r.name, " ".join(p for p in parts if p), data, m)


def _codes(pair: _Pair, name: str) -> tuple[cen.NearTwins | None, dict | None]:
    ca, cb = pair.get("a", name).long(), pair.get("b", name).long()
    chunk = name.split(".")[1]
    match = pair.code_matching
    old = match.perm[ca] if match is not None else ca  # a's codes in b's labels
    modulo = cen.codes_modulo(match, ca, cb) if match is not None else None
    flipped = (old != cb) & (old >= 0)
    embs = pair.get("b", f"embs.{chunk}")
    centroids = pair.get("b", "half_centroids")
    if embs is None or centroids is None or not bool(flipped.any()):
        return None, modulo
    ref = pair.b.artifacts.get("centroids")
    score_dtype = torch.float16 if ref is not None and ref.ref.device == "cuda" else torch.float32
    spacing = match.spacing if match is not None else None
    embs_a, centroids_a = pair.get("a", f"embs.{chunk}"), pair.get("a", "half_centroids")
    before = None
    if embs_a is not None and centroids_a is not None and embs_a.shape == embs.shape \
            and centroids_a.shape == centroids.shape:
        before = centroids.clone()  # a's centroids under b's labels (b's own where unmatched)
        perm = match.perm if match is not None else torch.arange(centroids.shape[0])
        before[perm[perm >= 0]] = centroids_a[perm >= 0]
        embs_a = embs_a[flipped]
    twins = cen.near_twins(embs[flipped], centroids, old[flipped], cb[flipped], score_dtype, spacing,
                           embs_a if before is not None else None, before)
    return twins, modulo


def _inputs_differ(pair: _Pair, name: str) -> list[str] | None:
    ra, rb = pair.a.artifacts.get(name), pair.b.artifacts.get(name)
    if ra is None or rb is None or ra.stage.startswith("inject") or rb.stage.startswith("inject"):
        return None
    return [n for n in sorted(set(ra.inputs) | set(rb.inputs)) if ra.inputs.get(n) != rb.inputs.get(n)]


def _residual_causes(pair: _Pair, name: str) -> dict:
    chunk = name.split(".")[1]
    rows = changed_rows(pair.get("a", name), pair.get("b", name))
    out = {"changed": rows.numel()}
    for what, art in (("code_changed", f"codes.{chunk}"), ("embedding_changed", f"embs.{chunk}")):
        xa, xb = pair.get("a", art), pair.get("b", art)
        if xa is not None and xb is not None and xa.shape == xb.shape:
            differ = xa[rows] != xb[rows]
            out[what] = int((differ.flatten(1).any(1) if differ.dim() > 1 else differ).sum())
    out["centroids_changed"] = not pair.same("half_centroids")
    out["cutoffs_changed"] = not pair.same("bucket_cutoffs")
    return out


def _labels(pair: _Pair) -> dict:
    key = ("labels", "")
    if key in pair._cache:
        return pair._cache[key]
    out: dict = {}
    match = pair.code_matching
    ca, cb = pair.get("a", "all_codes"), pair.get("b", "all_codes")
    if ca is not None and cb is not None and ca.shape == cb.shape:
        if match is not None:
            out["codes"] = cen.codes_modulo(match, ca, cb)
        else:
            moved = ca != cb
            out["codes"] = {"embeddings": ca.numel(), "same_label": int((~moved).sum()),
                            "moved": int(moved.sum()), "centroids_left": int(torch.unique(ca[moved]).numel()),
                            "centroids_joined": int(torch.unique(cb[moved]).numel())}
    pa, la = pair.get("a", "ivf_pid"), pair.get("a", "ivf_pid_lengths")
    pb, lb = pair.get("b", "ivf_pid"), pair.get("b", "ivf_pid_lengths")
    if all(x is not None for x in (pa, la, pb, lb)) and la.shape == lb.shape:
        k = la.numel()
        identity = cen.Matching("identity", torch.arange(k), torch.zeros(k, dtype=torch.float64), 0.0, 0.0, 0)
        out["ivf_pid"] = cen.ivf_modulo(match or identity, pa, la, pb, lb)
    pair._cache[key] = out
    return out
