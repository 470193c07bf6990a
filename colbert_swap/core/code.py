"""The code a stage runs, as one hash: what a run's reuse compares besides inputs, config, random state and
environment (an edited stage must not hand back the outputs of its old code).

    scope = CodeScope(follow=("colbert_swap.colbert", "colbert_swap.core.rng"), trees=(Path(".../colbert"),))
    code_hash(DAG.stage("centroids"), scope)    # -> '3f9a0c...' (16 hex digits)

A stage's code is the source of its function's module, the sources of the modules of `scope.follow` that
module imports (transitively: read with `ast`, imports inside functions counted, nothing imported), and every
source file under `scope.trees` (a library edited in place under the same version number: colbert-ai). The
scope comes from the DAG's resources (colbert_swap/colbert/resources.py): the core knows no colbert-ai.
Everything is read once per process (cached): the first hash of a run costs a few tens of milliseconds, the
others nothing.
"""

from __future__ import annotations

import ast
import hashlib
import sys
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from colbert_swap.core.dag import Stage

SOURCE_SUFFIXES = (".py", ".cpp", ".cu", ".h", ".cuh")  # what a tree holds of code (colbert-ai compiles its C++)


@dataclass(frozen=True)
class CodeScope:
    """What of the code a stage may run counts for its hash."""

    follow: tuple[str, ...] = ()  # modules (and packages: their submodules) whose imports are followed
    trees: tuple[Path, ...] = ()  # folders hashed whole (every file of SOURCE_SUFFIXES)
    root: Path | None = None  # where module sources are read (the folder holding the top-level package); None:
    # where the stage's module was loaded from


def code_hash(stage: Stage, scope: CodeScope) -> str:
    """The hash of the code `stage` runs under `scope` (once per process, stage module and scope)."""
    return _module_code(stage.fn.__module__, scope)


def modules_of(stage: Stage, scope: CodeScope) -> tuple[str, ...]:
    """The modules whose sources `code_hash` reads for `stage`: its own, then those it imports in `scope.follow`."""
    return _closure(stage.fn.__module__, scope.follow, _root(stage.fn.__module__, scope))


def clear() -> None:
    """Forget every hash and source read (a test that edits sources in place)."""
    _module_code.cache_clear()
    _closure.cache_clear()
    _file_digest.cache_clear()
    _tree_digest.cache_clear()
    _imports.cache_clear()


_lock = threading.Lock()  # a background stage's thread and the main thread may ask at once


@lru_cache(maxsize=None)
def _module_code(module: str, scope: CodeScope) -> str:
    with _lock:
        root = _root(module, scope)
        h = hashlib.sha256()
        for name in _closure(module, scope.follow, root):
            h.update(f"module {name} {_file_digest(_source(name, root))}\n".encode())
        for tree in scope.trees:
            h.update(f"tree {_tree_digest(Path(tree))}\n".encode())
        return h.hexdigest()[:16]


def _root(module: str, scope: CodeScope) -> Path:
    """The folder that holds `module`'s top-level package."""
    if scope.root is not None:
        return Path(scope.root)
    loaded = sys.modules.get(module)
    file = getattr(loaded, "__file__", None)
    if file is None:
        raise ValueError(f"no source file for module {module!r}: its code cannot be hashed")
    path, depth = Path(file).resolve(), len(module.split("."))
    return path.parents[depth if path.name == "__init__.py" else depth - 1]


def _source(module: str, root: Path) -> Path | None:
    """The file of `module` under `root` (a module or a package's __init__), None when there is none."""
    base = root.joinpath(*module.split("."))
    for path in (base.with_name(base.name + ".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _within(module: str, follow: tuple[str, ...]) -> bool:
    return any(module == f or module.startswith(f + ".") for f in follow)


@lru_cache(maxsize=None)
def _closure(module: str, follow: tuple[str, ...], root: Path) -> tuple[str, ...]:
    """`module` and the modules of `follow` it imports, transitively (sorted after the first)."""
    seen, todo = {module}, [module]
    while todo:
        for name in _imports(todo.pop(), root):
            if name not in seen and _within(name, follow):
                seen.add(name)
                todo.append(name)
    return (module, *sorted(seen - {module}))


@lru_cache(maxsize=None)
def _imports(module: str, root: Path) -> tuple[str, ...]:
    """The modules with a source under `root` that `module` imports, anywhere in it (functions too)."""
    path = _source(module, root)
    if path is None:
        return ()
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for name in names:
            while name and _source(name, root) is None:  # `from m import f`: m; `import a.b`: a.b
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return tuple(sorted(found))


@lru_cache(maxsize=None)
def _file_digest(path: Path | None) -> str:
    return "-" if path is None else hashlib.sha256(path.read_bytes()).hexdigest()


@lru_cache(maxsize=None)
def _tree_digest(tree: Path) -> str:
    """Every source file under `tree`, by relative path and content ("-" for a tree that is not there)."""
    if not tree.is_dir():
        return "-"
    h = hashlib.sha256()
    for path in sorted(p for p in tree.rglob("*") if p.suffix in SOURCE_SUFFIXES and p.is_file()):
        h.update(f"{path.relative_to(tree).as_posix()} {hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()
