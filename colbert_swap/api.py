"""colbert_swap as a library, for a notebook or a script: each call takes the command line's overrides and
returns the typed result the command prints a verdict of.

    from colbert_swap import api

    store = ("store.root=/tmp/swap", "collection.num_passages=200")
    a = api.capture("run=a", *store)                                 # RunManifest: every artifact, by hash
    b = api.capture("run=b", "perturb=kmeans_seed", *store)
    cmp = api.compare("a", "b", *store)                              # RunsCompared
    cmp.verdict, cmp.artifacts.first_diverged()                      # the sentence, ['prenorm_centroids', ...]
    inj = api.inject(["prenorm_centroids"], "b", "a", *store)        # Injection: .verdict, .after, .replayed
    loc = api.locate("b", "a", *store)                               # Location: .root_cause
    hits = api.search("a", "b", *store)                              # SearchResult: .retrieval.status
    api.drill_record("b", *store); dr = api.drill("b", "a", *store)  # ModuleDrill: .first, .rows
    rep = api.report("drill", "source=b", "target=a", *store)        # any task: its Report read back

`compose(*overrides)` is the config a command line runs with; `run(cfg)` runs its task (the exit status, the
report in its folder) as `python -m colbert_swap` does. Progress goes to stderr as on the command line
(`progress=` takes another callable). Errors a user can fix raise `colbert_swap.errors.UserError`.
"""

from __future__ import annotations

from typing import Callable, Iterable

from colbert_swap.core.store import RunManifest, Store
from colbert_swap.proof.report.report import Report
from colbert_swap.tasks import compose, run

__all__ = ["capture", "compare", "compose", "determinism", "drill", "drill_record", "inject", "locate", "report", "run",
           "search"]


def _store(cfg) -> Store:
    return Store(cfg.store.root)


def capture(*overrides: str, progress: Callable[[str], None] | None = None) -> RunManifest:
    """`python -m colbert_swap OVERRIDES` (a capture): the complete run (resumed, or as stored when complete)."""
    from colbert_swap.tasks.capture import capture as capture_

    return capture_(compose(*overrides), progress=progress)


def compare(source: str, target: str, *overrides: str):
    """task=compare: a `RunsCompared` (`.verdict`, `.artifacts` per artifact, `.whole` with the index files)."""
    from colbert_swap.tasks.compare import compare as compare_

    cfg = compose("task=compare", f"source={source}", f"target={target}", *overrides)
    return compare_(cfg, _store(cfg))


def inject(names: str | Iterable[str], source: str, target: str, *overrides: str,
           progress: Callable[[str], None] | None = None):
    """inject=NAMES source=SOURCE target=TARGET: an `Injection` (`.verdict`, `.replayed`, `.before`, `.after`)."""
    from colbert_swap.tasks.inject import inject as inject_

    names = [names] if isinstance(names, str) else list(names)
    cfg = compose("task=inject", f"inject=[{','.join(names)}]", f"source={source}", f"target={target}", *overrides)
    return inject_(cfg, _store(cfg), names, progress=progress)


def locate(source: str, target: str, *overrides: str, progress: Callable[[str], None] | None = None):
    """task=locate: a `Location` (`.verdict`, `.root_cause`, `.noise`, the rounds, the final replay)."""
    from colbert_swap.tasks.locate import locate as locate_

    cfg = compose("task=locate", f"source={source}", f"target={target}", *overrides)
    return locate_(cfg, _store(cfg), progress=progress)


def search(source: str, target: str, *overrides: str, progress: Callable[[str], None] | None = None):
    """task=search: a `SearchResult` (`.retrieval`: identical / same top-k / changed, `.per_query`, measures)."""
    from colbert_swap.tasks.search import search as search_

    cfg = compose("task=search", f"source={source}", f"target={target}", *overrides)
    return search_(cfg, _store(cfg), progress=progress)


def determinism(run_label: str, *overrides: str, progress: Callable[[str], None] | None = None):
    """task=determinism run=RUN: a `Determinism` (each stage: reproducible, or how it differs)."""
    from colbert_swap.tasks.determinism import determinism as determinism_

    cfg = compose("task=determinism", f"run={run_label}", *overrides)
    return determinism_(cfg, _store(cfg), progress=progress)


def drill_record(run_label: str, *overrides: str, progress: Callable[[str], None] | None = None) -> RunManifest:
    """task=drill run=RUN: every module's output of RUN's model on probe passages, recorded here (in RUN's
    environment: elsewhere a UserError names the command to run there); the recording's manifest."""
    from colbert_swap.tasks.drill import capture_drill
    from colbert_swap.tasks.common import progress_printer

    cfg = compose("task=drill", f"run={run_label}", *overrides)
    store = _store(cfg)
    return capture_drill(cfg, store, store.load(run_label), progress or progress_printer())


def drill(source: str, target: str, *overrides: str, progress: Callable[[str], None] | None = None):
    """task=drill source=SOURCE target=TARGET (SOURCE recorded first: `drill_record`): a `ModuleDrill` (`.verdict`,
    `.first` the first module whose output differs, `.rows` per module, `.next_steps`)."""
    from colbert_swap.tasks.drill import drill as drill_

    cfg = compose("task=drill", f"source={source}", f"target={target}", *overrides)
    return drill_(cfg, _store(cfg), progress=progress)


def report(task: str, *overrides: str) -> Report:
    """Any task (drill, matrix, parity, repair, verify, ...) run as the command line runs it: its `Report` read back
    from report.json (`.verdict`, `.data`), with `.data["exit"]` its exit status."""
    from colbert_swap.tasks import common

    before = len(common.WRITTEN)
    status = run(compose(f"task={task}", *overrides))
    if len(common.WRITTEN) == before:
        raise RuntimeError(f"task={task} writes no report (it prints what it did)")
    written = Report.read(common.WRITTEN[-1].parent / "report.json")
    written.data["exit"] = status
    return written
