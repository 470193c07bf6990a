"""task=determinism run=X: run a run's stages again on its own recorded inputs: do they repeat themselves?

    python -m colbert_swap task=determinism run=2.13.0
    python -m colbert_swap task=determinism run=2.13.0 stages=[prenorm_centroids] determinism.threads=1

Each stage (default: every stage of the run, every chunk; `stages=[a,b]` for some) runs on the run's own
inputs, with the run's config, perturb knobs and the generator state each node started from, and nothing is
stored:
- in this process, compared with the outputs the run recorded where it was computed in this environment (the
  capture's process vs this one); a second time in this process where they differ, where the run was
  computed elsewhere, or for every stage with `determinism.twice=true`: other bits the second time ->
  `differs run to run`, else other bits than the recorded ones -> `differs between processes`;
- in a fresh process (`python -m colbert_swap ...`, `determinism.fresh=true`, the default), with N threads
  where `determinism.threads=N` (the thread variables of a joblib worker set to N; by default 1 where the run
  was computed with more threads, 0: this process's count): the same bits as this process -> the stage keeps
  them across processes and thread counts; other bits -> the stages that differ once more in a fresh process
  with this process's thread count, to tell `differs between processes` from `differs with the thread count`.
  A run recorded in an environment that differs from this one only in its thread counts is compared with this
  process's bits too: other bits -> `differs with the thread count`.
The fresh process runs beside this one (its bits do not depend on it).
Every stage gets one status, the first that holds of these, else `reproducible`; a stage that cannot be run
again is `not checked: why` (an injected artifact; query_texts and search_settings, made from this
invocation's search.* settings). A run that is not in the store is captured here first, with this
invocation's config: `task=determinism store.root=$(mktemp -d)` checks the default capture.

report.json: `run`, `reproducible` (every checked stage), `stages` (per stage: `status`, `artifacts`,
`differing`, `run_to_run`, `recorded`, `fresh`, `threads` (true: the same bits, null: not compared),
`thread_count`, `max_abs`, `seconds`, `note`), `not_reproducible` (stage names), `costs` (seconds of each
part). Exit status 0 when every checked stage is reproducible, 1 otherwise. A stage that is not reproducible
here makes any comparison of two runs made here differ at that stage whatever the cause: `task=locate` checks
its root-cause stages the same way and names those noise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import OmegaConf

from colbert_swap.study.determinism import (PROCESSES, THREADS, Rerunner, StageCheck, classify, computed_where, hashes,
                                      here_for, max_abs, unrunnable, value_hash)
from colbert_swap.errors import UserError
from colbert_swap.env.provenance import default_run_label, env_id
from colbert_swap.proof.report import proof
from colbert_swap.proof.report.report import Report, ReportData
from colbert_swap.proof.report.tables import table
from colbert_swap.colbert.stages import DAG
from colbert_swap.core.store import RunManifest, Store
from colbert_swap.tasks.common import environments_section, finish, progress_printer
from colbert_swap.env.threads import THREAD_VARS  # every variable that sets a thread count, as a joblib worker's
from colbert_swap.colbert.plan import plan

SLOW = 5.0  # seconds: a node that took longer in the capture gets a progress line of its own


@dataclass(frozen=True)
class Determinism:
    """task=determinism's result: the run, one check per stage, and what each part cost (seconds)."""

    run: RunManifest
    checks: tuple[StageCheck, ...]
    costs: dict = field(default_factory=dict)
    fresh: bool = False  # a fresh process ran
    thread_count: int | None = None  # a fresh process with this many threads ran

    @property
    def reproducible(self) -> bool:
        return all(c.reproducible for c in self.checks if c.checked)

    @property
    def failing(self) -> list[StageCheck]:
        return [c for c in self.checks if c.checked and not c.reproducible]

    @property
    def verdict(self) -> str:
        return verdict(self)


def stage_names(value) -> list[str] | None:
    """determinism.stages as a list of names (None: every stage)."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        return [v.strip() for v in value.strip("[]").split(",") if v.strip()]
    return [str(v) for v in value]


def select(cfg, store: Store, run: RunManifest) -> tuple[dict[str, list], dict[str, str]]:
    """The nodes to check, per stage in DAG order, and the stages that cannot be checked (stage -> why)."""
    from colbert_swap.tasks.isolate import find_stage

    wanted = stage_names(cfg.determinism.stages)
    if wanted is not None:
        wanted = [find_stage(name).name for name in wanted]
    nodes = plan(store, run).nodes()
    chosen: dict[str, list] = {}
    skipped: dict[str, str] = {}
    for node in nodes:
        stage = node.stage.name
        if wanted is not None and stage not in wanted:
            continue
        if not node.input_names() and set(node.stage.resources) & {"queries", "search"}:
            skipped[stage] = "made from this invocation's search.* settings, not from the run's artifacts"
            continue
        why = unrunnable(run, node)
        if why:
            skipped[stage] = why
            continue
        chosen.setdefault(stage, []).append(node)
    for name in wanted or []:
        if name not in chosen and name not in skipped:
            skipped[name] = f"run {run.label!r} has no node of this stage"
    for stage in skipped:
        chosen.pop(stage, None)
    return chosen, skipped


def ensure_run(cfg, store: Store, progress) -> RunManifest:
    """The run to check, captured here first (with this invocation's config) when it is not in the store."""
    from colbert_swap.tasks.capture import capture

    label = str(cfg.run or default_run_label())
    if not store.has_run(label) or not store.load(label).complete:
        progress(f"run {label!r} is not in the store: capturing it in this environment first")
        capture(OmegaConf.merge(cfg, {"run": label}), progress=progress)
    return store.load(label)


def in_process(cfg, store: Store, run: RunManifest, chosen: dict[str, list], progress,
               twice: bool = False) -> dict[str, dict]:
    """Every chosen node again in this process, and a second time where `twice`, where the first run did not
    give the recorded bits, or where they were recorded in another environment: per stage, the hashes of the
    first and second runs (None: not run twice), the seconds of the first and the largest differences."""
    out: dict[str, dict] = {}
    with Rerunner(cfg, store, run, progress) as rerun:
        for stage, nodes in chosen.items():
            first, second, diffs, seconds, again_all = {}, {}, {}, 0.0, True
            elsewhere = computed_where(run, nodes[0])[0] == "elsewhere"
            if sum(run.artifacts[n.outputs[0]].seconds for n in nodes) > SLOW:
                progress(f"stage {stage} ({proof.plural(len(nodes), 'node')})")
            for node in nodes:
                values, took = rerun.compute(node)
                seconds += took
                one = hashes(node, values)
                first.update(one)
                recorded = {o: run.artifacts[o].ref.hash for o in node.outputs}
                if not (twice or elsewhere or one != recorded):
                    again_all = False
                    second.update(one)  # stands for the second run: two runs (the run's and this) agree
                    continue
                again, _ = rerun.compute(node)
                two = hashes(node, again)
                second.update(two)
                for name, x, y in zip(node.outputs, values, again):
                    if one[name] != two[name]:
                        diffs[name] = max_abs(x, y)
                    elif one[name] != recorded[name]:
                        diffs[name] = max_abs(x, store.get(run, name))
                del values, again
            out[stage] = {"first": first, "second": second, "twice": again_all, "diffs": diffs, "seconds": seconds}
    return out


def child_command(cfg, run: RunManifest, stages: list[str], path: Path, folder: Path) -> list[str]:
    return [sys.executable, "-m", "colbert_swap", "task=determinism", f"run={run.label}",
            f"store.root={Path(cfg.store.root).resolve()}", f"determinism.stages=[{','.join(stages)}]",
            f"determinism.child={path}", "determinism.fresh=false", "determinism.threads=0",
            f"hydra.run.dir={folder}", "hydra.output_subdir=null"]


class FreshProcess:
    """The chosen stages once in a fresh `python -m colbert_swap` process (with `threads` threads: the thread
    variables set for it), started at once and read back with `result()`: node -> output -> hash, its seconds
    computing, its thread count, and its wall time."""

    def __init__(self, cfg, run: RunManifest, stages: list[str], threads: int | None, progress):
        self.what = f"a fresh process with {proof.plural(threads, 'thread')}" if threads else "a fresh process"
        self.progress = progress
        env = dict(os.environ)
        if threads:
            env.update({var: str(threads) for var in THREAD_VARS})
        self._tmp = tempfile.TemporaryDirectory(prefix="colbert_swap-determinism-child-")
        self.path, self.log = Path(self._tmp.name) / "hashes.json", Path(self._tmp.name) / "child.log"
        progress(f"running {proof.plural(len(stages), 'stage')} again in {self.what} (beside this one)")
        self.start = time.perf_counter()
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(child_command(cfg, run, stages, self.path, Path(self._tmp.name) / "hydra"),
                                            env=env, stdout=out, stderr=subprocess.STDOUT)

    def result(self) -> dict:
        try:
            code = self.process.wait()
            wall = time.perf_counter() - self.start
            if code or not self.path.exists():
                tail = "".join(self.log.read_text(errors="replace").splitlines(keepends=True)[-15:])
                raise UserError(f"the determinism check's fresh process failed (exit {code}):\n{tail}")
            result = json.loads(self.path.read_text())
        finally:
            self.close()
        result["wall"] = wall
        self.progress(f"{self.what}: {wall:.1f} s ({result['seconds']:.1f} s computing)")
        return result

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._tmp.cleanup()


def child(cfg, store: Store) -> int:
    """determinism.child=PATH: run the chosen stages once here and write their outputs' hashes to PATH."""
    run = store.load(str(cfg.run))
    chosen, _ = select(cfg, store, run)
    start = time.perf_counter()
    nodes: dict[str, dict[str, str]] = {}
    diffs: dict[str, float | None] = {}
    with Rerunner(cfg, store, run) as rerun:
        for stage_nodes in chosen.values():
            for node in stage_nodes:
                values, _ = rerun.compute(node)
                nodes[node.name] = {name: value_hash(v) for name, v in zip(node.outputs, values)}
                for name, v in zip(node.outputs, values):
                    if nodes[node.name][name] != run.artifacts[name].ref.hash:
                        diffs[name] = max_abs(v, store.get(run, name))
    Path(cfg.determinism.child).write_text(json.dumps({
        "env": env_id(here_for(run)), "threads": torch.get_num_threads(), "nodes": nodes, "diffs": diffs,
        "seconds": time.perf_counter() - start}))
    return 0


def thread_count(cfg, run: RunManifest) -> int | None:
    """determinism.threads: N; null: 1 where the run was computed with more threads, else none; 0: none (and
    for a run that sets perturb.threads: its stages compute with that count in any process)."""
    n = cfg.determinism.threads
    if (run.config.get("perturb") or {}).get("threads") is not None:
        return None
    if n is None:
        return 1 if int(run.provenance.get("torch_threads") or 1) > 1 else None
    if int(n) == 0:
        return None
    if int(n) < 0:
        raise UserError(f"determinism.threads={n}: expected a number of threads (1 or more), or 0 for none")
    return int(n)


def determinism(cfg, store: Store, progress=None) -> Determinism:
    progress = progress or progress_printer()
    run = ensure_run(cfg, store, progress)
    chosen, skipped = select(cfg, store, run)
    here = here_for(run)
    threads, fresh = thread_count(cfg, run), bool(cfg.determinism.fresh)
    costs: dict[str, float] = {}
    children: dict[str, FreshProcess] = {}
    results: dict[str, dict] = {}

    def hashes_of(result: dict | None, stage: str) -> dict | None:
        got = {o: h for n in chosen[stage] for o, h in ((result or {}).get("nodes") or {}).get(n.name, {}).items()}
        return got or None

    try:  # one fresh process, with the other thread count where there is one, beside this process
        if chosen and (fresh or threads):
            children["threads" if threads else "fresh"] = FreshProcess(cfg, run, list(chosen), threads, progress)
        progress(f"running {proof.plural(len(chosen), 'stage')} of run {run.label!r} again on its own inputs in this "
                 "process")
        start = time.perf_counter()
        mine = in_process(cfg, store, run, chosen, progress, bool(cfg.determinism.twice))
        costs["in_process_s"] = time.perf_counter() - start
        results = {k: c.result() for k, c in children.items()}
        if threads and fresh:  # other bits in the process with other threads: the thread count, or any process?
            differing = [s for s in chosen if hashes_of(results["threads"], s) != mine[s]["first"]]
            if differing:
                children["fresh"] = FreshProcess(cfg, run, differing, None, progress)
                results["fresh"] = children["fresh"].result()
    finally:
        for child_process in children.values():
            child_process.close()
    for key, result in results.items():
        costs[f"{key}_process_s"], costs[f"{key}_process_compute_s"] = result["wall"], result["seconds"]
    other = results.get("threads")
    checks: dict[str, StageCheck] = {}
    for stage, nodes in chosen.items():
        artifacts = [o for n in nodes for o in n.outputs]
        where, how = computed_where(run, nodes[0], here)
        recorded = {a: run.artifacts[a].ref.hash for a in artifacts} if where != "elsewhere" else None
        note = {"here": "", "threads": f"recorded with other thread counts ({how})",
                "elsewhere": f"recorded in another environment ({how}): not compared"}[where]
        if not mine[stage]["twice"]:
            note = "; ".join(filter(None, [note, "run once here: it gave the recorded bits"]))
        plain = hashes_of(results.get("fresh"), stage)  # a fresh process with this process's thread count
        fresh_hashes = plain if plain is not None else hashes_of(other, stage) if fresh else None
        diffs = dict(mine[stage]["diffs"])
        for result in results.values():
            for name, d in (result.get("diffs") or {}).items():
                diffs.setdefault(name, d)
        checks[stage] = classify(stage, artifacts, first=mine[stage]["first"],
                                 second=mine[stage]["second"] if mine[stage]["twice"] else None,
                                 recorded=recorded, fresh=fresh_hashes, threads=hashes_of(other, stage),
                                 thread_count=other["threads"] if other else None, diffs=diffs,
                                 seconds=mine[stage]["seconds"], note=note,
                                 recorded_status=THREADS if where == "threads" else PROCESSES)
    for stage, why in skipped.items():
        checks[stage] = StageCheck(stage, f"not checked: {why}")
    order = [s.name for s in DAG.stages]
    ordered = tuple(sorted(checks.values(), key=lambda c: order.index(c.stage) if c.stage in order else len(order)))
    return Determinism(run, ordered, costs, fresh and bool(results), other["threads"] if other else None)


def verdict(result: Determinism) -> str:
    run = result.run.label
    checked = [c for c in result.checks if c.checked]
    parts = ["in this process" + (" (twice)" if all(c.run_to_run is not None for c in checked) else "")]
    if any(c.recorded is not None for c in checked):
        parts.append(f"as {run}'s own process recorded them")
    if result.fresh:
        parts.append("in a fresh process" + (f" with {proof.plural(result.thread_count, 'thread')}"
                                             if result.thread_count else ""))
    elif result.thread_count:
        parts.append(f"in a process with {proof.plural(result.thread_count, 'thread')}")
    how = ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1]
    skipped = [c.stage for c in result.checks if not c.checked]
    tail = f" Not checked: {proof.describe([f'{s}' for s in skipped]).replace('`', '')}." if skipped else ""
    if not checked:
        return f"No stage of run {run} could be run again here.{tail}"
    if result.reproducible:
        return (f"Every stage of run {run} checked ({len(checked)}) reproduces its outputs bit for bit when run again "
                f"on the run's own inputs: {how}.{tail}")
    worst = "; ".join(f"`{c.stage}` {c.status}" + (f" (up to {proof.num(c.max_abs)})" if c.max_abs else "")
                      for c in result.failing)
    return (f"Not reproducible here: {worst}. On equal inputs such a stage gives other bits from one run to the "
            f"next: a difference there between two runs made in this environment is its noise, not evidence of a "
            f"cause. The other {len(checked) - len(result.failing)} stages checked reproduce their outputs "
            f"({how}).{tail}")


def _mark(value: bool | None) -> str:
    return "" if value is None else "same" if value else "**differs**"


@dataclass(frozen=True)
class DeterminismData(ReportData):
    """report.json of task=determinism run=X: each stage run again on the run's own inputs."""

    run: str
    reproducible: bool
    """True when every checked stage reproduced its outputs bit for bit."""
    not_reproducible: list[str]
    """The checked stages that did not, in pipeline order."""
    stages: dict[str, dict]
    """Per stage, in pipeline order: its check (status, artifacts, differing, run_to_run, recorded, fresh, ...)."""
    costs: dict[str, float]
    """Seconds of each part (`in_process_s`, `fresh_process_s`, ...)."""
    thread_count: int | None
    """The thread count of the fresh process run with other threads than this one; null when none ran."""
    fresh: bool
    """True when a fresh process ran the stages too."""
    here: str
    """The environment id of this process as the run's config computes in it (its perturb.threads)."""


def run(cfg) -> int:
    store = Store(cfg.store.root)
    if cfg.determinism.child:
        return child(cfg, store)
    result = determinism(cfg, store)
    rows = [[f"`{c.stage}`", c.status if c.reproducible or not c.checked else f"**{c.status}**",
             _mark(c.run_to_run), _mark(c.recorded), _mark(c.fresh), _mark(c.threads),
             proof.num(c.max_abs), f"{c.seconds:.2f}" if c.checked else "", c.note] for c in result.checks]
    threads = f"{result.thread_count} thread{'s' if result.thread_count != 1 else ''}" if result.thread_count else \
        "other threads"
    stages = table(["stage", "status", "run to run", f"vs {result.run.label}'s process", "fresh process",
                    f"process with {threads}", "max abs", "seconds (once)", "note"], rows)
    costs = table(["part", "seconds"], [[k.removesuffix("_s").replace("_", " "), f"{v:.1f}"]
                                        for k, v in result.costs.items()])
    report = Report("determinism", f"determinism: {result.run.label}", result.verdict, runs=[result.run], sections=[
        environments_section(result.run), "## Stages run again on the run's own inputs\n\n" + stages
        + "\n\n`same`: the same bits as this process's first run (for the run's own process: as the outputs it "
          "recorded); blank: not compared.", "## Cost\n\n" + costs],
        data=DeterminismData(run=result.run.label, reproducible=result.reproducible,
                             not_reproducible=[c.stage for c in result.failing],
                             stages={c.stage: c.to_json() for c in result.checks}, costs=result.costs,
                             thread_count=result.thread_count, fresh=result.fresh,
                             here=env_id(here_for(result.run))))
    status = finish(proof.out_dir(cfg, "determinism"), report)
    return status or (0 if result.reproducible else 1)
