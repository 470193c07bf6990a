"""Compute artifacts of a run again, each checked against the hash its manifest recorded: task=repair (a file lost
or damaged) and `materialize` (the bytes a capture of `store.keep=index` kept only the hash of, when a comparison
or replay reads them).

The store is content-addressed: an artifact's file is named by the hash of its content, so a file computed again
is the one recorded exactly when its hash is the recorded one, and the run's manifest needs no change. The stages
that made the artifacts run again (in a scratch run, `NAME.repair`, removed after) on the run's own stored inputs,
from the generator states the run recorded, with the run's config; an input whose bytes are not here by choice is
computed first. What is not computed again, with why: an artifact computed in another environment (its bits are
that environment's), one injected from another run, one whose stage needs a generator state that is lost too, and
one whose recomputation gives other bits (the stage does not repeat itself here).
"""

from __future__ import annotations

import shutil
from typing import Iterable

from colbert_swap.colbert.plan import plan
from colbert_swap.colbert.stages import DAG
from colbert_swap.core.dag import PHASES
from colbert_swap.core.store import RunManifest, Store
from colbert_swap.core.store.blobs import BlobRef
from colbert_swap.core.store.origin import Repair
from colbert_swap.env.provenance import env_id, run_environment
from colbert_swap.config import capture_options
from colbert_swap.runs.execute import Policy, RunSpec, Write, execute, run_config

SCRATCH = ".repair"  # NAME.repair: the scratch run the stages compute in


def why_not_here(store: Store, run: RunManifest, name: str) -> str | None:
    """Why artifact `name` of `run` cannot be computed again here, or None."""
    record = run.artifacts[name]
    if record.stage.startswith("inject:"):
        return f"injected from run {record.stage.split(':', 1)[1]!r}: repair that run"
    here = env_id(run_environment(run.config))
    if record.env is not None and record.env != here:
        return (f"computed in environment {record.env}, this is {here}: run the same command there "
                "(its bits are that environment's)")
    node = next(n for n in plan(store, run).nodes(PHASES) if name in n.outputs)
    if "rng" in node.stage.resources:
        state = run.rng.get(node.name) or {}
        refs = [BlobRef(hash=h, kind="tensor" if k == "torch" else "json") for k, h in state.items()]
        if not refs or any(not store.blobs.path(ref).exists() for ref in refs):
            return "its stage draws random numbers and the generator state it started from is lost too"
    return None


def recompute(cfg, store: Store, run: RunManifest, names: Iterable[str], progress) -> tuple[list[str], dict[str, str]]:
    """Compute `names` of `run` again here: (those equal to their recorded hash, whose files are now in the store;
    name -> why not, for the others). The inputs they need whose bytes the run kept only the hash of are computed
    (and kept) too."""
    names = list(names)
    refused = {n: why for n in names if (why := why_not_here(store, run, n))}
    wanted = [n for n in names if n not in refused]
    if not wanted:
        return [], refused
    hashed = store.absent_by_choice(run) & set(run.hash_only)
    upstream = DAG.upstream_of(wanted, plan(store, run).num_chunks, capture_options(run.config)) & hashed
    inputs = sorted(upstream - set(wanted))
    blocked = [(n, why) for n in inputs if (why := why_not_here(store, run, n))]
    if blocked:
        what = f"needs {blocked[0][0]!r}, whose bytes are not here and cannot be computed again here: {blocked[0][1]}"
        return [], {**refused, **{n: what for n in wanted}}
    computed = wanted + inputs
    scratch = run.label + SCRATCH
    refilled, differ = [], {}
    try:
        again = execute(run_config(cfg, run), store, RunSpec(scratch, Repair(source=run.label), run.config,
                                                             run.config_hash),
                        targets=computed, policy=Policy(write=Write.FRESH, base=run, rng=dict(run.rng), index=False,
                                                        replace=computed), progress=progress)
        for name in wanted:
            theirs, ours = run.artifacts[name].ref.hash, again.artifacts[name].ref.hash
            if theirs == ours:
                refilled.append(name)
            else:
                differ[name] = (f"computed again here it gives other bits ({ours[:12]} where the run recorded "
                                f"{theirs[:12]}): its stage does not repeat itself here "
                                f"(python -m colbert_swap task=determinism run={run.label})")
    finally:
        shutil.rmtree(store.run_dir(scratch), ignore_errors=True)
    return refilled, {**refused, **differ}


def materialize(cfg, store: Store, run: RunManifest, names: Iterable[str], progress) -> dict[str, str]:
    """The bytes of those of `names` that `run`'s capture kept only the hash of (store.keep), computed again here
    and checked against that hash, so that a comparison or replay can read them; name -> why not, for those that
    could not be (they stay unread: a comparison says "not compared" of them)."""
    wanted = sorted(store.absent_by_choice(run, names) & set(run.hash_only))
    if not wanted:
        return {}
    names = ", ".join(wanted[:5]) + (f" and {len(wanted) - 5} more" if len(wanted) > 5 else "")
    progress(f"computing again {names} of run {run.label!r}: its capture kept only their hash (store.keep)")
    return recompute(cfg, store, run, wanted, progress)[1]


def readable(cfg, store: Store, a: RunManifest, b: RunManifest, progress) -> None:
    """Before runs `a` and `b` are compared: the bytes of every artifact whose hashes differ between them (the ones
    a comparison reads) that a run's capture kept only the hash of, computed again here where they can be; those
    that cannot stay unread, and the comparison says "not compared" of them, with why."""
    differ = [n for n in a.artifacts if n in b.artifacts and a.artifacts[n].ref != b.artifacts[n].ref]
    for run in (a, b):
        for name, why in materialize(cfg, store, run, differ, progress).items():
            progress(f"not computed again: run {run.label!r} artifact {name!r}: {why}")
