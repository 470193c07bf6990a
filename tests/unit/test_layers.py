"""The package's layers (docs/architecture.md): each module imports only its own layer and the layers below it,
no import cycle (imports inside functions counted), and at most 8 levels between the package's top-level
rooms (a folder counted as one room). Read from the code's own imports with `ast`; nothing is imported."""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "colbert_swap"

# lowest first; a module may import its own layer and those below, never one above
LAYERS = [
    ("base", ["errors", "config"]),
    ("env", ["env"]),
    ("core", ["core"]),
    ("colbert", ["colbert"]),
    ("runs and proof", ["runs", "proof"]),
    ("study", ["study"]),
    ("tasks", ["tasks"]),
    ("command line and API", ["__main__", "api", "__init__"]),
]


def room(module: str) -> str:
    """The top-level file or folder of `colbert_swap.x.y`: 'x'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer(module: str) -> int:
    return next(i for i, (_, rooms) in enumerate(LAYERS) if room(module) in rooms)


@lru_cache(maxsize=1)
def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imported(module: str, node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".") if modules()[module].name == "__init__.py" else module.split(".")[:-1]
        package = package[: len(package) - node.level + 1]
        base = ".".join(package + ([base] if base else []))
    return [f"{base}.{a.name}" for a in node.names] + [base]


@lru_cache(maxsize=1)
def imports() -> dict[str, set[str]]:
    """module -> the package's modules it imports, anywhere in it (functions too)."""
    known, out = modules(), {}
    for module, path in known.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for name in _imported(module, node):
                    while name not in known and "." in name:
                        name = name.rpartition(".")[0]
                    if name in known and name != module and name != "colbert_swap":
                        found.add(name)
        out[module] = found
    return out


def test_every_module_is_in_a_layer():
    rooms = {r for _, rs in LAYERS for r in rs}
    assert {room(m) for m in modules()} <= rooms


def test_no_import_reaches_a_higher_layer():
    upward = [f"{m} -> {n} ({LAYERS[layer(m)][0]} imports {LAYERS[layer(n)][0]})"
              for m, names in imports().items() for n in names if layer(n) > layer(m)]
    assert not upward, "\n".join(upward)


def test_runs_and_proof_do_not_import_each_other():
    across = [f"{m} -> {n}" for m, names in imports().items() for n in names
              if {room(m), room(n)} == {"runs", "proof"}]
    assert not across, "\n".join(across)


def _cycle() -> list[str] | None:
    graph, state, stack = imports(), {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        state[m] = "done"
        stack.pop()
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_cycle():
    cycle = _cycle()
    assert cycle is None, " -> ".join(cycle)


def test_at_most_eight_levels_between_rooms():
    graph: dict[str, set[str]] = {}
    for m, names in imports().items():
        graph.setdefault(room(m), set()).update(room(n) for n in names if room(n) != room(m))

    @lru_cache(maxsize=None)
    def level(r: str) -> int:
        return 1 + max((level(n) for n in graph.get(r, ())), default=0)

    assert max(level(r) for r in graph) <= 8, {r: level(r) for r in graph}


@pytest.mark.parametrize("name", ["colbert_swap.core.engine", "colbert_swap.core.dag"])
def test_the_core_knows_no_colbert(name):
    assert not [n for n in imports()[name] if layer(n) > layer(name) or room(n) == "colbert"]
