"""task=export and task=import: a run travels in one zip file; the import checks everything before it writes, and
an import that is refused, interrupted or killed leaves the store exactly as it was (the same files)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from colbert_swap.core.store import IMPORTED, Store, blob_refs
from colbert_swap.core.store import bundle as bundle_module
from colbert_swap.core.store.bundle import (INDEX, JOURNAL, export_bundle, import_bundle, member,
                                            recover_interrupted_import)
from colbert_swap.errors import UserError
from colbert_swap.tasks import drill, export, gc, import_, verify
from colbert_swap.tasks.capture import capture
from colbert_swap.tasks.compare import compare
from tests.conftest import TINY, make_cfg, quiet_progress

REPO = Path(__file__).resolve().parents[2]


def files(root: Path) -> list[str]:
    """Every file under a store's root (relative), the store's whole state as a file set."""
    return sorted(p.relative_to(root).as_posix() for p in Path(root).rglob("*") if p.is_file())


def cfg_for(root: Path, *overrides: str):
    return make_cfg(f"store.root={root}", *TINY, f"out_dir={root.parent / 'reports'}", *overrides)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A store of its own (the tests corrupt and delete files) with run `bx`, its drill recording, and bundles:
    everything, and artifacts=index, written by task=export."""
    root = tmp_path_factory.mktemp("bundle") / "store"
    capture(cfg_for(root, "run=bx"), progress=quiet_progress)
    assert drill.run(cfg_for(root, "task=drill", "run=bx")) == 0
    full, index = root.parent / "bx.zip", root.parent / "bx-index.zip"
    assert export.run(cfg_for(root, "task=export", "run=bx", f"out={full}")) == 0
    assert export.run(cfg_for(root, "task=export", "run=bx", f"out={index}", "artifacts=index")) == 0
    return root, full, index


def test_a_run_travels_whole_and_twice_is_already_there(source, tmp_path, capsys):
    root, full, _ = source
    store, here = Store(root), Store(tmp_path / "empty")
    summary = import_bundle(here, full)
    assert summary.imported == ["bx", "bx+drill"] and summary.skipped == [] and summary.blobs_present == 0
    assert summary.left_out == {} and summary.machine["torch"]
    with zipfile.ZipFile(full) as zf:
        carried = {name: zf.read(name) for name in zf.namelist() if name.startswith("runs/")}
    for label in ("bx", "bx+drill"):  # the manifest byte for byte, every file of the run folder, every blob
        assert here.manifest_path(label).read_bytes() == store.manifest_path(label).read_bytes()
        folder = [f"runs/{f}" for f in files(here.root / "runs")
                  if f.startswith(f"{label}/") and f != f"{label}/{IMPORTED}"]
        assert folder == sorted(n for n in carried if n.startswith(f"runs/{label}/"))
        assert all((here.root / name).read_bytes() == carried[name] for name in folder)
        for _, ref in blob_refs(store.load(label)):
            assert here.blobs.path(ref).read_bytes() == store.blobs.path(ref).read_bytes()
    for path in (store.run_dir("bx") / "index").iterdir():  # colbert-ai's index files, byte for byte
        assert (here.run_dir("bx") / "index" / path.name).read_bytes() == path.read_bytes()
    shipped = {r.hash for label in ("bx", "bx+drill") for _, r in blob_refs(store.load(label))}
    assert summary.blobs_written == len(shipped)
    record = json.loads((here.run_dir("bx") / IMPORTED).read_text())
    assert record["bundle"] == "bx.zip" and record["sha256"] == hashlib.sha256(full.read_bytes()).hexdigest()
    assert record["left_out"] == [] and here.left_out("bx") == set()
    assert verify.run(cfg_for(here.root)) == 0 and verify.problems(here)[:2] == ([], [])

    before = files(here.root)
    again = import_bundle(here, full)  # the same bundle twice: already there, nothing written
    assert again.imported == [] and again.skipped == ["bx", "bx+drill"] and again.blobs_written == 0
    assert files(here.root) == before

    assert import_.run(cfg_for(here.root, "task=import", f"bundle={full}")) == 0
    out = capsys.readouterr().out
    assert "run 'bx': already there, the same manifest: skipped" in out and "task=compare source=bx" in out


def test_into_a_store_with_the_blobs_none_is_written_again_and_as_renames(source, tmp_path):
    root, full, _ = source
    own = tmp_path / "store"
    shutil.copytree(root, own)
    store = Store(own)
    clash = store.load("bx")  # the same label, other content (its manifest saved again: another digest)
    clash.created = "2000-01-01T00:00:00+0000"
    store.save(clash)
    refused = files(own)
    with pytest.raises(UserError, match="run 'bx' is already in the store .* with other content: as=OTHER"):
        import_bundle(store, full)
    assert files(own) == refused

    summary = import_bundle(store, full, rename="gpu")
    assert summary.labels == {"bx": "gpu", "bx+drill": "gpu+drill"} and summary.imported == ["gpu", "gpu+drill"]
    assert summary.blobs_written == 0 and summary.blobs_present > 0  # content-addressed: every blob is here
    gpu = store.load("gpu")  # re-saved with its new label (a new digest); the rest as exported
    assert gpu.to_json() == {**store.load("bx").to_json(), "label": "gpu", "created": gpu.created}
    assert store.load("gpu+drill").origin.run == "gpu"  # the drill of the renamed run, as its label says
    result = compare(cfg_for(own, "task=compare", "source=bx", "target=gpu"), store)
    assert not result.artifacts.diverged() and result.whole.identical and result.whole.index == {}
    assert import_bundle(store, full, rename="gpu").skipped == ["gpu", "gpu+drill"]
    assert verify.problems(store)[0] == []


def test_artifacts_index_is_smaller_and_verifies_with_the_rest_absent_by_choice(source, tmp_path, capsys):
    root, full, index = source
    assert index.stat().st_size < full.stat().st_size / 2
    here = Store(tmp_path / "store")
    assert import_.run(cfg_for(here.root, "task=import", f"bundle={index}")) == 0
    run = here.load("bx")
    left = here.left_out("bx")
    kept = export.kept("index", [run])
    carried = {run.artifacts[n].ref.hash for n in kept}  # an artifact of the same bytes as a kept one is there too
    assert left == {n for n, r in run.artifacts.items() if r.ref.hash not in carried}
    assert {"embs.0", "local_sample_embs", "sample"} <= left
    assert {"codes.0", "residuals.0", "doclens.0", "centroids", "ivf_pid", "num_chunks"} <= kept
    recorded = here.load("bx+drill").artifacts  # the drill's module outputs are no index artifacts; its JSON goes
    assert here.left_out("bx+drill") == {n for n, r in recorded.items() if r.ref.kind == "tensor"}
    assert all(not here.blobs.path(run.artifacts[n].ref).exists() for n in left)
    assert "not in this store by choice" in capsys.readouterr().out
    assert verify.run(cfg_for(here.root)) == 0 and verify.problems(here)[0] == []
    out = capsys.readouterr().out
    assert "problem:" not in out and f"run 'bx': {len(left)} artifacts not in this store by choice (imported from " \
                                      "bx-index.zip without them)" in out
    original = Store(root)
    for path in (original.run_dir("bx") / "index").iterdir():  # colbert-ai's index files, byte for byte
        assert (here.run_dir("bx") / "index" / path.name).read_bytes() == path.read_bytes()
    # an imported run exports again: what it lacks is left out again, not an error
    again = export_bundle(here, ["bx"], tmp_path / "again.zip")
    assert again.left_out == {"bx": sorted(left)}


def rewrite(src: Path, dest: Path, change) -> None:
    """A copy of bundle `src` with `change(members, index)` applied, every CRC computed again by zipfile."""
    with zipfile.ZipFile(src) as zf:
        members = {name: zf.read(name) for name in zf.namelist() if name != INDEX}
        index = json.loads(zf.read(INDEX))
    change(members, index)
    with zipfile.ZipFile(dest, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        zf.writestr(INDEX, json.dumps(index))


def flipped(data: bytes, at: int = -1) -> bytes:
    out = bytearray(data)
    out[at] ^= 0x01
    return bytes(out)


def a_tensor(index: dict) -> str:
    return next(n for n in index["members"] if n.endswith(".safetensors") and index["members"][n]["size"] > 10_000)


def tamper_content(members: dict, index: dict) -> None:  # only the content hash catches it
    name = a_tensor(index)
    members[name] = flipped(members[name])
    index["members"][name]["sha256"] = hashlib.sha256(members[name]).hexdigest()


def tamper_manifest(members: dict, index: dict) -> None:  # only the manifest's digest catches it
    name = "runs/bx/manifest.json"
    members[name] = members[name].replace(b'"complete": true', b'"complete": false')
    index["members"][name] = {"size": len(members[name]), "sha256": hashlib.sha256(members[name]).hexdigest()}


def tamper_version(members: dict, index: dict) -> None:
    index["version"] = 2


def tamper_unlisted(members: dict, index: dict) -> None:
    members["runs/bx/extra.txt"] = b"not listed"


def flip_a_stored_byte(full: Path, dest: Path) -> None:
    """One byte flipped inside a stored tensor member of the zip itself (its CRC no longer matches)."""
    with zipfile.ZipFile(full) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith(".safetensors")
                    and i.compress_type == zipfile.ZIP_STORED and i.file_size > 10_000)
    data = bytearray(full.read_bytes())
    header = info.header_offset
    start = header + 30 + int.from_bytes(data[header + 26:header + 28], "little") \
        + int.from_bytes(data[header + 28:header + 30], "little")
    data[start + info.file_size - 1] ^= 0x01
    dest.write_bytes(bytes(data))


@pytest.mark.parametrize("how,expected", [
    ("truncated", "is not a readable zip file"),
    ("not a zip", "is not a readable zip file"),
    ("flipped byte", "member blobs/.* cannot be read .*Bad CRC-32"),
    ("flipped byte, CRC and sha256 computed again", "member blobs/.* does not match its content hash"),
    ("manifest edited, CRC and sha256 computed again", "member runs/bx/manifest.json is not a manifest colbert_swap "
                                                       "wrote .*does not match its digest"),
    ("unknown version", "is a bundle of version 2, and this colbert_swap reads version 1"),
    ("a member not listed", "member runs/bx/extra.txt is not listed in bundle.json"),
])
def test_a_damaged_bundle_is_refused_naming_why_and_the_store_is_unchanged(source, tmp_path, how, expected):
    _, full, index = source
    bad = tmp_path / "bad.zip"
    if how == "truncated":
        bad.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    elif how == "not a zip":
        bad.write_text("a text file\n")
    elif how == "flipped byte":
        flip_a_stored_byte(full, bad)
    else:
        rewrite(full, bad, {"flipped byte, CRC and sha256 computed again": tamper_content,
                            "manifest edited, CRC and sha256 computed again": tamper_manifest,
                            "unknown version": tamper_version, "a member not listed": tamper_unlisted}[how])
    here = Store(tmp_path / "store")
    import_bundle(here, index)  # a store with a run in it (the index bundle's): what it holds stays as it is
    before = files(here.root)
    with pytest.raises(UserError, match=expected):
        import_bundle(here, bad, rename="other")
    assert files(here.root) == before
    assert verify.run(cfg_for(here.root)) == 0


@pytest.mark.parametrize("point,after", [("blob", 2), ("place", 0), ("place", 1)])
def test_an_interrupted_import_is_rolled_back(source, tmp_path, monkeypatch, point, after):
    _, full, index = source
    here = Store(tmp_path / "store")
    import_bundle(here, index)  # blobs shared with the full bundle: they are not the import's to remove
    before = files(here.root)
    calls: list = []
    real = bundle_module.atomic_write

    def write(path, data):
        real(path, data)
        calls.append(path)
        if point == "blob" and len(calls) == after:
            raise KeyboardInterrupt

    def place(staging, folder):
        if point == "place" and len([c for c in calls if c == "placed"]) == after:
            raise KeyboardInterrupt
        os.replace(staging, folder)
        calls.append("placed")

    monkeypatch.setattr(bundle_module, "atomic_write", write)
    monkeypatch.setattr(bundle_module, "_place", place)
    with pytest.raises(KeyboardInterrupt):
        import_bundle(here, full, rename="gpu")
    assert calls and files(here.root) == before and not (here.root / JOURNAL).exists()


KILLED = r"""
import os, signal, sys
from colbert_swap.core.store import bundle

point, after = sys.argv[1], int(sys.argv[2])
done = {"blob": 0, "place": 0}
write, place, release = bundle.atomic_write, bundle._place, bundle._Journal.release


def here(what):
    if point == what and done[what] == after:
        os.kill(os.getpid(), signal.SIGKILL)


def killing_write(path, data):
    write(path, data)
    done["blob"] += 1
    here("blob")


def killing_place(staging, folder):
    here("place")
    place(staging, folder)
    done["place"] += 1


def killing_release(journal):
    if point == "release":
        os.kill(os.getpid(), signal.SIGKILL)
    release(journal)


bundle.atomic_write, bundle._place, bundle._Journal.release = killing_write, killing_place, killing_release
sys.argv = ["colbert_swap", *sys.argv[3:]]
from colbert_swap.__main__ import main

main()
"""


@pytest.mark.parametrize("point,after,recovery", [("blob", 1, "verify"), ("blob", 4, "import"), ("place", 0, "gc"),
                                                  ("place", 1, "recover"), ("release", 0, "verify")])
def test_a_killed_import_is_rolled_back_by_the_next_verify_gc_or_import(source, tmp_path, capsys, point, after,
                                                                        recovery):
    """`python -m colbert_swap task=import` killed with SIGKILL at a point of its writing (it kills itself there:
    the same as kill -9 from outside, at a known moment): its journal stays, and is rolled back."""
    _, full, index = source
    here = Store(tmp_path / "store")
    import_bundle(here, index)
    before = files(here.root)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    child = subprocess.run([sys.executable, "-c", KILLED, point, str(after), "task=import", f"bundle={full}",
                            "as=gpu", f"store.root={here.root}", f"hydra.run.dir={tmp_path}/hydra"],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert child.returncode == -9, child.stderr
    assert (here.root / JOURNAL).exists() and files(here.root) != before
    if recovery == "verify":
        assert verify.run(cfg_for(here.root)) == 0
        assert "an interrupted import was rolled back: " in capsys.readouterr().out
    elif recovery == "gc":
        assert gc.run(cfg_for(here.root, "task=gc")) == 0
        assert "an interrupted import was rolled back: " in capsys.readouterr().out
    elif recovery == "recover":
        assert recover_interrupted_import(here) > 0 and recover_interrupted_import(here) is None
    else:  # the next import rolls it back, then imports
        assert import_bundle(here, full, rename="gpu").imported == ["gpu", "gpu+drill"]
        assert verify.problems(here)[:2] == ([], []) and not (here.root / JOURNAL).exists()
        new = [f for f in files(here.root) if f not in before]
        assert not [f for f in new if "/.import." in f or (f.startswith("blobs/") and "/." in f)]  # no temp file
        assert sorted(f for f in new if f.endswith(".lock")) == ["runs/.gpu+drill.lock", "runs/.gpu.lock"]
        return
    assert files(here.root) == before
    assert verify.problems(here)[:2] == ([], [])


def test_export_refuses_a_damaged_store_and_leaves_no_file(source, tmp_path):
    shutil.copytree(source[0], tmp_path / "store")
    store = Store(tmp_path / "store")
    ref = store.load("bx").artifacts["centroids"].ref
    store.blobs.path(ref).write_bytes(flipped(store.blobs.path(ref).read_bytes()))
    with pytest.raises(UserError, match="run 'bx' artifact .*centroids': file .* does not match its content hash "
                                        ".*task=repair run=bx`"):
        export_bundle(store, ["bx"], tmp_path / "out" / "bx.zip")
    assert list((tmp_path / "out").iterdir()) == []  # not even a partial file
    with pytest.raises(UserError, match="run 'nope' is not in the store"):
        export.run(cfg_for(store.root, "task=export", "run=nope"))
    assert member(ref) == store.blobs.path(ref).relative_to(store.root).as_posix()


def test_a_drill_recorded_elsewhere_comes_in_the_bundle_and_drills_here(source, tmp_path):
    """task=drill source=A target=B where A's recording came in a bundle (A as `gpu`): B's is recorded here."""
    root, full, _ = source
    store = Store(tmp_path / "store")
    import_bundle(store, full, rename="gpu")
    capture(cfg_for(store.root, "run=eager", "perturb=eager"), progress=quiet_progress)
    result = drill.drill(cfg_for(store.root, "task=drill", "source=gpu", "target=eager"), store, quiet_progress)
    assert (result.source, result.target) == ("gpu", "eager") and result.rows
    assert store.load("eager+drill").origin.probes == store.load("gpu+drill").origin.probes
    assert drill.run(cfg_for(store.root, "task=drill", "source=gpu", "target=eager")) == 0


def test_a_run_without_some_bytes_compares_what_it_can_and_says_what_it_could_not(source, tmp_path):
    """Imported with artifacts=index: an artifact whose hashes differ and whose bytes were left out is `unread`
    (not compared, never called equal or diverged); equal hashes are equal without their bytes."""
    root, _, index = source
    store = Store(tmp_path / "store")
    import_bundle(store, index)
    capture(cfg_for(store.root, "run=eager", "perturb=eager"), progress=quiet_progress)
    result = compare(cfg_for(store.root, "task=compare", "source=bx", "target=eager"), store)
    statuses = {r.name: r for r in result.artifacts.results}
    left = store.left_out("bx")
    unread = [n for n, r in statuses.items() if r.status == "unread"]
    assert unread and set(unread) <= left
    for name in unread:
        assert store.load("bx").artifacts[name].ref != store.load("eager").artifacts[name].ref
        assert statuses[name].note.startswith(f"not compared: the bytes of bx's `{name}`")
    assert all(statuses[n].status == "equal" for n in left
               if n in statuses and store.load("bx").artifacts[n].ref == store.load("eager").artifacts[n].ref)
    assert set(unread) <= set(result.artifacts.diverged())  # not bitwise equal: still a difference to explain
    from colbert_swap.tasks.inject import inject

    with pytest.raises(UserError, match=r"cannot inject local_sample_embs from run 'bx': it was imported from a bundle "
                                        r"that left out their bytes \(bx-index.zip\)"):
        inject(cfg_for(store.root, "task=inject", "source=bx", "target=eager"), store, ["local_sample_embs"])
    assert "were not compared" in result.verdict or "was not compared" in result.verdict
