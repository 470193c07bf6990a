"""A stage's code hash (colbert_swap/core/code.py) and where runs keep it (ArtifactRecord.code): the same source
gives the same hash, an edit of what a stage's module imports (in scope) gives another, and the records keep the
hash through JSON, adoption and injection."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from colbert_swap.core import code
from colbert_swap.core.code import CodeScope, code_hash, modules_of
from colbert_swap.core.dag import Stage
from colbert_swap.core.store import ArtifactRecord, BlobRef, RunManifest

# a package like the mirror: two stage modules, a helper only the first imports (inside a function, relatively),
# one module out of scope, and a library tree hashed whole
FILES = {
    "pkg/__init__.py": "",
    "pkg/other.py": "def outside():\n    return 0\n",
    "pkg/mirror/__init__.py": "",
    "pkg/mirror/helpers.py": "def helper(x):\n    return x + 1\n",
    "pkg/mirror/deep.py": "import pkg.mirror.helpers\n",
    "pkg/mirror/stage_a.py": ("import torch\nfrom pkg import other\n\n\ndef a(x):\n"
                              "    from .helpers import helper\n    return helper(x) + other.outside()\n"),
    "pkg/mirror/stage_b.py": "def b(x):\n    return x\n",
    "pkg/mirror/stage_c.py": "from pkg.mirror import deep\n\n\ndef c(x):\n    return x\n",
    "lib/core.py": "VALUE = 1\n",
    "lib/kernel.cpp": "int f() { return 1; }\n",
}


def _write(root: Path, files: dict[str, str] = FILES) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def _stage(module: str, name: str) -> Stage:
    def fn(x):
        return x

    fn.__name__, fn.__module__ = name, module
    return Stage(fn=fn, phase="setup", outputs=(name,), inputs=(("x", "x"),), resources=(), per_chunk=False)


STAGES = {n: _stage(f"pkg.mirror.stage_{n}", n) for n in "abc"}


def _scope(root: Path) -> CodeScope:
    return CodeScope(follow=("pkg.mirror",), trees=(root / "lib",), root=root)


def _hashes(root: Path) -> dict[str, str]:
    return {n: code_hash(s, _scope(root)) for n, s in STAGES.items()}


@pytest.fixture
def tree(tmp_path):
    code.clear()
    yield _write(tmp_path / "original")
    code.clear()


def _edited(tree: Path, name: str, text: str) -> Path:
    copy = tree.parent / f"edited-{name.replace('/', '-')}"
    shutil.copytree(tree, copy)
    (copy / name).write_text(text)
    return copy


def test_the_same_source_gives_the_same_hash(tree):
    first = _hashes(tree)
    assert first == _hashes(tree)  # cached
    assert first == _hashes(_edited(tree, "pkg/mirror/stage_b.py", FILES["pkg/mirror/stage_b.py"]))  # a copy
    code.clear()
    assert first == _hashes(tree)  # read again
    assert len(set(first.values())) == 3 and all(len(h) == 16 for h in first.values())


def test_the_modules_of_a_stage_are_its_own_and_those_it_imports_in_scope(tree):
    assert modules_of(STAGES["a"], _scope(tree)) == ("pkg.mirror.stage_a", "pkg.mirror.helpers")
    assert modules_of(STAGES["b"], _scope(tree)) == ("pkg.mirror.stage_b",)
    assert modules_of(STAGES["c"], _scope(tree)) == ("pkg.mirror.stage_c", "pkg.mirror", "pkg.mirror.deep",
                                                     "pkg.mirror.helpers")  # transitively


def test_an_edited_helper_changes_the_stages_whose_modules_import_it(tree):
    before = _hashes(tree)
    after = _hashes(_edited(tree, "pkg/mirror/helpers.py", "def helper(x):\n    return x + 2\n"))
    assert after["a"] != before["a"] and after["c"] != before["c"]  # directly (in a function), transitively
    assert after["b"] == before["b"]


def test_an_edit_in_place_counts_once_the_cache_is_cleared(tree):
    before = _hashes(tree)
    (tree / "pkg/mirror/stage_b.py").write_text("def b(x):\n    return -x\n")
    assert _hashes(tree) == before  # once per process: a stage's hash is read once
    code.clear()
    after = _hashes(tree)
    assert after["b"] != before["b"] and after["a"] == before["a"]


def test_modules_out_of_scope_do_not_count_and_the_library_tree_counts_for_every_stage(tree):
    before = _hashes(tree)
    assert _hashes(_edited(tree, "pkg/other.py", "def outside():\n    return 1\n")) == before
    for name in ("lib/core.py", "lib/kernel.cpp"):
        after = _hashes(_edited(tree, name, "changed\n"))
        assert all(after[n] != before[n] for n in STAGES), name
    assert _hashes(_edited(tree, "lib/notes.txt", "not code\n")) == before


def test_the_stage_module_is_found_where_it_was_loaded_from(tmp_path):
    """Without `root`, the sources are read where the stage's module was imported from (the real DAG)."""
    from colbert_swap.colbert.resources import Resources
    from colbert_swap.colbert.stages import DAG

    scope = Resources(cfg=None, store=None, run_dir=tmp_path).code_scope()
    assert scope.root is None and [p.name for p in scope.trees] == ["colbert"]
    modules = modules_of(next(s for s in DAG.stages if s.name == "codes"), scope)
    assert modules[0] == "colbert_swap.colbert.stages.index"
    assert {"colbert_swap.colbert.stages.setup", "colbert_swap.colbert.stages.train", "colbert_swap.colbert.resources",
            "colbert_swap.core.rng"} <= set(modules)
    assert not [m for m in modules if not m.startswith("colbert_swap.colbert") and m != "colbert_swap.core.rng"]
    code.clear()
    start = time.perf_counter()
    hashes = {s.name: code_hash(s, scope) for s in DAG.stages}
    first = time.perf_counter() - start
    assert first < 1.0, f"hashing every stage's code took {first:.2f} s"
    start = time.perf_counter()
    assert hashes == {s.name: code_hash(s, scope) for s in DAG.stages}
    assert time.perf_counter() - start < 0.01  # cached
    assert hashes["codes"] != hashes["ivf"]  # index.py and finalize.py


def _ref(h: str) -> BlobRef:
    return BlobRef(hash=h * 32, kind="tensor", dtype="float32", shape=(2,), device="cpu")


def test_records_keep_the_code_hash_through_json_adoption_and_injection(tmp_path):
    computed = ArtifactRecord(ref=_ref("a"), stage="embs.0", inputs={"x": "b" * 32}, env="cpu-x", code="0123456789abcdef")
    old = ArtifactRecord(ref=_ref("c"), stage="codes.0", env="cpu-x")
    back = ArtifactRecord.from_json(json.loads(json.dumps(computed.to_json())))
    assert back == computed and back.code == "0123456789abcdef"
    assert "code" not in old.to_json() and ArtifactRecord.from_json(old.to_json()).code is None  # as before

    origin = RunManifest("source", {}, "0" * 16, {"torch": "x"}, {"kind": "capture"},
                         {"embs.0": computed, "codes.0": old})
    assert origin.code_hashes() == {"embs.0": "0123456789abcdef"}
    origin.save(tmp_path / "m.json")
    assert RunManifest.load(tmp_path / "m.json").artifacts == origin.artifacts

    replay = RunManifest("replay", {}, "0" * 16, {"torch": "x"}, {"kind": "capture"})
    replay.adopt("embs.0", computed, origin)  # reused: its record
    assert replay.artifacts["embs.0"].code == computed.code
    replay.adopt("codes.0", old, origin)
    assert replay.artifacts["codes.0"].code is None
    # injected: the record made anew (runs/execute.py) carries the code of the source's record
    replay.adopt("embs.0", ArtifactRecord(ref=computed.ref, stage="inject:source", env=computed.env,
                                          code=computed.code), origin)
    assert replay.artifacts["embs.0"].code == computed.code and replay.code_hashes() == {}


def test_the_code_hash_knows_no_colbert():
    """core/code.py is handed its scope (colbert_swap/colbert/resources.py `code_scope`): it imports no colbert-ai
    and nothing of the mirror."""
    from tests.unit.test_layers import imports, layer

    assert imports()["colbert_swap.core.code"] == {"colbert_swap.core.dag"}
    assert layer("colbert_swap.core.code") == layer("colbert_swap.core.engine")
