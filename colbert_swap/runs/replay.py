"""Injection and replay: put the source run's tensors into the target run and recompute only what is
downstream of them, in this environment, with the target's config and random states.

    replayed = replay(cfg, store, target=store.load("2.1.0"), source=store.load("2.0.1"),
                      names=["local_sample_embs"])
"""

from __future__ import annotations

import difflib

from colbert_swap.colbert.stages import DAG
from colbert_swap.colbert.stages.search import searched
from colbert_swap.config import capture_options
from colbert_swap.core.dag import INDEXING
from colbert_swap.core.store import RunManifest, Store, check_label
from colbert_swap.core.store.origin import Replay
from colbert_swap.env.provenance import describe_changes, env_id, run_environment
from colbert_swap.errors import UserError
from colbert_swap.runs.execute import Overrides, Policy, RunSpec, execute, plan, run_config
from colbert_swap.runs.recompute import materialize


def as_names(inject) -> list[str]:
    """`inject=x`, `inject=[x,y]`, or `x+y` (the one string a sweep job gets for `-m inject=x+y,z`)."""
    if inject is None:
        return []
    if isinstance(inject, str):
        return [n.strip() for n in inject.split("+") if n.strip()]
    return [str(n) for n in inject]


def resolve(names: list[str], num_chunks: int, options=()) -> list[str]:
    """Expand names ('embs' -> every chunk's embs.N) or fail with a did-you-mean list. `options`: the run's
    optional stages (capture_options); their artifacts are names only there."""
    valid = DAG.artifacts(num_chunks, options=options)
    choices = sorted(set(valid) | {t[:-2] for t in DAG.artifact_templates() if t.endswith(".N")
                                   and DAG.optional(t) in (None, *options)})
    out: list[str] = []
    for name in names:
        option = DAG.optional(name) or DAG.optional(f"{name}.N")
        if option and option not in options:
            raise UserError(f"artifact {name!r} is kept only by runs captured with capture.{option}=true; "
                            f"capture both runs with it to inject it")
        try:
            expanded = [m for n in DAG.expand([name], num_chunks, options) for m in DAG.together(n)]
            out += [n for n in expanded if n not in out]
        except KeyError:
            close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise UserError(f"unknown artifact {name!r}.{hint} Valid names: {', '.join(choices)}") from None
    return out


def compact(names: list[str], num_chunks: int) -> list[str]:
    """Every chunk of a per-chunk artifact is written once, without its suffix: embs.0..N -> embs."""
    out: list[str] = []
    for name in names:
        base, _, tail = name.rpartition(".")
        if base and tail.isdigit() and all(f"{base}.{c}" in names for c in range(num_chunks)):
            name = base
        if name not in out:
            out.append(name)
    known = set(DAG.artifacts(num_chunks))  # the optional stages' artifacts are never injected together
    leaders = {n: _leader(n, known) for n in out}
    return [n for n in out if leaders[n] in (n, None) or leaders[n] not in out]


def _leader(name: str, known: set[str]) -> str | None:
    """The first output of the stage `name` is injected together with (`sample_tokens` for its masks and
    order; `tokens` for `token_masks`), as `compact` writes names; None when it goes alone."""
    probe = name if name in known else f"{name}.0"
    if probe not in known or not DAG.facts(probe).together:
        return None
    first = DAG.together(probe)[0]
    return first if name == probe else first.rpartition(".")[0]


def replay_label(target: str, names: list[str], source: str) -> str:
    return check_label(f"{target}+{'+'.join(names)}@{source}")


def _missing(run: RunManifest, name: str) -> str:
    """Why `run` lacks artifact `name`, with what makes it."""
    if DAG.producer(name).phase == "search" and not searched(run):
        return (f"run {run.label!r} has no artifact {name!r}: it has not been searched yet; search it first: "
                f"python -m colbert_swap task=search run={run.label} (or task=search source=... target=... inject={name})")
    if not run.complete:
        return f"run {run.label!r} has no artifact {name!r}: the run is incomplete (the command that made it resumes it)"
    return f"run {run.label!r} has no artifact {name!r} (a stage of a capture option it was made without)"


def replay(cfg, store: Store, target: RunManifest, source: RunManifest, names: list[str],
           label: str | None = None, progress=lambda message: None) -> RunManifest:
    num_chunks = plan(store, target).num_chunks
    if plan(store, source).num_chunks != num_chunks:
        raise UserError(f"runs {source.label!r} and {target.label!r} have different numbers of chunks")
    injected = resolve(names, num_chunks, options(target))
    for name in injected:
        for run in (source, target):
            if name not in run.artifacts:
                raise UserError(_missing(run, name))
        a, b = source.artifacts[name].ref, target.artifacts[name].ref
        same_width = DAG.facts(name).together or a.shape == b.shape  # tokens of another width are still tokens
        if ((a.dtype, a.kind) != (b.dtype, b.kind) or not same_width) and not cfg.force:
            raise UserError(f"cannot inject {name!r}: source {source.label!r} has {a.dtype} {list(a.shape or [])}, "
                            f"target {target.label!r} has {b.dtype} {list(b.shape or [])}; pass force=true to try")
    needed = _read_from_target(target, injected, num_chunks)
    for run, names_read in ((source, injected), (target, needed)):
        failed = materialize(cfg, store, run, names_read, progress)
        if failed:
            name, why = next(iter(failed.items()))
            raise UserError(f"cannot replay: run {run.label!r} kept only the hash of {name!r} (store.keep), and its "
                            f"bytes cannot be computed again here: {why}")
    absent = sorted(store.absent_by_choice(source, injected))
    if absent:
        raise UserError(f"cannot inject {', '.join(absent)} from run {source.label!r}: it was imported from a bundle "
                        f"that left out their bytes ({(store.imported(source.label) or {}).get('bundle')}); import one "
                        "that carries them (`task=export run=... artifacts=all` where it was made)")
    names = compact(injected, num_chunks)
    note = environment_note(cfg, target)
    if note:
        progress(note)
    label = label or replay_label(target.label, names, source.label)
    return _replay(cfg, store, target, source, injected, names, num_chunks, label, progress)


def _read_from_target(target: RunManifest, injected: list[str], num_chunks: int) -> set[str]:
    """The target's artifacts that the stages a replay recomputes read (the inputs of the stages downstream of
    `injected` that none of them makes): their bytes must be in the store."""
    nodes = DAG.downstream_of(injected, num_chunks, phases(target), options(target))
    made = {o for n in nodes for o in n.outputs}
    return {i for n in nodes for i in n.input_names()} - made - set(injected)


def phases(run: RunManifest) -> tuple[str, ...]:
    """The phases a replay of `run` recomputes: indexing, and its search when the run has one."""
    return (*INDEXING, "search") if "query_texts" in run.artifacts else INDEXING


def options(run: RunManifest) -> frozenset[str]:
    """The optional stages a replay of `run` recomputes: those it was captured with (capture.batches)."""
    return capture_options(run.config)


def reuse_candidates(store: Store, target: RunManifest, label: str) -> list[RunManifest]:
    """Runs whose outputs a replay of `target` may take where a stage's inputs are the same: the target first,
    then every other run in the store with the target's config (the other replays of this locate, and of any
    earlier one). The engine takes an output only where it was computed in this environment."""
    out = [target]
    for other in store.runs():
        if other in (target.label, label):
            continue
        try:
            manifest = store.load(other)
        except Exception:  # a run being written by another process, or a damaged one: not a candidate
            continue
        if manifest.config_hash == target.config_hash:
            out.append(manifest)
    return out


def environment_note(cfg, target: RunManifest) -> str | None:
    """A replay computes in one environment: this one. Where the target was computed elsewhere, none of its
    outputs of unchanged stages can stand in for this environment's (the engine reuses only outputs computed
    here), so every downstream stage is recomputed here; this says so."""
    here = run_environment(target.config)  # with the target's perturb.threads, as the replay computes
    if env_id(here) == target.env or not cfg.reuse:
        return None
    return (f"run {target.label!r} was computed in another environment ({describe_changes(target.provenance, here)}): "
            "every stage downstream of the injection is recomputed here, none of its outputs is reused")


def _replay(cfg, store: Store, target: RunManifest, source: RunManifest, injected: list[str], names: list[str],
            num_chunks: int, label: str, progress) -> RunManifest:
    origin = Replay(target.label, source.label, tuple(names), tuple(injected), target.created, source.created,
                    bool(cfg.reuse), env_id(run_environment(target.config)))
    nodes = DAG.downstream_of(injected, num_chunks, phases(target), options(target))
    progress(f"replaying {len(nodes)} stages downstream of {', '.join(names)} into run {label!r}")
    return execute(run_config(cfg, target), store, RunSpec(label, origin, target.config, target.config_hash),
                   targets=phases(target), overrides=Overrides(source, injected),
                   policy=Policy(base=target, rng=target.rng,
                                 reuse=reuse_candidates(store, target, label) if cfg.reuse else ()),
                   progress=progress)
