"""store.keep=index: a capture that keeps every artifact's hash but the bytes only of the index's, the JSON and the
small artifacts. Its hashes and index files are a full capture's; a comparison, an injection and a locate read the
bytes it did not keep by computing them again, checked against the hash, and reach the verdicts a full capture
reaches; verify calls them absent by choice, not lost."""

from __future__ import annotations

import pytest
import torch

from colbert_swap.colbert import index_files
from colbert_swap.colbert.index_files import index_artifact, index_differences
from colbert_swap.colbert.stages import DAG
from colbert_swap.core.dag import template
from colbert_swap.core.store import Store
from colbert_swap.core.store.run import RunWriter
from colbert_swap.errors import UserError
from colbert_swap.proof.compare.runs import compare_runs
from colbert_swap.tasks import verify
from colbert_swap.tasks.capture import capture
from colbert_swap.tasks.compare import compare
from colbert_swap.tasks.inject import inject
from colbert_swap.tasks.locate import locate
from tests.conftest import quiet_progress

pytestmark = pytest.mark.numerics


SEARCHED = {template(n).removesuffix(".N") for n in DAG.read_by("search")}


def base(name: str) -> str:
    return template(name).removesuffix(".N")


def nbytes(ref) -> int:
    numel = 1
    for n in ref.shape or ():
        numel *= n
    return numel * torch.empty((), dtype=getattr(torch, ref.dtype)).element_size()


SMALL = 16 << 10  # the tiny config's largest tensors are ~100 KB: "small" is 16 KiB here, 1 MiB in use


@pytest.fixture(scope="module", autouse=True)
def small():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(index_files, "SMALL_BYTES", SMALL)
        yield


@pytest.fixture(scope="module")
def stores(tiny_cfg, tmp_path_factory):
    """The same two captures (as the environment is, and with a planted weight scale) into a store of everything and
    a store of `keep=index`."""
    out, shared = {}, tmp_path_factory.mktemp("shared")
    for keep in ("all", "index"):
        root = tmp_path_factory.mktemp(f"keep-{keep}")
        for folder in ("models", "collections"):  # one checkpoint and collection path: equal index metadata
            (shared / folder).mkdir(exist_ok=True)
            (root / folder).symlink_to(shared / folder)
        cfg = lambda *o: tiny_cfg(f"store.root={root}", f"keep={keep}", *o)  # noqa: E731
        runs = {"target": capture(cfg("run=target"), progress=quiet_progress),
                "scaled": capture(cfg("run=scaled", "perturb=scale_layer"), progress=quiet_progress)}
        out[keep] = (cfg, Store(root), runs)
    return out


def test_every_hash_and_index_file_is_a_full_captures_and_only_the_large_bytes_are_left(stores):
    _, full_store, full = stores["all"]
    _, store, kept = stores["index"]
    for name in ("target", "scaled"):
        assert {n: r.ref for n, r in kept[name].artifacts.items()} == {n: r.ref for n, r in full[name].artifacts.items()}
        assert index_differences(store.run_dir(name) / "index", full_store.run_dir(name) / "index") == {}
        large = {n for n, r in full[name].artifacts.items()
                 if not index_artifact(n, r.ref.kind) and nbytes(r.ref) > SMALL and base(n) not in SEARCHED}
        assert large, "the tiny config has no artifact over SMALL_BYTES: this test would prove nothing"
        assert set(kept[name].hash_only) == large
        # what a later search of the run reads is kept, however large (half_centroids is over SMALL here)
        assert any(base(n) in SEARCHED and not index_artifact(n, r.ref.kind) and nbytes(r.ref) > SMALL
                   for n, r in full[name].artifacts.items())
        kept_hashes = {r.ref.hash for n, r in kept[name].artifacts.items() if n not in large}
        same_as_kept = {n for n in large if kept[name].artifacts[n].ref.hash in kept_hashes}  # one file, by content
        assert store.absent_by_choice(kept[name]) == large - same_as_kept and not full[name].hash_only
    problems, orphans, _ = verify.problems(store)
    assert problems == [] and orphans == []  # absent by choice is not lost
    lines = verify.by_choice(store, ["target"])
    assert len(lines) == 1 and "kept as their hash only" in lines[0]
    with pytest.raises(UserError, match="kept only its hash"):
        store.get(kept["target"], sorted(large)[0])


def test_a_comparison_computes_the_bytes_again_and_says_what_a_full_capture_says(stores):
    cfg_full, full_store, _ = stores["all"]
    cfg, store, kept = stores["index"]
    said = []
    import colbert_swap.tasks.compare as compare_task

    original = compare_task.progress_printer
    compare_task.progress_printer = lambda: said.append
    try:
        ours = compare(cfg("source=scaled", "target=target"), store)
    finally:
        compare_task.progress_printer = original
    theirs = compare(cfg_full("source=scaled", "target=target"), full_store)
    assert [(r.name, r.status, r.note) for r in ours.artifacts.results] == \
        [(r.name, r.status, r.note) for r in theirs.artifacts.results]
    assert ours.verdict == theirs.verdict
    assert any("computing again" in line and "store.keep" in line for line in said)
    for name in ("target", "scaled"):  # the bytes are here now, equal to the recorded hashes
        run = store.load(name)
        differ = [n for n in run.hash_only if kept_differs(stores, n)]
        assert differ and all(store.blobs.path(run.artifacts[n].ref).exists() for n in differ)


def kept_differs(stores, name: str) -> bool:
    _, _, kept = stores["index"]
    return kept["target"].artifacts[name].ref != kept["scaled"].artifacts[name].ref


def test_injection_and_locate_into_hash_only_runs_reach_the_full_captures_verdicts(tiny_cfg, tmp_path):
    root = tmp_path / "store"
    cfg = lambda *o: tiny_cfg(f"store.root={root}", *o)  # noqa: E731
    capture(cfg("run=t", "keep=index"), progress=quiet_progress)
    capture(cfg("run=s", "perturb=scale_layer", "keep=index"), progress=quiet_progress)
    store = Store(root)
    hashed = set(store.load("t").hash_only)

    result = inject(cfg("source=s", "target=t"), store, ["local_sample_embs", "embs"], progress=quiet_progress)

    assert result.downstream and all(result.after[n].same for n in result.downstream), result.verdict
    assert "makes all" in result.verdict
    assert compare_runs(store, result.replayed, store.load("s"), force=True).diverged() == []
    located = locate(cfg("source=s", "target=t"), store, progress=quiet_progress)
    assert sorted(located.root_cause) == ["embs.0", "local_sample_embs"] or \
        sorted(located.root_cause) == ["embs", "local_sample_embs"], located.root_cause
    assert hashed and set(store.load("t").hash_only) == hashed  # the record of what the capture kept stays


def test_a_run_stopped_before_its_end_resumes_from_the_bytes_it_kept(tmp_path):
    """Until the run is complete its saved manifest leaves out what it kept only the hash of: a resumed run has no
    bytes to go on from, so it computes them again rather than trust a record it cannot read."""
    from colbert_swap.core.store.manifest import RunManifest
    from colbert_swap.core.store.origin import Capture

    store = Store(tmp_path)
    manifest = RunManifest(label="r", config={}, config_hash="x", provenance={}, origin=Capture())
    writer = RunWriter(store, manifest)
    writer.keep = lambda name, value: name != "big"
    writer.put("big", torch.ones(4), "make")
    writer.put("small", torch.zeros(2), "make")
    writer.flush()
    saved = RunManifest.load(store.manifest_path("r"))
    assert set(saved.artifacts) == {"small"} and saved.hash_only == []
    assert not store.blobs.path(manifest.artifacts["big"].ref).exists()

    writer.finish()
    done = RunManifest.load(store.manifest_path("r"))
    assert set(done.artifacts) == {"big", "small"} and done.hash_only == ["big"] and done.complete
