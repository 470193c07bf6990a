"""Fuzz the readers of files a person or a crash may have damaged: run manifests, collections, sweep reports.

Each reader, fed arbitrary bytes or arbitrary JSON, either returns a well-formed value or raises a
UserError / ValueError that names the file; nothing else escapes (a traceback would lose the user's run).
Bounded: a fixed number of examples per reader, no deadline (the machine is shared).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from colbert_swap.colbert.corpus import read_jsonl, read_tsv
from colbert_swap.errors import UserError
from colbert_swap.proof.report.report import Report
from colbert_swap.proof.report.sweep import collect, read_report
from colbert_swap.core.store import ArtifactRecord, BlobRef, RunManifest, Store
from colbert_swap.core.store.manifest import digest

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)


def _valid_manifest() -> dict:
    ref = BlobRef(hash="ab" * 16, kind="tensor", dtype="float16", shape=(2, 3), device="cpu")
    m = RunManifest(label="fuzz", config={"seed": 1}, config_hash="0" * 16, provenance={"torch": "x"},
                    origin={"kind": "capture"}, artifacts={"embs.0": ArtifactRecord(ref=ref, stage="embs.0")})
    return m.to_json()


def _mutations(d: dict):
    """Paths into the manifest, so a mutation can replace any value (at any depth) with arbitrary JSON."""
    def paths(node, prefix):
        yield prefix
        if isinstance(node, dict):
            for k, v in node.items():
                yield from paths(v, (*prefix, k))
    return list(paths(d, ()))[1:]


MANIFEST_PATHS = _mutations(_valid_manifest())


@pytest.fixture(scope="module", autouse=True)
def scratch(tmp_path_factory):
    """Every example writes under one module-scoped folder that pytest cleans up (no files left in /tmp)."""
    SCRATCH.append(tmp_path_factory.mktemp("fuzz"))
    yield
    SCRATCH.clear()


SCRATCH: list[Path] = []


def _store_with(raw: bytes) -> Store:
    root = Path(tempfile.mkdtemp(prefix="store-", dir=SCRATCH[0]))
    path = root / "runs" / "fuzz" / "manifest.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(raw)
    return Store(root)


def _load_or_user_error(store: Store):
    try:
        manifest = store.load("fuzz")
    except UserError as exc:
        assert "fuzz" in str(exc)
        return None
    assert isinstance(manifest, RunManifest) and manifest.label == "fuzz"
    for record in manifest.artifacts.values():
        assert isinstance(record, ArtifactRecord)
    return manifest


@FUZZ
@given(st.binary(max_size=300))
def test_manifest_reader_on_arbitrary_bytes(raw):
    assert _load_or_user_error(_store_with(raw)) is None  # random bytes never pass for a manifest


@FUZZ
@given(st.sampled_from(MANIFEST_PATHS), json_values, st.booleans())
def test_manifest_reader_on_mutated_manifests(path, value, redigest):
    """Any value replaced, with or without a recomputed digest: loads cleanly or fails with a UserError."""
    content = _valid_manifest()
    node = content
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    if redigest:
        content["digest"] = digest(content)
    else:
        content["digest"] = digest(_valid_manifest())
    manifest = _load_or_user_error(_store_with(json.dumps(content).encode()))
    if not redigest and value != _lookup(_valid_manifest(), path):
        assert manifest is None  # an edit without the digest is always caught


def _lookup(d, path):
    for key in path:
        d = d[key]
    return d


def _file(data: bytes, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(suffix=suffix, prefix="reader-", dir=SCRATCH[0])
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return Path(name)


@FUZZ
@given(st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_tsv_reader_returns_passages_or_names_the_line(data):
    path = _file(data, ".tsv")
    try:
        passages = read_tsv(path)
    except UserError as exc:
        assert str(path) in str(exc)
        return
    assert all(isinstance(p, str) for p in passages)
    assert len(passages) == len(io.StringIO(data.decode("utf-8"), newline=None).readlines())  # one per line


@FUZZ
@given(st.binary(max_size=400) | st.lists(json_values, max_size=5).map(
    lambda rows: "\n".join(json.dumps(r) for r in rows).encode()))
def test_jsonl_reader_returns_passages_or_names_the_line(data):
    path = _file(data, ".jsonl")
    try:
        passages = read_jsonl(path, "text")
    except UserError as exc:
        assert str(path) in str(exc)
        return
    assert all(isinstance(p, str) and "\t" not in p and "\n" not in p for p in passages)


@FUZZ
@given(json_values | st.dictionaries(st.sampled_from(["injected", "verdict", "artifacts", "before", "task", "title",
                                                      "figures", "whole_run", "downstream"]), json_values))
def test_sweep_report_reader_accepts_or_explains(value):
    path = _file(json.dumps(value).encode(), ".json")
    try:
        report = read_report(path)
    except ValueError:
        return
    assert isinstance(report, Report) and isinstance(report.verdict, str) and isinstance(report.data, dict)


def test_a_sweep_summary_lists_jobs_with_missing_or_broken_reports(tmp_path):
    good = {"injected": ["codes"], "verdict": "ok", "artifacts": {"codes.0": {"status": "equal"}}}
    for job, content in {"0": json.dumps(good), "1": "{broken", "2": json.dumps({"injected": "codes"})}.items():
        (tmp_path / job).mkdir()
        (tmp_path / job / "report.json").write_text(content)
    (tmp_path / "3").mkdir()  # a job killed before it wrote anything
    reports, problems = collect(tmp_path)
    assert [r.data["job"] for r in reports] == ["0"]
    assert [p.split(":")[0] for p in problems] == ["job 1", "job 2", "job 3"]
    assert "no report.json" in problems[2] and "'injected' is not a list" in problems[1]


@pytest.mark.parametrize("data, line", [(b"0\tok\n1\t\xff\xfe broken\n", 2), (b"\xff\n", 1)])
def test_tsv_with_invalid_utf8_names_the_line(tmp_path, data, line):
    path = tmp_path / "c.tsv"
    path.write_bytes(data)
    with pytest.raises(UserError, match=rf"c\.tsv:{line}: .*UTF-8"):
        read_tsv(path)
