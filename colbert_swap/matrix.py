"""Capture one config in several environments, compare neighbours, locate each change in its own environment.

    study = Study(cfg, store)                    # cfg.envs = ["torch-2.0.1", "torch-2.1.0", "torch-2.13.0"]
    study.capture("torch-2.1.0")                 # builds the venv once, captures run `torch-2.1.0`
    pair = study.pair("torch-2.0.1", "torch-2.1.0")   # compare; if they differ, `locate` runs in 2.1.0's env

Runs are labelled by environment name in one store; a run already complete is never captured again, so a
matrix that stopped (a failed install, a crash) continues where it stopped when run again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from colbert_swap.compare.runs import RunComparison, WholeRun, compare_runs, whole_run
from colbert_swap.compare.tolerances import Tolerance
from colbert_swap.config import model_fields
from colbert_swap.environments import EnvSpec, capture_in, ensure, load_spec, run_in
from colbert_swap.errors import UserError
from colbert_swap.replay import compact
from colbert_swap.stages import DAG
from colbert_swap.store import Store

def config_overrides(cfg) -> list[str]:
    """The shared config as command-line overrides, so every environment captures the very same question."""
    out = [f"seed={cfg.seed}"]
    for group in ("model", "collection", "index"):
        values = OmegaConf.to_container(cfg[group], resolve=True)
        for key, value in (model_fields(values) if group == "model" else values).items():
            out.append(f"{group}.{key}={_value(value)}")
    return out


def _value(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass
class Pair:
    a: str
    b: str
    comparison: RunComparison
    whole: WholeRun
    locate: dict | None = None  # the locate report.json, when the pair differs
    locate_error: str | None = None

    @property
    def differing(self) -> list[str]:
        return self.comparison.diverged()

    @property
    def index_changed(self) -> bool:
        """Decided from colbert-ai's index files themselves (their data), not from a list of artifacts."""
        return bool(self.whole.index_data)

    def to_json(self) -> dict:
        return {"a": self.a, "b": self.b, "index_changed": self.index_changed, "differing": self.differing,
                "index_files_differing": self.whole.index,
                "first_diverged": self.comparison.first_diverged(),
                "order_only": [r.name for r in self.comparison.results if r.status == "order_only"],
                "root_cause": (self.locate or {}).get("root_cause"), "verdict": (self.locate or {}).get("verdict"),
                "locate_error": self.locate_error}


@dataclass
class Study:
    cfg: object
    store: Store
    envs: list[str]
    progress: object = print
    specs: dict[str, EnvSpec] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)  # env -> why it could not be captured

    def __post_init__(self):
        for name in self.envs:
            spec = load_spec(name)
            if spec.name in self.specs:
                raise UserError(f"environment {spec.name!r} is listed twice in envs")
            self.specs[spec.name] = spec

    @property
    def names(self) -> list[str]:
        return list(self.specs)

    @property
    def cache(self) -> Path:
        return Path(self.cfg.env_cache or Path(self.cfg.store.root) / "envs")

    @property
    def logs(self) -> Path:
        return Path(self.cfg.store.root) / "envs" / "logs"

    def captured(self, name: str) -> bool:
        return self.store.has_run(name) and self.store.load(name).complete

    def capture(self, name: str) -> bool:
        """Capture run `name` in its environment unless it is complete already; False (and the reason kept)
        when the environment cannot be built or the capture fails: the other runs go on."""
        if self.captured(name):
            self.progress(f"run {name!r} is in the store already")
            return True
        spec = self.specs[name]
        try:
            python = ensure(spec, self.cache, self.progress)
            self.progress(f"capturing run {name!r} in environment {name!r} ({python})")
            capture_in(spec, python, str(self.store.root), config_overrides(self.cfg), self.logs / f"{name}.log")
        except UserError as exc:
            self.failures[name] = str(exc)
            self.progress(f"environment {name!r} failed: {str(exc).splitlines()[0]}")
            return False
        return True

    def pair(self, a: str, b: str, out_dir: Path, memo: dict | None = None) -> Pair:
        ra, rb = self.store.load(a), self.store.load(b)
        comparison = compare_runs(self.store, ra, rb, memo=memo, tol=Tolerance.from_config(self.cfg.get("compare"), DAG.tolerances()))
        pair = Pair(a, b, comparison, whole_run(self.store, comparison, ra, rb))
        if comparison.diverged():
            pair.locate, pair.locate_error = self._locate(a, b, out_dir / f"locate-{a}-vs-{b}")
        return pair

    def _locate(self, a: str, b: str, folder: Path) -> tuple[dict | None, str | None]:
        """`task=locate source=a target=b` in b's environment: the replays run where b was captured."""
        spec = self.specs[b]
        python = ensure(spec, self.cache, self.progress)
        self.progress(f"locating {a} vs {b} in environment {b!r}")
        args = ["task=locate", f"source={a}", f"target={b}", f"store.root={self.store.root}", f"out_dir={folder}",
                *config_overrides(self.cfg), *spec.overrides]
        done = run_in(spec, python, args, self.logs / f"locate-{a}-vs-{b}.log")
        report = folder / "report.json"
        if done.returncode or not report.exists():
            return None, f"locate failed (exit {done.returncode}); see {self.logs / f'locate-{a}-vs-{b}.log'}"
        return json.loads(report.read_text()), None


def cause_text(pair: Pair, num_chunks: int = 1) -> str:
    if not pair.differing:
        order = pair.to_json()["order_only"]
        return "identical" + (f" (order of {', '.join(order)} only)" if order else "")
    if pair.locate_error:
        return pair.locate_error
    causes = pair.locate.get("root_cause") or []
    return ", ".join(f"`{c}`" for c in causes) or "not located"


def differing_text(pair: Pair, num_chunks: int) -> str:
    names = compact(pair.differing, num_chunks)
    return ", ".join(f"`{n}`" for n in names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "") or "-"
