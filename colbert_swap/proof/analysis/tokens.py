"""Which passage, position and token each embedding row is, and which of them changed.

colbert-ai's DocTokenizer.tensorize tokenizes a passage with [CLS] ... [SEP], truncated to doc_maxlen - 1,
inserts the [D] marker at position 1, and ColBERT.doc drops the rows of padding and of punctuation
(`skiplist`, when mask_punctuation) before flattening. `TokenMap` redoes exactly that per passage and
checks the number of kept rows against the run's `doclens.N`: a row's position is its place in the
passage's token sequence ([CLS] is 0, [D] is 1), not its place among the kept rows.

    tokens = token_map(store, manifest, rows=changed)   # every passage (the changed ones beyond a cap)
    groups = attribute(changed, tokens)
    groups.headline()   # '120 of 120 changed rows are token `[D]` at position 1 (every passage's)'
"""

from __future__ import annotations

import random
import string
from collections import Counter
from dataclasses import dataclass

import torch

from colbert_swap.core.store import RunManifest, Store
from colbert_swap.colbert.plan import plan

MAX_PASSAGES = 100_000  # attribution tokenizes at most this many passages (a seeded sample beyond)
TOP = 5


@dataclass(frozen=True)
class TokenMap:
    """Per global embedding row (all chunks, in order): passage id, position, token id. Rows of passages
    that were not tokenized (beyond MAX_PASSAGES) have token id -1."""

    pid: torch.Tensor  # (rows,) int64
    position: torch.Tensor  # (rows,) int64, -1 where not tokenized
    token: torch.Tensor  # (rows,) int64, -1 where not tokenized
    names: dict[int, str]  # token id -> token text
    tokenized: int  # passages tokenized
    passages: int  # passages in the run
    note: str = ""

    def token_name(self, token_id: int) -> str:
        return self.names.get(token_id, str(token_id))


def row_pids(doclens: list[torch.Tensor]) -> torch.Tensor:
    """Global embedding row -> passage id, from every chunk's doclens."""
    lengths = torch.cat([d.long() for d in doclens])
    return torch.repeat_interleave(torch.arange(lengths.numel()), lengths)  # (rows,)


_TOKENIZERS: dict[tuple[str, str], tuple] = {}


def doc_tokenizer(manifest: RunManifest, store: Store):
    """colbert-ai's DocTokenizer and punctuation skiplist, built from the run's config as the capture did
    (once per config and store in a process)."""
    key = (manifest.config_hash, str(store.root))
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = _doc_tokenizer(manifest, store)
    return _TOKENIZERS[key]


def _doc_tokenizer(manifest: RunManifest, store: Store):
    from omegaconf import OmegaConf

    from colbert_swap.config import Config
    from colbert_swap.colbert.resources import Resources

    cfg = OmegaConf.merge(OmegaConf.structured(Config), {**manifest.config, "store": {"root": str(store.root)}})
    resources = Resources(cfg, store, store.run_dir(manifest.label))  # colbert-ai's chatter goes to the run's log
    config = resources.colbert_config
    from colbert.modeling.tokenization import DocTokenizer

    tokenizer = DocTokenizer(config)
    kind = (manifest.config.get("perturb") or {}).get("tokenizer")
    if kind:  # perturb.tokenizer: the run's own tokenizer implementation
        from colbert_swap.colbert.infra import use_tokenizer

        use_tokenizer(tokenizer, config.checkpoint, kind)
    skip: set[int] = set()
    if config.mask_punctuation:
        skip = {tokenizer.tok.encode(symbol, add_special_tokens=False)[0] for symbol in string.punctuation}
    return tokenizer, skip, resources.corpus


def token_map(store: Store, manifest: RunManifest, rows: torch.Tensor | None = None,
              sample: bool = False) -> TokenMap:
    """Token ids and positions of the embedding rows of `manifest` (every chunk's `embs.N`, or with
    `sample` the rows of `local_sample_embs`). Every passage is tokenized, so that a token's occurrences
    are counted over the whole artifact; beyond MAX_PASSAGES, only the passages holding `rows` (a seeded
    sample of them beyond the cap), and the note says occurrences are counted among those. Raises
    ValueError when the tokenization does not reproduce the run's doclens."""
    if sample:
        doclens = [store.get(manifest, "sample_doclens")]
        pids = store.get(manifest, "sample_pids").long()  # the sample's passages, in pid order
    else:
        doclens = [store.get(manifest, f"doclens.{c}") for c in range(plan(store, manifest).num_chunks)]
        pids = None
    index = row_pids(doclens)  # row -> index of its passage among these passages
    lengths = torch.cat([d.long() for d in doclens])
    starts = torch.cumsum(lengths, 0) - lengths  # (passages,) first row of each passage
    wanted = list(range(lengths.numel()))
    note = ""
    if len(wanted) > MAX_PASSAGES:
        wanted = sorted(set(index[rows].tolist())) if rows is not None else wanted
        if len(wanted) > MAX_PASSAGES:
            wanted = sorted(random.Random(0).sample(wanted, MAX_PASSAGES))
        note = (f"{len(wanted):,} of the {lengths.numel():,} passages tokenized (those that changed"
                f"{', a seeded sample' if rows is None or len(wanted) == MAX_PASSAGES else ''}): occurrences are "
                "counted among them")
    tokenizer, skip, corpus = doc_tokenizer(manifest, store)
    position = torch.full_like(index, -1)
    token = torch.full_like(index, -1)
    pid = pids[index] if pids is not None else index
    texts = [corpus.passages[int(pids[p]) if pids is not None else p] for p in wanted]
    ids = tokenizer.tok(texts, truncation="longest_first", max_length=tokenizer.doc_maxlen - 1)["input_ids"]
    pad = tokenizer.tok.pad_token_id
    for p, seq in zip(wanted, ids):
        seq = seq[:1] + [tokenizer.D_marker_token_id] + seq[1:]  # _insert_prefix_token
        kept = [i for i, t in enumerate(seq) if t not in skip and t != pad]
        if len(kept) != int(lengths[p]):
            raise ValueError(f"passage {int(pid[starts[p]])}: {len(kept)} kept tokens, doclens says {int(lengths[p])}")
        start = int(starts[p])
        position[start:start + len(kept)] = torch.tensor(kept)
        token[start:start + len(kept)] = torch.tensor([seq[i] for i in kept])
    used = sorted(set(token[token >= 0].tolist()))
    names = dict(zip(used, tokenizer.tok.convert_ids_to_tokens(used)))
    if tokenizer.D_marker_token_id in names:
        names[tokenizer.D_marker_token_id] = "[D]"  # colbert-ai's marker is an [unused] vocabulary slot
    return TokenMap(pid, position, token, names, len(wanted), lengths.numel(), note)


@dataclass(frozen=True)
class Attribution:
    changed: int  # rows that changed
    rows: int  # rows in the artifact
    attributed: int  # changed rows with a known token
    by_token: list[tuple[str, int, int]]  # (token, changed, occurrences among tokenized rows)
    by_position: list[tuple[int, int, int]]  # (position, changed, occurrences)
    by_token_position: list[tuple[str, int, int, int]]  # (token, position, changed, occurrences)
    by_passage: list[tuple[int, int, int]]  # (pid, changed, rows of the passage)
    passages_changed: int
    passages: int
    note: str = ""
    what: str = "rows"

    def headline(self) -> str:
        if not self.changed:
            return f"no {self.what} changed"
        if not self.attributed:
            return f"{self.changed:,} {self.what} changed; {self.note or 'no token could be attributed'}"
        tok, pos, n, occ = self.by_token_position[0]
        where = f"{self.passages_changed:,} of {self.passages:,} passages hold a change"
        rate = self.changed / self.rows if self.rows else 0.0
        if rate > 0.5 or (occ and n / occ < 2 * rate and n < 0.5 * self.changed):
            return (f"{self.changed:,} of {self.rows:,} {self.what} changed, spread over tokens and positions: no "
                    f"group stands out (the largest, `{tok}` at position {pos}, is {n:,} of the changes); {where}")
        of = lambda k, o: f"all {o:,} occurrences" if k == o else f"{k:,} of its {o:,} occurrences"  # noqa: E731
        text = f"{n:,} of {self.changed:,} changed {self.what} are token `{tok}` at position {pos} ({of(n, occ)})"
        more = [(t, p, k, o) for t, p, k, o in self.by_token_position[1:3] if k >= 0.1 * self.changed]
        text += "".join(f", {k:,} `{t}` at position {p} ({of(k, o)})" for t, p, k, o in more)
        covered = n + sum(k for _, _, k, _ in more)
        top, tn, tocc = self.by_token[0]
        if covered < 0.5 * self.changed and top not in [tok] + [t for t, _, _, _ in more]:
            text += f"; by token alone, the most frequent is `{top}` ({of(tn, tocc)})"
        return text + f"; {where}"

    def to_json(self) -> dict:
        return {"changed": self.changed, "rows": self.rows, "attributed": self.attributed,
                "passages_changed": self.passages_changed, "passages": self.passages, "note": self.note,
                "headline": self.headline(),
                "by_token": [dict(zip(("token", "changed", "occurrences"), g)) for g in self.by_token],
                "by_position": [dict(zip(("position", "changed", "occurrences"), g)) for g in self.by_position],
                "by_token_position": [dict(zip(("token", "position", "changed", "occurrences"), g))
                                      for g in self.by_token_position],
                "by_passage": [dict(zip(("pid", "changed", "rows"), g)) for g in self.by_passage]}


def attribute(changed: torch.Tensor, tokens: TokenMap, what: str = "rows", offset: int = 0) -> Attribution:
    """Group changed rows (indices into an artifact whose row `i` is global row `offset + i`)."""
    rows = changed.long() + offset
    known = tokens.token >= 0
    base_tok = Counter(tokens.token[known].tolist())
    base_pos = Counter(tokens.position[known].tolist())
    base_pair = Counter(zip(tokens.token[known].tolist(), tokens.position[known].tolist()))
    hit = rows[known[rows]]
    tok, pos = tokens.token[hit].tolist(), tokens.position[hit].tolist()
    by_tok = Counter(tok).most_common(TOP)
    by_pos = Counter(pos).most_common(TOP)
    by_pair = Counter(zip(tok, pos)).most_common(TOP)
    pids = Counter(tokens.pid[rows].tolist())
    per_passage = torch.bincount(tokens.pid)  # rows per passage id
    return Attribution(
        changed=rows.numel(), rows=tokens.pid.numel(), attributed=hit.numel(),
        by_token=[(tokens.token_name(t), n, base_tok[t]) for t, n in by_tok],
        by_position=[(p, n, base_pos[p]) for p, n in by_pos],
        by_token_position=[(tokens.token_name(t), p, n, base_pair[(t, p)]) for (t, p), n in by_pair],
        by_passage=[(p, n, int(per_passage[p])) for p, n in pids.most_common(TOP)],
        passages_changed=len(pids), passages=tokens.passages, note=tokens.note, what=what)


def changed_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Indices of the first-dimension rows where `a` and `b` differ in any element."""
    differ = a != b
    if differ.dim() > 1:
        differ = differ.flatten(1).any(1)
    return differ.nonzero().flatten()  # (changed,)


@dataclass(frozen=True)
class TokenChanges:
    """Two tokenizer outputs (`sample_tokens` / `tokens.N`) side by side: which passages hold other tokens,
    from which position, with the tokens' texts in the run's vocabulary."""

    passages: int  # rows of the artifact (passages)
    changed: list[dict]  # per changed passage (at most TOP): pid, first position, a's and b's tokens from there
    passages_changed: int
    positions_changed: int
    lengths_changed: int  # passages of another token count (what the masks show)
    order_changed: int  # passages at another place of the length sort (the `*_order` artifact)
    labels: tuple[str, str] = ("a", "b")

    def headline(self) -> str:
        if not self.passages_changed:
            return f"the {self.passages:,} passages' tokens are the same in both runs"
        first = self.changed[0]
        a, b = self.labels
        return (f"{self.passages_changed:,} of {self.passages:,} passages are tokenized differently "
                f"({self.positions_changed:,} token positions, {self.lengths_changed:,} passages of another length); "
                f"the first, passage {first['pid']}, from position {first['position']}: "
                f"`{' '.join(first['a'])}` ({a}) vs `{' '.join(first['b'])}` ({b})")

    def masks_sentence(self) -> str:
        if not self.lengths_changed:
            return "the masks differ only in padding width"
        return (f"{self.lengths_changed:,} of {self.passages:,} passages have another number of tokens "
                "(their ids are explained above)")

    def order_sentence(self) -> str:
        text = f"{self.order_changed:,} of {self.passages:,} passages take another place in colbert-ai's length sort"
        if not self.passages_changed:
            return text + (": the tokens are the same, so `torch.sort` (not stable) ordered equal lengths "
                           "differently")
        return text + " (it sorts by token count, and token counts differ)"

    def to_json(self) -> dict:
        return {"passages": self.passages, "passages_changed": self.passages_changed,
                "positions_changed": self.positions_changed, "lengths_changed": self.lengths_changed,
                "order_changed": self.order_changed, "changed": self.changed, "headline": self.headline()}


WINDOW = 6  # tokens shown from the first differing position


def token_changes(ids_a: torch.Tensor, masks_a: torch.Tensor, ids_b: torch.Tensor, masks_b: torch.Tensor,
                  pids: torch.Tensor, decode, order_a: torch.Tensor | None = None,
                  order_b: torch.Tensor | None = None, labels: tuple[str, str] = ("a", "b")) -> TokenChanges:
    """Compare two runs' token ids where their masks hold tokens (padding is not a token); `pids[row]` is the
    passage id of a row, `decode(ids) -> texts` the run's vocabulary. Either run may be wider.

    >>> ids = torch.tensor([[101, 1, 7, 102], [101, 1, 8, 102]]); mask = torch.ones(2, 4)
    >>> other = ids.clone(); other[1, 2] = 9
    >>> token_changes(ids, mask, other, mask, torch.tensor([10, 11]), lambda v: [str(i) for i in v]).headline()
    '1 of 2 passages are tokenized differently (1 token positions, 0 passages of another length); the first, passage 11, from position 2: `8 102` (a) vs `9 102` (b)'
    """
    width = max(ids_a.shape[1], ids_b.shape[1])

    def real(ids, masks):
        out = torch.full((ids.shape[0], width), -1, dtype=torch.int64)
        out[:, :ids.shape[1]] = torch.where(masks.bool(), ids.long(), torch.tensor(-1))
        return out

    ra, rb = real(ids_a, masks_a), real(ids_b, masks_b)
    differ = ra != rb
    rows = differ.any(1).nonzero().flatten()
    changed = []
    for row in rows[:TOP].tolist():
        first = int(differ[row].nonzero()[0])
        a_ids = [int(t) for t in ra[row, first:first + WINDOW] if t >= 0]
        b_ids = [int(t) for t in rb[row, first:first + WINDOW] if t >= 0]
        changed.append({"pid": int(pids[row]), "position": first, "positions": int(differ[row].sum()),
                        "a": decode(a_ids) or ["(end)"], "b": decode(b_ids) or ["(end)"]})
    lengths = int((masks_a.long().sum(1) != masks_b.long().sum(1)).sum()) if len(masks_a) == len(masks_b) else 0
    order = 0
    if order_a is not None and order_b is not None and order_a.shape == order_b.shape:
        order = int((order_a != order_b).sum())
    return TokenChanges(ids_a.shape[0], changed, rows.numel(), int(differ.sum()), lengths, order, labels)
