"""Passage collections: a seeded synthetic generator and readers for TSV / JSONL files.

Whatever the source, the collection ends up as a TSV file (`pid\\ttext`) that colbert-ai's own
`load_collection` reads to the very same passages, so the reference `Indexer` and our capture agree.

    >>> corpus = load_corpus(CollectionConfig(num_passages=10), "outputs/collections")  # doctest: +SKIP
    >>> corpus.passages[0]                                                           # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import xxhash

from colbert_swap.config import CollectionConfig
from colbert_swap.errors import UserError

_ONSETS = ["b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "st", "tr", "pl", "ch"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou", "ea"]
_CODAS = ["", "", "n", "r", "s", "t", "l", "m", "nd", "st"]


@dataclass(frozen=True)
class Corpus:
    path: str  # the TSV colbert-ai reads
    passages: list[str]

    def __len__(self) -> int:
        return len(self.passages)


def load_corpus(cfg: CollectionConfig, collections_root: str | os.PathLike) -> Corpus:
    if cfg.kind == "synthetic":
        path = _write_once(Path(collections_root) / f"synthetic-{_synthetic_key(cfg)}.tsv",
                           lambda: synthetic_passages(cfg))
    elif cfg.kind == "tsv":
        path = _existing(cfg.path)
    elif cfg.kind == "jsonl":
        passages = read_jsonl(_existing(cfg.path), cfg.text_field)
        digest = xxhash.xxh3_128_hexdigest(Path(cfg.path).read_bytes())[:16]
        path = _write_once(Path(collections_root) / f"jsonl-{Path(cfg.path).stem}-{digest}.tsv", lambda: passages)
    else:
        raise UserError(f"collection.kind={cfg.kind!r} is unknown; expected synthetic, tsv or jsonl")
    passages = read_tsv(path)
    if not passages:
        raise UserError(f"collection {path} is empty: ColBERT needs at least one passage")
    return Corpus(path=str(Path(path).resolve()), passages=passages)


def synthetic_passages(cfg: CollectionConfig) -> list[str]:
    """Seeded passages of Zipf-distributed pseudo-words with a long-tailed length spread."""
    if cfg.num_passages < 1:
        raise UserError(f"collection.num_passages={cfg.num_passages} must be at least 1")
    if not 1 <= cfg.min_words <= cfg.max_words:
        raise UserError(f"collection.min_words={cfg.min_words} / max_words={cfg.max_words} must satisfy 1 <= min <= max")
    rng = np.random.RandomState(cfg.seed)
    vocab = _pseudo_words(rng, 3000)
    weights = 1.0 / np.arange(1, len(vocab) + 1) ** 1.1  # Zipf
    weights /= weights.sum()
    lengths = np.clip(rng.lognormal(mean=np.log(45), sigma=0.7, size=cfg.num_passages), cfg.min_words, cfg.max_words)
    passages = []
    for n in lengths.astype(int):
        words = list(rng.choice(vocab, size=n, p=weights))
        for i in range(7, n, int(rng.randint(6, 14))):  # sentences, so punctuation masking has work to do
            words[i - 1] += "." if rng.rand() < 0.6 else ","
        words[0] = words[0].capitalize()
        passages.append(" ".join(words) + ".")
    return passages


def read_tsv(path: str | os.PathLike) -> list[str]:
    """Mirrors colbert.evaluation.loaders.load_collection, with line numbers in its errors."""
    _check_utf8(path)
    passages = []
    with open(path, encoding="utf-8") as f:
        for line_idx, line in enumerate(f):
            pid, *rest = line.strip("\n\r ").split("\t")
            if not rest:
                raise UserError(f"{path}:{line_idx + 1}: expected 'pid<TAB>text', found no tab")
            passage, *title = rest
            if pid != "id" and _int(pid) != line_idx:  # colbert-ai: pid == 'id' or int(pid) == line_idx
                raise UserError(f"{path}:{line_idx + 1}: pid {pid!r} must equal the 0-based line number {line_idx}")
            passages.append(title[0] + " | " + passage if title else passage)
    return passages


def _check_utf8(path: str | os.PathLike) -> None:
    """A file that is not UTF-8 fails naming the line of its first bad byte (not a bare UnicodeDecodeError)."""
    data = Path(path).read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].replace(b"\r\n", b"\n").replace(b"\r", b"\n").count(b"\n") + 1
        raise UserError(f"{path}:{line}: not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start})") from None


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def read_jsonl(path: str | os.PathLike, text_field: str) -> list[str]:
    _check_utf8(path)
    passages = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                text = row[text_field]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise UserError(f"{path}:{line_no}: expected a JSON object with a {text_field!r} string ({exc})") from exc
            if not isinstance(text, str) or any(c in text for c in "\t\n\r"):
                raise UserError(f"{path}:{line_no}: {text_field!r} must be a string without tabs or newlines")
            passages.append(text)
    return passages


def _pseudo_words(rng: np.random.RandomState, n: int) -> list[str]:
    words: dict[str, None] = {}
    while len(words) < n:
        syllables = rng.randint(1, 4)
        word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables))
        words[word] = None
    return list(words)


def _synthetic_key(cfg: CollectionConfig) -> str:
    fields = [cfg.num_passages, cfg.seed, cfg.min_words, cfg.max_words]
    return hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:12]


def _existing(path: str | None) -> str:
    if not path or not Path(path).is_file():
        raise UserError(f"collection.path={path!r} is not a file")
    return path


def _write_once(path: Path, make_passages: Callable[[], list[str]]) -> str:
    """Write the TSV atomically; an existing file with this content-derived name is reused (and the
    passages are not generated again: a replay or sweep job only reads the file)."""
    if path.exists():
        return str(path)
    passages = make_passages()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        for pid, passage in enumerate(passages):
            f.write(f"{pid}\t{passage}\n")
    os.replace(tmp, path)
    return str(path)
