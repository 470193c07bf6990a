"""The one way a run is computed: `execute(run, targets, overrides, policy)`, as Hamilton's driver executes.

    manifest = execute(cfg, store, RunSpec(label, Capture(), config, digest), targets=INDEXING,
                       policy=Policy(write=Write.NEW, force=cfg.force), progress=progress)        # a capture
    manifest = execute(cfg, store, RunSpec(label, Replay(...), target.config, target.config_hash), targets=phases,
                       overrides=Overrides(source, ["centroids"]), policy=Policy(base=target, rng=target.rng))

- `targets`: the phases (`setup`, `train`, `index`, `finalize`, `search`) or the artifacts the run must hold; every
  node that makes one of them and is not recorded yet is computed, in colbert-ai's order.
- `overrides`: artifacts taken from another run instead of computed (an injection; an isolated stage's inputs).
  They are pinned: nothing downstream overwrites them, and what is downstream of them is computed again.
- `policy`: what happens to a run stored under the label (`Write`, colbert_swap/core/store/run.py), the run whose
  other artifacts the new one starts from (`base`: a replay's target), the runs whose outputs a node may take
  where its inputs, config, code and environment are the same (`reuse`), the generators' state per node (`rng`),
  and whether colbert-ai's index files are written.

The run's plan (num_chunks, phases, options) is computed once (num_chunks is the DAG's second node) and kept in
its manifest: `plan(store, manifest)` (colbert_swap/colbert/plan.py) reads it. Everything is persisted by the run writer (core/store/run.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Sequence

from colbert_swap.colbert.index_files import write_index
from colbert_swap.colbert.plan import Plan, plan
from colbert_swap.colbert.resources import Resources
from colbert_swap.colbert.stages import DAG
from colbert_swap.config import capture_options
from colbert_swap.core.code import code_hash
from colbert_swap.core.dag import INDEXING, PHASES, Node
from colbert_swap.core.engine import Engine
from colbert_swap.core.store import ArtifactRecord, RunManifest, Store
from colbert_swap.core.store.origin import Origin
from colbert_swap.core.store.run import RunWriter, Write, open_run
from colbert_swap.errors import UserError

__all__ = ["Overrides", "Plan", "Policy", "RunSpec", "Write", "execute", "plan"]


@dataclass(frozen=True)
class RunSpec:
    """The run written: its label, how it came to be (colbert_swap/core/store/origin.py), its config."""

    label: str
    origin: Origin
    config: dict
    config_hash: str


@dataclass(frozen=True)
class Overrides:
    """Artifacts of run `run` that stand in for this run's own (pinned: never computed, never overwritten)."""

    run: RunManifest
    names: Sequence[str] = ()


@dataclass(frozen=True)
class Policy:
    write: Write = Write.REPLACE
    force: bool = False  # Write.NEW: replace a run of another config
    base: RunManifest | None = None  # a new run starts with this run's artifacts that no override is upstream of
    reuse: Sequence[RunManifest] = ()  # runs whose outputs a node may take (Engine.reusable)
    rng: dict | None = field(default=None, hash=False)  # node -> generator state at its start
    index: bool = True  # write colbert-ai's index files when an indexing node computed
    replace: Sequence[str] = ()  # Write.EXTEND: artifacts (and their nodes' generator states) removed first
    keep: Callable[[str, Any], bool] | None = field(default=None, hash=False)  # store.keep: (name, value) -> its bytes


def execute(cfg, store: Store, run: RunSpec, targets: Iterable[str] = INDEXING, overrides: Overrides | None = None,
            policy: Policy = Policy(), progress: Callable[[str], None] = lambda message: None,
            before: Callable[[Resources], None] | None = None) -> RunManifest:
    """Compute `targets` of run `run` (phases or artifact names), with `overrides` pinned, as `policy` says; the
    complete run. `cfg` is the config the resources are built from (this invocation's, merged with the run's
    own by the caller); `before(resources)` runs once the run is open, before any stage (input checks)."""
    targets = tuple(targets)
    pinned = frozenset(overrides.names if overrides else ())
    policy = _code_policy(store, run, policy, progress)
    base = (policy.base, plan(store, policy.base)) if policy.base is not None else None
    inherited = base[1] if base else plan(store, overrides.run) if overrides else None  # the plan it computes in
    with open_run(store, run.label, run.origin, run.config, run.config_hash, write=policy.write, force=policy.force,
                  make=lambda manifest: _start(manifest, base, overrides, inherited)) as writer:
        noun = "run" if run.origin.kind == "capture" else run.origin.kind
        if writer.done:
            progress(f"run {run.label!r} is already captured with this config; nothing to do" if noun == "run" else
                     f"{noun} {run.label!r} already in the store")
            gone = list(store.lost(writer.manifest, read=False))
            if gone:
                progress(f"but {len(gone)} of its artifact files are missing from the store ({', '.join(gone[:3])}"
                         f"{', ...' if len(gone) > 3 else ''}): python -m colbert_swap task=repair run={run.label}")
            return writer.manifest
        if writer.resumed and policy.write is not Write.EXTEND:
            progress(f"resuming {noun} {run.label!r}: {len(writer.manifest.artifacts)} artifact(s) already stored")
        writer.keep = policy.keep
        resources = Resources(cfg, store, store.run_dir(run.label), progress)
        if before is not None:
            before(resources)
        _record_inputs(writer, resources.input_digests())
        engine = Engine(writer, resources, progress)
        the_plan = _plan(writer, engine, cfg, targets)
        for name in policy.replace:
            writer.manifest.artifacts.pop(name, None)
        nodes = _nodes(the_plan, targets)
        resources.check([n for n in nodes if not engine.done(n)])  # what cannot compute here: refused first
        for node in nodes:
            if set(node.outputs) & set(policy.replace):
                writer.manifest.rng.pop(node.name, None)
        indexing = [n for n in nodes if n.stage.phase != "search"]
        for group in (indexing, [n for n in nodes if n.stage.phase == "search"]):
            if group:
                engine.execute(group, rng_states=policy.rng, pinned=pinned,
                               reuse_from=list(policy.reuse) or None)
            if group is indexing and policy.index:  # colbert-ai's index files, then its search
                progress("writing the colbert-ai index files")
                write_index(writer.folder("index"), engine.get, resources.colbert_config, the_plan.num_chunks)
        if policy.write is Write.EXTEND:
            writer.save()
            return writer.manifest
        return writer.finish()


def _record_inputs(writer: RunWriter, digests: dict) -> None:
    """The checkpoint and collection the run computes from, here: kept in a new run; a run resumed or extended (a
    search added to it) must read the very files it recorded, or its artifacts would come from two models."""
    recorded = writer.manifest.inputs
    if recorded is None:
        writer.set_inputs(digests)
        return
    differ = [key for key in sorted(set(recorded) & set(digests)) if recorded[key] != digests[key]]
    if differ:
        raise UserError(f"run {writer.manifest.label!r} was computed from other files than this store holds (the "
                        + "; ".join(f"{key}'s content: digest {recorded[key][:12]} recorded, {digests[key][:12]} here"
                                    for key in differ)
                        + "): its artifacts would come from two models or collections. Capture it here under another "
                          "name (run=NAME), or give this store the files it was made from")


def _code_policy(store: Store, run: RunSpec, policy: Policy, progress) -> Policy:
    """A run stored under the label with outputs of other code than this process's (core/code.py) is started
    over where it would be resumed (a partial run of the same config: one run, one code) or returned as it is
    although it is derived (a replay: it stands for this code's replay). A complete capture stays as it was
    computed: it is the record of that run."""
    if policy.write in (Write.EXTEND, Write.FRESH) or not store.has_run(run.label):
        return policy
    stored = store.load(run.label)
    if stored.config_hash != run.config_hash or (stored.complete and policy.base is None):
        return policy
    node = _other_code(stored, policy.base)
    if node is None:
        return policy
    progress(f"run {run.label!r} in the store was computed by other code than this ({node}): computed again")
    return replace(policy, write=Write.FRESH)


def _other_code(stored: RunManifest, base: RunManifest | None) -> str | None:
    """The first node of `stored` that other code computed than this process runs (not those it took from
    `base`), or None."""
    scope, stages = Resources.code_scope(), {s.name: s for s in DAG.stages}
    for name, record in stored.artifacts.items():
        theirs = base.artifacts.get(name) if base is not None else None
        taken = theirs is not None and (theirs.ref.hash, theirs.code) == (record.ref.hash, record.code)
        stage = stages.get(record.stage) or stages.get(record.stage.rpartition(".")[0])
        if not taken and record.code is not None and stage is not None and record.code != code_hash(stage, scope):
            return record.stage
    return None


def _start(manifest: RunManifest, base: tuple[RunManifest, Plan] | None, overrides: Overrides | None,
           inherited: Plan | None) -> None:
    """A new run: the base run's artifacts that no override is upstream of, and the overrides (injected into a
    base: recorded as `inject:SOURCE`; an isolated stage's inputs: as they are)."""
    names = list(overrides.names) if overrides else []
    if base is not None:
        run, base_plan = base
        dirty = {o for n in DAG.downstream_of(names, base_plan.num_chunks, base_plan.phases, base_plan.options)
                 for o in n.outputs}
        for name, record in run.artifacts.items():
            if name not in dirty and name not in names:
                manifest.adopt(name, record, run)
    if inherited is not None:
        manifest.plan = inherited.to_json()
    for name in names:
        record = overrides.run.artifacts[name]
        if base is not None:
            record = ArtifactRecord(ref=record.ref, stage=f"inject:{overrides.run.label}", env=record.env,
                                    code=record.code)
        manifest.adopt(name, record, overrides.run)


def _plan(writer: RunWriter, engine: Engine, cfg, targets) -> Plan:
    """The run's plan: kept in its manifest, or made now (num_passages and num_chunks computed first)."""
    manifest = writer.manifest
    if manifest.plan and "num_chunks" in manifest.plan:
        kept = Plan(int(manifest.plan["num_chunks"]), tuple(manifest.plan["phases"]), tuple(manifest.plan["options"]))
        phases = tuple(p for p in PHASES if p in kept.phases or p in targets)
        if phases != kept.phases:
            writer.set_plan(Plan(kept.num_chunks, phases, kept.options).to_json())
        return Plan(kept.num_chunks, phases, kept.options)
    if "num_chunks" not in manifest.artifacts:
        engine.execute(DAG.nodes(num_chunks=1)[:2])  # num_passages, num_chunks: then the DAG can be expanded
    phases = tuple(p for p in PHASES if p in INDEXING or p in targets or
                   (p == "search" and "query_texts" in manifest.artifacts))
    made = Plan(int(engine.get("num_chunks")), phases, tuple(sorted(capture_options(manifest.config))))
    writer.set_plan(made.to_json())
    return made


def _nodes(the_plan: Plan, targets: Sequence[str]) -> list[Node]:
    """The nodes that make `targets`: every node of the phases named, the producers of the artifacts named."""
    phases = [t for t in targets if t in PHASES]
    names = [t for t in targets if t not in PHASES]
    nodes = the_plan.nodes(phases) if phases else []
    if names:
        wanted = set(DAG.expand(names, the_plan.num_chunks, the_plan.options))
        nodes += [n for n in the_plan.nodes(PHASES) if wanted & set(n.outputs) and n not in nodes]
    return nodes


def run_config(cfg, manifest: RunManifest):
    """This invocation's config with the run's own model/collection/index/perturb/seed (a knob a run recorded
    before it existed, perturb.threads, is the run's null, not this command line's)."""
    from omegaconf import OmegaConf

    merged = OmegaConf.merge(cfg, manifest.config)
    recorded = manifest.config.get("perturb") or {}
    for knob in ("threads", "noise"):
        if knob not in recorded and OmegaConf.select(merged, f"perturb.{knob}", default=None) is not None:
            merged.perturb[knob] = None
    return merged
