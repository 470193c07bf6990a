"""Environment specs generated from one table, conf/env/axes.yaml: a stack of pins and axes of steps.

    axis("torch")          # ['torch-1.13.1', 'torch-2.0.0', ..., 'torch-2.15.0']: only torch changes
    axis("transformers")   # ['torch-2.15.0', 'huggingface_hub-0.36.2', 'transformers-4.41.2', ...]
    generated()["faiss-1.8.0"]["requirements"]   # ['torch==2.15.0', 'transformers==4.38.2', ..., 'faiss-cpu==1.8.0']

An axis lists `versions` of one `package`, or `steps` ({package: version, ...}, optional `name`); each step
sets its packages on top of the step before it, the first on top of `from` (a spec of an earlier axis) or
of the stack. A step's `python: "3.9"` sets the interpreter instead of a package (spec python `python3.9`,
label `python-3.9`), kept by the steps after it; `by_torch` and `by_python` rules add the pins that hold
for a range of torch or Python versions. `load_spec(name)` (environments.py) turns a step into an EnvSpec; a hand-written
conf/env/NAME.yaml of the same name wins.

>>> axis("torch")[:3], axis("torch")[-1]
(['torch-1.13.1', 'torch-2.0.0', 'torch-2.0.1'], 'torch-2.15.0')
>>> generated()["torch-2.4.1"]["changes"]
{'torch': '2.4.1'}
>>> generated()["python-3.10"]["python"], generated()["python-3.10"]["changes"]
('python3.10', {'python': '3.10'})
"""

from __future__ import annotations

import copy
import re
from functools import lru_cache
from pathlib import Path

from omegaconf import OmegaConf

from colbert_swap.errors import UserError

TABLE = Path(__file__).resolve().parents[2] / "conf" / "env" / "axes.yaml"


def generated(table: Path | None = None) -> dict[str, dict]:
    """name -> spec fields (the keys of EnvSpec) for every step of every axis, in table order."""
    return {name: copy.deepcopy(spec) for name, spec in _generate(*_key(table))}


def axis(name: str, table: Path | None = None) -> list[str]:
    """The ordered spec names of axis `name`, its starting point (`from`) first."""
    table = Path(table or TABLE)
    names = [n for n, spec in generated(table).items() if spec["axis"] == name]
    known = axes(table)
    if name not in known:
        raise UserError(f"axis {name!r} is not in {table}; axes: {', '.join(known)}")
    start = axis_start(name, table)
    return ([start] if start else []) + names


def axis_start(name: str, table: Path | None = None) -> str | None:
    """The spec axis `name` starts from (its `from`), or None."""
    known = axes(table)
    return _load(*_key(table)).get("axes", [])[known.index(name)].get("from") if name in known else None


def axes(table: Path | None = None) -> list[str]:
    return [a["axis"] for a in _load(*_key(table)).get("axes", [])]


def _key(table: Path | None) -> tuple[str, float]:
    """The table's path and modification time: an edited table is read again."""
    path = Path(table or TABLE)
    return str(path), path.stat().st_mtime if path.exists() else 0.0


@lru_cache(maxsize=8)
def _load(table: str, _mtime: float) -> dict:
    path = Path(table)
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True) if path.exists() else {}


@lru_cache(maxsize=8)
def _generate(table: str, mtime: float) -> tuple[tuple[str, dict], ...]:
    data = _load(table, mtime)
    pins_of: dict[str, dict[str, str]] = {}
    python_of: dict[str, str] = {}
    out: list[tuple[str, dict]] = []
    for entry in data.get("axes", []):
        if entry.get("from") and entry["from"] not in pins_of:
            raise UserError(f"{table}: axis {entry['axis']!r} starts from {entry['from']!r}, not a step before it")
        pins = dict(pins_of[entry["from"]]) if entry.get("from") else _strings(data.get("stack", {}))
        python = python_of[entry["from"]] if entry.get("from") else str(data.get("python", "python3.11"))
        previous = entry.get("from")
        for step in _steps(entry):
            name = step.pop("name", None) or _label(data, *next(iter(step.items())))
            changes = _strings(step)
            python = interpreter(changes["python"]) if "python" in changes else python
            pins = {**pins, **{p: v for p, v in changes.items() if p != "python"}}
            pins_of[name], python_of[name] = pins, python
            out.append((name, _spec(data, entry["axis"], name, pins, changes, previous, python)))
            previous = name
    return tuple(out)


def interpreter(version: str) -> str:
    """A step's `python`: a bare version names the interpreter on PATH, anything else is taken as written.

    >>> interpreter("3.9"), interpreter("3.13"), interpreter("/usr/bin/python3")
    ('python3.9', 'python3.13', '/usr/bin/python3')
    """
    return f"python{version}" if re.fullmatch(r"\d+(\.\d+)*", version) else version


def python_version(python: str) -> str | None:
    """The version an interpreter name states (`python3.11` -> `3.11`), None where it states none.

    >>> python_version("python3.13"), python_version("/opt/py/bin/python3.9"), python_version("current")
    ('3.13', '3.9', None)
    """
    found = re.search(r"python(\d+\.\d+(\.\d+)*)$", python)
    return found.group(1) if found else None


def _steps(entry: dict) -> list[dict]:
    if "versions" in entry:
        return [{entry["package"]: str(v)} for v in entry["versions"]]
    return [dict(step) for step in entry.get("steps", [])]


def _strings(pins: dict) -> dict[str, str]:
    return {str(k): str(v) for k, v in pins.items()}


def _requirement(package: str, version: str) -> str:
    """`numpy==1.26.4` for a version, `setuptools<70` for a specifier."""
    return f"{package}{version}" if version[:1] in "<>=!~" else f"{package}=={version}"


def _label(data: dict, package: str, version: str) -> str:
    return f"{data.get('labels', {}).get(package, package)}-{version}"


def _spec(data: dict, axis_name: str, name: str, pins: dict, changes: dict, previous: str | None,
          python: str) -> dict:
    extra, notes = _range_pins(data, pins.get("torch"), python_version(python))
    requirements = [_requirement(p, v) for p, v in pins.items() if p not in extra] + \
                   [_requirement(p, v) for p, v in extra.items()]
    moved = ", ".join(f"{p} {v}" for p, v in changes.items())
    against = f"against {previous} only {moved} changes" if previous else f"the start of the {axis_name} axis"
    return {"name": name, "python": python, "requirements": requirements,
            "axis": axis_name, "changes": changes, "notes": notes, "exclude": list(data.get("exclude", [])),
            "description": f"{moved} with the rest of {TABLE.name}'s stack pinned: {against}."}


def _range_pins(data: dict, torch: str | None, python: str | None = None) -> tuple[dict[str, str], list[str]]:
    """The `by_torch` and `by_python` pins (and their reasons) that hold for this torch and Python version;
    a `by_python` pin wins over a `by_torch` pin of the same package."""
    from packaging.specifiers import SpecifierSet

    extra, notes = {}, []
    for key, version in (("torch", torch), ("python", python)):
        for rule in data.get(f"by_{key}", []):
            if version and SpecifierSet(str(rule[key])).contains(version, prereleases=True):
                extra.update(_strings(rule["pins"]))
                notes.append(f"{key} {rule[key]}: "
                             f"{', '.join(_requirement(p, v) for p, v in _strings(rule['pins']).items())}"
                             f" ({rule.get('why', 'no reason given')})")
    return extra, notes
