"""Collections: the seeded synthetic generator and the TSV / JSONL readers (parity with colbert-ai's loader)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from colbert_swap.config import CollectionConfig
from colbert_swap.colbert.corpus import load_corpus, read_jsonl, read_tsv, synthetic_passages
from colbert_swap.errors import UserError


def colbert_load_collection(path):
    from colbert.evaluation.loaders import load_collection

    return load_collection(str(path))


# --- synthetic ------------------------------------------------------------------------------------------------


def test_synthetic_is_deterministic_per_seed():
    cfg = CollectionConfig(num_passages=50, seed=7)
    a = synthetic_passages(cfg)
    b = synthetic_passages(CollectionConfig(num_passages=50, seed=7))
    assert a == b
    assert len(a) == 50
    c = synthetic_passages(CollectionConfig(num_passages=50, seed=8))
    assert len(c) == 50 and c != a
    assert sum(x != y for x, y in zip(a, c)) > 40  # not one passage: the whole collection changes


def test_synthetic_lengths_spread_and_respect_bounds():
    cfg = CollectionConfig(num_passages=300, seed=0, min_words=4, max_words=160)
    lengths = [len(p.split()) for p in synthetic_passages(cfg)]
    assert min(lengths) >= 4 and max(lengths) <= 160
    assert max(lengths) >= 5 * min(lengths)
    assert max(lengths) - min(lengths) >= 100
    assert len(set(lengths)) > 50


def test_synthetic_passages_are_single_line_text():
    for p in synthetic_passages(CollectionConfig(num_passages=200, seed=3)):
        assert p and not any(c in p for c in "\t\n\r")
        assert p == p.strip()
        assert p.endswith(".") and p[0].isupper()


@pytest.mark.parametrize("kwargs", [{"num_passages": 0}, {"min_words": 0}, {"min_words": 10, "max_words": 5}])
def test_synthetic_bad_config_raises_user_error(kwargs):
    with pytest.raises(UserError):
        synthetic_passages(CollectionConfig(**kwargs))


# --- TSV parity with colbert-ai ------------------------------------------------------------------------------

ROWS_NO_TITLE = "0\tfirst passage here\n1\tsecond one, with a comma.\n2\t  padded text  \n3\tlast line no newline"
ROWS_TITLE = ("0\tbody zero\tTitle Zero\n1\tbody one\tTitle One\n2\tbody two\tT2\textra column\n"
              "3\tbody three\t\n4\tbody four trailing \r\n")
ROWS_HEADER = "id\ttext\ttitle\n1\tbody one\tTitle One\n2\tbody two\tTitle Two\n"


@pytest.mark.parametrize("content", [ROWS_NO_TITLE, ROWS_TITLE, ROWS_HEADER], ids=["no_title", "title", "header"])
def test_read_tsv_matches_colbert_load_collection(tmp_path, content):
    path = tmp_path / "collection.tsv"
    path.write_bytes(content.encode())
    ours = read_tsv(path)
    theirs = colbert_load_collection(path)
    assert ours == theirs
    assert len(ours) == content.count("\n") + (not content.endswith("\n"))


def test_read_tsv_literal_values(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_text(ROWS_TITLE)
    assert read_tsv(path) == ["Title Zero | body zero", "Title One | body one", "T2 | body two",
                              " | body three", "body four trailing"]
    path.write_text(ROWS_NO_TITLE)
    assert read_tsv(path)[2] == "  padded text"  # colbert-ai strips only '\n\r ' at the line's ends


@pytest.mark.parametrize("content,line,what", [
    ("0\tok\n1 no tab here\n", 2, "no tab"),
    ("0\tok\n2\tskipped one\n", 2, "pid '2'"),
    ("0\tok\n1\tok\nabc\ttext\n", 3, "pid 'abc'"),
    ("1\tfirst should be 0\n", 1, "pid '1'"),
    ("0\tok\n-1\tneg\n", 2, "pid '-1'"),
    ("0\tok\n1\tok\n2\tok\n\n", 4, "no tab"),
])
def test_read_tsv_bad_rows_name_their_line(tmp_path, content, line, what):
    path = tmp_path / "bad.tsv"
    path.write_text(content)
    with pytest.raises(UserError) as info:
        read_tsv(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}:{line}: "), msg
    assert what in msg


# --- JSONL ---------------------------------------------------------------------------------------------------


def test_read_jsonl_reads_the_field_and_skips_blank_lines(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "alpha", "id": 1}\n\n{"text": "beta"}\n   \n{"body": "x", "text": "gamma"}\n')
    assert read_jsonl(path, "text") == ["alpha", "beta", "gamma"]
    path.write_text('{"body": "one"}\n{"body": "two"}\n')
    assert read_jsonl(path, "body") == ["one", "two"]


@pytest.mark.parametrize("lines,line_no", [
    (['{"text": "ok"}', '{"text": "ok"', ], 2),                 # invalid JSON
    (['{"text": "ok"}', '', '{"body": "no text"}'], 3),        # missing field, blank line still counted
    (['{"text": 5}'], 1),                                       # not a string
    (['{"text": "ok"}', '["text"]'], 2),                       # not an object
    (['{"text": "ok"}', '{"text": "a\\tb"}'], 2),              # a tab inside
    (['{"text": "ok"}', '{"text": "ok"}', '{"text": "a\\nb"}'], 3),  # a newline inside
])
def test_read_jsonl_errors_name_their_line(tmp_path, lines, line_no):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=rf"^{re.escape(str(path))}:{line_no}: "):
        read_jsonl(path, "text")


# --- load_corpus ---------------------------------------------------------------------------------------------


def test_load_corpus_synthetic_writes_once_and_reuses(tmp_path):
    cfg = CollectionConfig(kind="synthetic", num_passages=25, seed=4)
    root = tmp_path / "collections"
    first = load_corpus(cfg, root)
    files = list(root.iterdir())
    assert len(files) == 1 and Path(first.path) == files[0].resolve()
    assert first.passages == synthetic_passages(cfg)
    assert len(first) == 25
    assert first.passages == colbert_load_collection(first.path)

    again = load_corpus(cfg, root)
    assert again == first
    assert list(root.iterdir()) == files

    # the existing file is reused, not rewritten: an edit to it shows through
    Path(first.path).write_text("0\tedited\n")
    edited = load_corpus(cfg, root)
    assert edited.passages == ["edited"] and edited != first

    # another seed is another file
    other = load_corpus(CollectionConfig(kind="synthetic", num_passages=25, seed=5), root)
    assert other.path != first.path and len(list(root.iterdir())) == 2


def test_load_corpus_tsv_and_jsonl(tmp_path):
    tsv = tmp_path / "c.tsv"
    tsv.write_text("0\tone\n1\ttwo\n")
    corpus = load_corpus(CollectionConfig(kind="tsv", path=str(tsv)), tmp_path / "root")
    assert corpus.passages == ["one", "two"] and corpus.path == str(tsv.resolve())

    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": t}) for t in ["x y", "z"]) + "\n")
    corpus = load_corpus(CollectionConfig(kind="jsonl", path=str(jsonl)), tmp_path / "root")
    assert corpus.passages == ["x y", "z"]
    assert colbert_load_collection(corpus.path) == ["x y", "z"]


def test_load_corpus_empty_tsv_raises_user_error(tmp_path):
    tsv = tmp_path / "empty.tsv"
    tsv.write_text("")
    with pytest.raises(UserError, match="empty"):
        load_corpus(CollectionConfig(kind="tsv", path=str(tsv)), tmp_path / "root")


def test_load_corpus_missing_file_and_unknown_kind(tmp_path):
    with pytest.raises(UserError, match="is not a file"):
        load_corpus(CollectionConfig(kind="tsv", path=str(tmp_path / "nope.tsv")), tmp_path)
    with pytest.raises(UserError, match="is not a file"):
        load_corpus(CollectionConfig(kind="jsonl", path=None), tmp_path)
    with pytest.raises(UserError, match="unknown"):
        load_corpus(CollectionConfig(kind="parquet"), tmp_path)


def test_pids_are_read_as_colbert_ai_reads_them(tmp_path):
    """int(pid) == line number, exactly what colbert-ai's load_collection accepts (e.g. '+1', '٣')."""
    from colbert.evaluation.loaders import load_collection

    from colbert_swap.colbert.corpus import read_tsv

    path = tmp_path / "odd.tsv"
    path.write_text("0\tzero\n+1\tone\n2 \ttwo\n٣\tthree\n")
    assert read_tsv(path) == load_collection(str(path)) == ["zero", "one", "two", "three"]
    bad = tmp_path / "bad.tsv"
    bad.write_text("0\tzero\n²\tsquare\n")
    with pytest.raises(UserError, match=r"bad.tsv:2: pid '²'"):
        read_tsv(bad)
