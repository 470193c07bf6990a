"""Capture one config in several environments, compare neighbours, locate each change in its own environment,
drill each encoder change to the module and the operation (each side in its own environment).

    study = Study(cfg, store, expand_envs(["torch", "here"]))   # an axis of conf/env/axes.yaml and a spec
    study.capture("torch-2.1.0")                 # builds the venv once, captures run `torch-2.1.0`
    pair = study.pair("torch-2.0.1", "torch-2.1.0", folder)    # compare; if they differ, locate (and drill)
    pair.change()                                # the typed facts colbert_swap.study.compatibility decides on

Runs are labelled by environment name in one store; a run already complete is never captured again. The
locate and drill reports of a pair are kept in `STORE/matrix/<a>-vs-<b>/` with the two runs' identity
(label, `created`, config hash) in its `key.json`, and reused while the runs are the same: a matrix that
stopped (a failed build, a crash, a killed process) continues where it stopped when run again.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

from omegaconf import OmegaConf

from colbert_swap.env import specs as env_specs
from colbert_swap.env import loaded
from colbert_swap.proof.compare.comparators import Status
from colbert_swap.proof.compare.runs import RunComparison, WholeRun, compare_runs, whole_run
from colbert_swap.proof.compare.tolerances import Tolerance
from colbert_swap.study.compatibility import Change, DrillFinding, FirstOp, PackageChange, Parity, in_encoder
from colbert_swap.config import model_fields
from colbert_swap.env.failure import EnvFailure, EnvironmentFailed, from_log
from colbert_swap.env.venvs import (EnvSpec, capture_in, ensure, frozen, load_spec, normalize,
                                       package_differences, run_in)
from colbert_swap.errors import UserError
from colbert_swap.runs.replay import compact
from colbert_swap.colbert.retrieval import RetrievalVerdict
from colbert_swap.config import override_value
from colbert_swap.runs.search import retrieval_between, search_overrides
from colbert_swap.colbert.stages import DAG
from colbert_swap.core.store import RunManifest, Store

KEY_VERSION = 1  # bump when what a pair's steps compute changes: older pair folders are then redone


def config_overrides(cfg) -> list[str]:
    """The shared config as command-line overrides, so every environment captures the very same question."""
    out = [f"seed={cfg.seed}"]
    for group in ("model", "collection", "index"):
        values = OmegaConf.to_container(cfg[group], resolve=True)
        for key, value in (model_fields(values) if group == "model" else values).items():
            out.append(f"{group}.{key}={override_value(value)}")
    if cfg.get("matrix") is not None and cfg.matrix.retrieval:  # every capture searches too: a retrieval verdict
        out += [o for o in search_overrides(cfg) if not o.startswith(("seed=", "search.capture="))]
        out.append("search.capture=true")
    return out


def expand_envs(value, table: Path | None = None) -> list[str]:
    """`envs=` as given: spec names, axis names of conf/env/axes.yaml (`torch`: its specs in order), or both.
    A spec that an axis brings in twice (`[torch,transformers]` both hold torch-2.15.0) is listed once.

    >>> expand_envs("torch")[:2], expand_envs(["here", "faiss"])[:3]
    (['torch-1.13.1', 'torch-2.0.0'], ['here', 'torch-2.15.0', 'faiss-1.8.0'])
    """
    items = [value] if isinstance(value, str) else [str(v) for v in value or []]
    axes, out = env_specs.axes(table), []
    for item in items:
        if item in axes:
            out += [n for n in env_specs.axis(item, table) if n not in out]
        else:
            out.append(item)
    return out


def env_steps(value, table: Path | None = None) -> list[tuple[str, str]]:
    """The adjacent pairs of `envs=`: an axis with a `from` spec steps from it (`faiss` from torch-2.15.0, even
    after the transformers axis), any other item from the item before it; so each pair is the one change the
    axes table describes. A `from` spec no earlier item brought in steps from the item before (`[here,faiss]`:
    here -> torch-2.15.0).

    >>> env_steps(["torch-2.14.1", "torch-2.15.0"]), env_steps(["transformers", "faiss"])[-8][0]
    ([('torch-2.14.1', 'torch-2.15.0')], 'torch-2.15.0')
    """
    items = [value] if isinstance(value, str) else [str(v) for v in value or []]
    axes, steps, last = env_specs.axes(table), [], None
    for item in items:
        chain = env_specs.axis(item, table) if item in axes else [spec_name(item)]
        start = env_specs.axis_start(item, table) if item in axes else None
        if not start or all(start not in pair for pair in steps) and start != last:
            chain = [last, *chain]
        steps += [(a, b) for a, b in zip(chain, chain[1:]) if a is not None and a != b and (a, b) not in steps]
        last = chain[-1]
    return steps


def spec_name(item: str) -> str:
    """The name a spec given by name or by path captures its run under (a path's spec names itself, or by the
    file's stem): the same label either way."""
    return load_spec(item).name if item.endswith((".yaml", ".yml")) else item


def adjacent(steps: list[tuple[str, str]], done: list[str]) -> list[tuple[str, str]]:
    """`steps` among the environments that were captured: a step from one that failed starts from the one
    that one steps from (and so on), as a chain over a failure pairs its neighbours."""
    before = dict((b, a) for a, b in steps)
    out = []
    for a, b in steps:
        while a is not None and a not in done:
            a = before.get(a)
        if b in done and a is not None and (a, b) not in out:
            out.append((a, b))
    return out


@dataclass(frozen=True)
class Step:
    """One task a pair runs in an environment (locate, or a drill step), with its report folder and log."""

    name: str  # locate | drill-source | drill | ops-source | ops
    command: str  # e.g. "task=drill source=a target=b"
    env: str
    folder: Path  # its out_dir: STORE/matrix/<a>-vs-<b>/<name>
    log: Path
    returncode: int = 0
    reused: bool = False  # its report was kept from an earlier matrix over the same runs

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and (self.folder / "report.json").exists()

    def report(self) -> dict:
        return json.loads((self.folder / "report.json").read_text())

    def error(self) -> str:
        what = "locate" if self.name == "locate" else f"`{self.command}` in {self.env}"
        return f"{what} failed (exit {self.returncode}); see {self.log}"

    def to_json(self) -> dict:
        return {"name": self.name, "command": self.command, "env": self.env, "report": f"{self.name}/report.md",
                "log": str(self.log), "returncode": self.returncode, "ok": self.ok, "reused": self.reused}


@dataclass
class Pair:
    a: str
    b: str
    comparison: RunComparison
    whole: WholeRun
    locate: dict | None = None  # the locate report.json, when the pair differs
    locate_error: str | None = None
    drill: DrillFinding | None = None  # when the root cause is in the encoder
    packages: tuple[PackageChange, ...] | None = None  # None: a freeze is missing
    intended: tuple[str, ...] = ()  # what b's spec means to change (`changes` of a generated step)
    steps: list[Step] = field(default_factory=list)
    folder: str | None = None  # its reports, relative to the matrix report: "<a>-vs-<b>"
    retrieval: RetrievalVerdict | None = None  # b's rankings against a's (None: not both searched)

    @property
    def differing(self) -> list[str]:
        return self.comparison.diverged()

    @property
    def index_changed(self) -> bool:
        """Decided from colbert-ai's index files themselves (their data), not from a list of artifacts."""
        return bool(self.whole.index_data)

    def change(self) -> Change:
        causes = (self.locate or {}).get("root_cause")
        noise = tuple(dict.fromkeys(n["artifact"] for n in (self.locate or {}).get("noise") or ()))
        return Change(self.a, self.b, bool(self.differing), self.index_changed, self.whole.index is not None,
                      tuple(causes) if causes is not None else None, self.locate_error, self.drill, self.packages,
                      self.intended, self.retrieval.short() if self.retrieval else None, noise)

    def to_json(self) -> dict:
        return {"a": self.a, "b": self.b, "index_changed": self.index_changed, "differing": self.differing,
                "index_files_differing": self.whole.index,
                "first_diverged": self.comparison.first_diverged(),
                "order_only": [r.name for r in self.comparison.results if r.status == Status.ORDER_ONLY],
                "root_cause": (self.locate or {}).get("root_cause"), "verdict": (self.locate or {}).get("verdict"),
                "locate_error": self.locate_error,
                "first_module": self.drill.module if self.drill else None,
                "first_op": asdict(self.drill.op) if self.drill and self.drill.op else None,
                "drill_error": self.drill.error if self.drill else None,
                "packages_differing": None if self.packages is None else [asdict(p) for p in self.packages],
                "intended": list(self.intended), "folder": self.folder, "steps": [s.to_json() for s in self.steps],
                "retrieval": self.retrieval.to_json() if self.retrieval else None}


def pair_key(cfg, a: RunManifest, b: RunManifest) -> dict:
    """What a pair's locate and drill reports depend on: the two runs as captured (label, when, config hash,
    environment id), and the drill's and comparison's knobs."""
    return {"version": KEY_VERSION, "runs": [[m.label, m.created, m.config_hash, m.env] for m in (a, b)],
            "probes": cfg.drill.probes, "bsizes": list(cfg.drill.bsizes) if cfg.drill.bsizes else None,
            "compare": OmegaConf.to_container(cfg.compare, resolve=True) if cfg.get("compare") else None}


def pair_folder(store: Store, key: dict) -> Path:
    """`STORE/matrix/<a>-vs-<b>/`, emptied first when it was made for other runs (another `key.json`)."""
    (a, *_), (b, *_) = key["runs"]
    folder = store.root.resolve() / "matrix" / f"{a}-vs-{b}"
    path = folder / "key.json"
    if folder.exists() and (not path.exists() or json.loads(path.read_text()) != key):
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(key, indent=1) + "\n")
    return folder


@dataclass
class Study:
    cfg: object
    store: Store
    envs: list[str]
    progress: object = print
    specs: dict[str, EnvSpec] = field(default_factory=dict)
    failures: dict[str, EnvFailure] = field(default_factory=dict)  # env -> why it could not be captured
    runner: Optional[Callable] = None  # runs `python -m colbert_swap ARGS` in an environment; default run_in
    freezes: dict[str, dict[str, str]] = field(default_factory=dict)
    parity: dict[str, Parity] = field(default_factory=dict)  # env -> task=parity there (matrix.parity=true)

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

    def reference(self) -> str:
        """`reference=` (a spec name or file, one of envs), else the first environment."""
        ref = self.cfg.matrix.reference
        if not ref:
            return self.names[0]
        name = spec_name(str(ref))
        if name not in self.specs:
            raise UserError(f"reference={ref!r} is not one of envs: {', '.join(self.names)}")
        return name

    def captured(self, name: str) -> bool:
        return self.store.has_run(name) and self.store.load(name).complete

    def capture(self, name: str) -> bool:
        """Capture run `name` in its environment unless it is complete already; False (and the reason kept)
        when the environment cannot be built or the capture fails: the other runs go on."""
        if self.captured(name):
            self.progress(f"run {name!r} is in the store already")
            return True
        spec, step = self.specs[name], "building the environment"
        try:
            python = ensure(spec, self.cache, self.progress)
            step = "capture"
            self.progress(f"capturing run {name!r} in environment {name!r} ({python})")
            capture_in(spec, python, str(self.store.root), config_overrides(self.cfg), self.logs / f"{name}.log")
        except EnvironmentFailed as exc:
            self.failures[name] = exc.failure
        except UserError as exc:  # refused before any command ran (a spec that cannot be read, no uv, ...)
            self.failures[name] = EnvFailure(name, "install" if step != "capture" else "refused", str(exc), step)
        if name in self.failures:
            failure = self.failures[name]
            self.progress(f"environment {name!r} failed: {failure.line()}\n  {failure.advice()}" +
                          "".join(f"\n  | {line}" for line in failure.tail.splitlines()))
            return False
        return True

    def check_parity(self, name: str) -> Parity:
        """`task=parity run=NAME` in NAME's environment (its torch, its colbert-ai): our capture's index files
        against colbert-ai's own Indexer's there. Its report lands in `STORE/matrix/parity/NAME/`; a task that
        ends without one is `failed`, with the reason read from its log (`env/failure.py`)."""
        spec, out = self.specs[name], self.store.root.resolve() / "matrix" / "parity" / name
        log = self.logs / f"{name}.parity.log"
        shutil.rmtree(out, ignore_errors=True)  # an earlier matrix's report: never read as this one's
        try:
            python = ensure(spec, self.cache, self.progress)
            self.progress(f"`task=parity run={name}` in environment {name!r}: colbert-ai's Indexer there")
            done = (self.runner or run_in)(spec, python, ["task=parity", f"run={name}",
                                                          f"store.root={self.store.root.resolve()}", f"out_dir={out}"],
                                           log)
            report = out / "report.json"
            if done.returncode in (0, 1, 2) and report.exists():
                found = Parity.from_report(json.loads(report.read_text()))
            else:
                why = from_log(name, log, "parity", done.returncode, getattr(done, "output", "") or "")
                found = Parity("failed", f"exit {done.returncode}: {why.reason}; see {log}")
        except (EnvironmentFailed, UserError, OSError) as exc:
            found = Parity("failed", f"{exc}; see {log}")
        self.parity[name] = found
        self.progress(f"{name}: {found.text()}")
        return found

    def pair(self, a: str, b: str, out_dir: Path, memo: dict | None = None) -> Pair:
        """Compare a and b; when they differ, locate in b's environment and drill an encoder change. The
        pair's reports land in `out_dir/<a>-vs-<b>/` (copied from the store, where they are kept)."""
        ra, rb = self.store.load(a), self.store.load(b)
        tol = Tolerance.from_config(self.cfg.get("compare"), DAG.tolerances())
        comparison = compare_runs(self.store, ra, rb, memo=memo, tol=tol, progress=self.progress)
        pair = Pair(a, b, comparison, whole_run(self.store, comparison, ra, rb), packages=self.packages(a, b),
                    intended=tuple(self.specs[b].changes), retrieval=retrieval_between(self.cfg, self.store, ra, rb))
        if comparison.diverged():
            folder = pair_folder(self.store, pair_key(self.cfg, ra, rb))
            self._locate_and_drill(pair, folder)
            pair.folder = folder.name
            shutil.copytree(folder, Path(out_dir) / folder.name, dirs_exist_ok=True)
        return pair

    def _locate_and_drill(self, pair: Pair, folder: Path) -> None:
        """`task=locate source=a target=b` in b's environment (the replays run where b was captured), then,
        when the root cause is in the encoder, the module and the op drill."""
        a, b = pair.a, pair.b
        args = ["task=locate", f"source={a}", f"target={b}", *config_overrides(self.cfg), *self.specs[b].overrides]
        pair.steps.append(self._step("locate", b, args, folder))
        if not pair.steps[-1].ok:
            pair.locate_error = pair.steps[-1].error()
            return
        pair.locate = pair.steps[-1].report()
        if any(in_encoder(n) for n in pair.locate.get("root_cause") or []):
            pair.drill = self._drill(a, b, folder, pair.steps)

    def _drill(self, a: str, b: str, folder: Path, steps: list[Step]) -> DrillFinding:
        """`task=drill run=a` in a's environment, `task=drill source=a target=b` in b's; then the same with
        `module=` the first module whose output differs (the op drill). A step that fails ends it, named."""
        error = self._drill_both(a, b, "drill", [], folder, steps)
        if error:
            return DrillFinding(error=error)
        module = steps[-1].report().get("first_module")
        if not module:
            return DrillFinding()
        error = self._drill_both(a, b, "ops", [f"module={module}"], folder, steps)
        if error:
            return DrillFinding(module, error=error)
        return DrillFinding(module, FirstOp.from_report(steps[-1].report().get("first_op") or {}))

    def _drill_both(self, a: str, b: str, prefix: str, extra: list[str], folder: Path, steps: list[Step]) -> str | None:
        """a's drill capture in a's environment, then b's and the comparison in b's; the error of a failure."""
        knobs = [f"probes={self.cfg.drill.probes}"] + ([f"bsizes=[{','.join(map(str, self.cfg.drill.bsizes))}]"]
                                                        if self.cfg.drill.bsizes else [])
        for name, env, args in ((f"{prefix}-source", a, [f"run={a}"]), (prefix, b, [f"source={a}", f"target={b}"])):
            steps.append(self._step(name, env, ["task=drill", *args, *extra, *knobs], folder))
            if not steps[-1].ok:
                return steps[-1].error()
        return None

    def _step(self, name: str, env: str, args: list[str], folder: Path) -> Step:
        """Run one task of a pair in `env`, unless its report is in the pair's folder already."""
        out, log = folder / name, folder / f"{name}.log"
        command = " ".join(a for a in args if a.startswith(("task=", "run=", "source=", "target=", "module=")))
        if (out / "report.json").exists():
            self.progress(f"{folder.name}: `{command}` reused ({out})")
            return Step(name, command, env, out, log, 0, True)
        shutil.rmtree(out, ignore_errors=True)  # what a run that stopped half-way left
        spec = self.specs[env]
        python = ensure(spec, self.cache, self.progress)
        self.progress(f"{folder.name}: `{command}` in environment {env!r}")
        done = (self.runner or run_in)(spec, python, [*args, f"store.root={self.store.root.resolve()}",
                                                      f"out_dir={out}"], log)
        return Step(name, command, env, out, log, done.returncode)

    def packages(self, a: str, b: str) -> Optional[tuple[PackageChange, ...]]:
        """The packages whose versions differ between the two environments' freezes (None: one is missing),
        the ones b's spec means to change first."""
        try:
            for name in (a, b):
                if name not in self.freezes:
                    self.freezes[name] = frozen(self.specs[name], self.cache)
        except UserError as exc:
            self.progress(f"packages of {a} vs {b} unknown: {exc}")
            return None
        wanted = {normalize(n) for n in self.specs[b].changes}  # what b's spec means to change, listed first
        ra, rb = self.store.load(a), self.store.load(b)
        gpu = loaded.gpu_used(ra) or loaded.gpu_used(rb)
        moved = [PackageChange(*d, use=loaded.classify(d[0], ra.loaded, rb.loaded, gpu))
                 for d in package_differences(self.freezes[a], self.freezes[b])]
        return tuple(sorted(moved, key=lambda p: p.name not in wanted))


def cause_text(pair: Pair) -> str:
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

