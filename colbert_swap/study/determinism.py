"""Does a stage repeat itself? Run it again on a run's own recorded inputs, with the run's config, perturb knobs
and recorded generator states, and compare the bits with what the run recorded.

    rerun = Rerunner(cfg, store, run)            # nothing is stored: outputs come back as values
    values, seconds = rerun.compute(node)        # one node, as the engine ran it
    checks = locate_checks(cfg, store, source, target, groups, num_chunks)   # what `task=locate` asks

A root-cause tool that cannot tell noise from a cause misleads: k-means that gives other centroids in another
process (or with another thread count) on the same sample is not evidence that something upstream caused the
difference. `task=determinism` (colbert_swap/tasks/determinism.py) checks every stage of a run; `task=locate`
checks only its root-cause stages, once, and names those that do not reproduce as noise.

Statuses, in the order they are decided (the first that holds):
- `differs run to run`: two runs in this process on equal inputs give other bits;
- `differs between processes`: this process gives other bits than the run's own process recorded (in this
  environment), or than a fresh process;
- `differs with the thread count`: a process with another thread count gives other bits;
- `reproducible`: every comparison that could be made gave the same bits;
- `not checked: why`: the run's outputs cannot be run again here (injected, or computed elsewhere).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from colbert_swap.env import provenance
from colbert_swap.env.provenance import env_id
from colbert_swap.core.store import RunManifest, Store

REPRODUCIBLE = "reproducible"
RUN_TO_RUN = "differs run to run"
PROCESSES = "differs between processes"
THREADS = "differs with the thread count"
NOT_CHECKED = "not checked"
STATUSES = (REPRODUCIBLE, RUN_TO_RUN, PROCESSES, THREADS)


def value_hash(value: Any) -> str:
    """The content hash the store gives `value` (store/blobs.py), without storing it."""
    from colbert_swap.core.store.blobs import json_hash, tensor_hash

    return tensor_hash(value) if isinstance(value, torch.Tensor) else json_hash(value)


def hashes(node, values) -> dict[str, str]:
    return {name: value_hash(v) for name, v in zip(node.outputs, values)}


def max_abs(a: Any, b: Any) -> float | None:
    """The largest difference of two values of one artifact (None: not tensors of one shape)."""
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or a.shape != b.shape or not a.numel():
        return None
    if a.dtype == torch.bool:
        return float((a.cpu() != b.cpu()).any())
    return float((a.detach().cpu().double() - b.detach().cpu().double()).abs().max())


class Rerunner:
    """Runs nodes of `run` again, here, on the run's recorded inputs, with its config and perturb knobs and the
    generator state each node started from, as the engine runs them; returns their outputs, stores nothing."""

    def __init__(self, cfg, store: Store, run: RunManifest, progress: Callable[[str], None] = lambda m: None):
        from colbert_swap.core.engine import Engine
        from colbert_swap.runs.execute import run_config
        from colbert_swap.colbert.resources import Resources
        from colbert_swap.core.store.run import RunWriter

        self.store, self.run = store, run
        self._tmp = tempfile.TemporaryDirectory(prefix="colbert_swap-determinism-")  # colbert-ai's chatter, its root
        self.resources = Resources(run_config(cfg, run), store, Path(self._tmp.name))
        self.engine = Engine(RunWriter(store, run, done=True), self.resources, progress)

    def compute(self, node) -> tuple[tuple, float]:
        if "checkpoint" in node.stage.resources:
            self.resources.checkpoint  # built once, before the clock starts
        rng = None
        if "rng" in node.stage.resources:
            known = self.run.rng.get(node.name)
            rng = self.engine.load_rng(known) if known else self.resources.initial_rng()
        start = time.perf_counter()
        values = self.engine.compute(node, rng)
        return values, time.perf_counter() - start

    def close(self) -> None:
        from colbert_swap.colbert import tokenizer_pool

        tokenizer_pool.close_pools()
        self._tmp.cleanup()

    def __enter__(self) -> "Rerunner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def unrunnable(run: RunManifest, node) -> str | None:
    """Why `node`'s outputs in `run` cannot be compared with a run of the node on the run's own inputs (None:
    they can): missing, injected from another run, or recorded from other inputs than the run holds now."""
    records = [run.artifacts.get(o) for o in node.outputs]
    if any(r is None for r in records):
        return f"run {run.label!r} has no {', '.join(o for o, r in zip(node.outputs, records) if r is None)}"
    if any(r.stage != node.name for r in records):
        return f"`{node.outputs[0]}` of run {run.label!r} was not computed by its stage ({records[0].stage})"
    inputs = {n: run.artifacts[n].ref.hash for n in node.input_names() if n in run.artifacts}
    if any(r.inputs != inputs for r in records):
        return f"`{node.outputs[0]}` of run {run.label!r} was computed from other inputs than the run holds"
    return None


def here_for(run: RunManifest) -> dict:
    """This process's environment as a run of `run`'s config computes in it (its perturb.threads)."""
    return provenance.run_environment(run.config)


def only_threads(recorded: dict, here: dict) -> bool:
    """Two environments that differ, and only in their thread counts."""
    return provenance.differs_only_in_threads(recorded, here)


def differences(recorded: dict, here: dict) -> str:
    """'thread counts (faiss/OpenMP 1 vs 2, torch 1 vs 2); OMP_NUM_THREADS=1 vs unset' (the run's vs here)."""
    text = provenance.environment_differences(recorded, here)
    text = text.split(": ", 1)[1].rstrip(" .") if ": " in text else text
    return text or provenance.describe_changes(recorded, here)


def computed_where(run: RunManifest, node, here: dict | None = None) -> tuple[str, str]:
    """Where `run` computed `node`'s outputs, seen from this process: ("here", ""), ("threads", how) when its
    environment differs from this one only in its thread counts, or ("elsewhere", how)."""
    here = here or here_for(run)
    env = run.computed_in(node.outputs[0])
    if env == env_id(here):
        return "here", ""
    recorded = run.environments.get(env) or run.provenance
    how = differences(recorded, here) or f"environment {env}"
    return ("threads" if only_threads(recorded, here) else "elsewhere"), how


@dataclass(frozen=True)
class StageCheck:
    """One stage run again on a run's own inputs: its status and what each comparison gave (True: the same bits;
    None: not compared)."""

    stage: str
    status: str  # one of STATUSES, or "not checked: why"
    artifacts: tuple[str, ...] = ()  # every output compared (every chunk)
    differing: tuple[str, ...] = ()  # the outputs behind the status
    run_to_run: bool | None = None  # two runs in this process: the same bits
    recorded: bool | None = None  # this process's run and the run's own (recorded in this environment)
    fresh: bool | None = None  # a fresh process and this one
    threads: bool | None = None  # a fresh process with `thread_count` threads and this one
    thread_count: int | None = None
    max_abs: float | None = None  # the largest difference behind the status
    seconds: float = 0.0  # this process's first run of the stage (every node)
    note: str = ""

    @property
    def reproducible(self) -> bool:
        return self.status == REPRODUCIBLE

    @property
    def checked(self) -> bool:
        return not self.status.startswith(NOT_CHECKED)

    def to_json(self) -> dict:
        return asdict(self)


def classify(stage: str, artifacts: list[str], *, first: dict[str, str], second: dict[str, str] | None,
             recorded: dict[str, str] | None, fresh: dict[str, str] | None, threads: dict[str, str] | None,
             thread_count: int | None, diffs: dict[str, float | None], seconds: float, note: str = "",
             recorded_status: str = PROCESSES) -> StageCheck:
    """A stage's status from the hashes of its outputs (artifact -> hash): this process's two runs, the run's
    recorded outputs (None: recorded elsewhere), a fresh process's and one with `thread_count` threads (None:
    not run). `recorded_status` is what a difference from the recorded bits means (PROCESSES where the run was
    computed in this environment, THREADS where its environment differs only in the thread count)."""
    def differ(other):
        return [a for a in artifacts if other is not None and other.get(a) != first.get(a)]

    checks = [(RUN_TO_RUN, differ(second)), (recorded_status, differ(recorded)), (PROCESSES, differ(fresh)),
              (THREADS, differ(threads))]
    order = [RUN_TO_RUN, PROCESSES, THREADS]
    failing = [(s, d) for s, d in checks if d]
    failing.sort(key=lambda sd: order.index(sd[0]))
    status, differing = failing[0] if failing else (REPRODUCIBLE, [])
    same = lambda other: None if other is None else not differ(other)  # noqa: E731
    worst = [diffs.get(a) for a in differing if diffs.get(a) is not None]
    return StageCheck(stage, status, tuple(artifacts), tuple(differing), same(second), same(recorded), same(fresh),
                      same(threads), thread_count, max(worst) if worst else None, seconds, note)


# ---------------------------------------------------------------------------------------------------------
# task=locate: its root-cause stages, once, in each run's environment that can be checked here


@dataclass(frozen=True)
class NoiseCheck:
    """One root-cause stage run again here on one run's own inputs (task=locate)."""

    artifact: str  # the group's name as the verdict writes it (`embs` for every chunk)
    stage: str
    environment: str  # "target" | "source": whose inputs, and whose environment is judged
    run: str
    status: str  # reproducible | differs run to run | differs between processes | differs with the thread count |
    # not checked: why
    artifacts: tuple[str, ...] = ()  # every output compared
    max_abs: float | None = None
    threads: str = ""  # where the run's environment differs from this one only in its thread counts: how

    @property
    def noise(self) -> bool:
        return self.status in (RUN_TO_RUN, PROCESSES, THREADS)

    @property
    def checked(self) -> bool:
        return not self.status.startswith(NOT_CHECKED)

    def to_json(self) -> dict:
        return asdict(self)


def locate_checks(cfg, store: Store, source: RunManifest, target: RunManifest, groups: list[list[str]],
                  num_chunks: int, progress: Callable[[str], None] = lambda m: None) -> list[NoiseCheck]:
    """For each root-cause group (the outputs of one stage), in the target's environment and then the source's:
    run the stage again here on that run's own inputs (every node of the group, stopping at the first that does
    not reproduce) and compare with the outputs it recorded; once more where they differ, to tell a stage that
    differs run to run from one that differs between processes. A run computed in another environment is not
    checked (one that differs only in its thread count is: a difference is then the thread count's)."""
    from colbert_swap.runs.replay import compact, options, phases
    from colbert_swap.colbert.stages import DAG

    out = []
    nodes = DAG.nodes(num_chunks, phases(target), options(target))
    for group in groups:
        mine = [n for n in nodes if set(n.outputs) & set(group)]
        name = compact(group, num_chunks)[0]
        stage = mine[0].stage.name
        for role, run in (("target", target), ("source", source)):
            why = next((w for w in (unrunnable(run, n) for n in mine) if w), None)
            if why:
                out.append(NoiseCheck(name, stage, role, run.label, f"{NOT_CHECKED}: {why}"))
                continue
            where, how = computed_where(run, mine[0])
            if where == "elsewhere":
                out.append(NoiseCheck(name, stage, role, run.label,
                                      f"{NOT_CHECKED}: run {run.label} was computed in another environment ({how})"))
                continue
            out.append(_check_nodes(cfg, store, run, mine, name, stage, role, where, how, progress))
    return out


def _check_nodes(cfg, store, run, nodes, name, stage, role, where, how, progress) -> NoiseCheck:
    progress(f"is `{name}` noise? running stage {stage} again here on the inputs of run {run.label!r} ({role})")
    threads = how if where == "threads" else ""
    compared: list[str] = []
    with Rerunner(cfg, store, run) as rerun:
        for node in nodes:
            values, _ = rerun.compute(node)
            first = hashes(node, values)
            compared += list(node.outputs)
            differing = [o for o in node.outputs if first[o] != run.artifacts[o].ref.hash]
            if not differing:
                continue
            worst = max((d for d in (max_abs(v, store.get(run, o)) for o, v in zip(node.outputs, values)
                                     if o in differing) if d is not None), default=None)
            again = hashes(node, rerun.compute(node)[0])
            status = RUN_TO_RUN if again != first else (THREADS if where == "threads" else PROCESSES)
            return NoiseCheck(name, stage, role, run.label, status, tuple(compared), worst, threads)
    return NoiseCheck(name, stage, role, run.label, REPRODUCIBLE, tuple(compared), None, threads)
