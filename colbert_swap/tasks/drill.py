"""task=drill: from "this stage diverges" to "this module diverges".

    python -m colbert_swap task=drill run=2.0.1              # in 2.0.1's environment: its drill capture
    python -m colbert_swap task=drill source=2.0.1           # here: this run's drill capture, then compare

Each environment records its own model's module outputs on the same probe passages (stored as run
`<run>+drill`); the report names the first module, in execution order, whose output differs, with
per-module numbers and the divergence per batch (size and padded length).

A recording (`<run>+drill`, `<run>+ops.<module>`) stands for its run only when it was made in the
environment that computed the run's encoder outputs (`embs.N`: its torch-read variables such as
ATEN_CPU_CAPABILITY, packages, CPU kernels, thread counts: `provenance.changed_keys`). The rule:

- a recording keeps the environment it was made in (`provenance.env_id`) in its origin (`env`);
- it is made only in an environment equal to its run's: elsewhere `task=drill` refuses, naming the
  differences and the exact command to run instead (`run_in_hint`: the run's variables spelled out, and
  its venv's interpreter when the run names an environment spec), before anything is stored;
- a stored recording is reused only when it was made in this environment, which is the run's: one made
  in another environment (or before the environment was kept) is recorded again, and `task=drill
  source=A` refuses A's recording unless it was made in A's environment;
- `force=true` records (and compares) anyway, with a warning in the report; such a recording keeps the
  environment it was made in, so no call without force=true ever takes it for the run's.

The run's perturb knobs are no part of this: they are its config, applied to every recording as they were
to the run.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from omegaconf import OmegaConf

from colbert_swap.colbert import infra
from colbert_swap.proof.compare.comparators import compare
from colbert_swap.config import DrillConfig, StoreConfig
from colbert_swap.study.drill import DOC, align_ops, kernel_context, module_outputs, op_trace, probe_passages, quoted
from colbert_swap.errors import UserError
from colbert_swap.env.provenance import (SPEC_VAR, changed_keys, describe_changes, env_id, environment, fingerprint,
                                     run_environment)
from colbert_swap.proof.report import plots, proof
from colbert_swap.colbert.resources import Resources
from colbert_swap.proof.report.report import Report, ReportData
from colbert_swap.proof.report.tables import table
from colbert_swap.core.store import RunManifest, Store
from colbert_swap.core.store.origin import Drill, Ops
from colbert_swap.core.store.run import Write, open_run
from colbert_swap.tasks.common import environments_section, finish, progress_printer, source_run, target_label


def drill_label(run: str) -> str:
    return f"{run}+drill"


def ops_label(run: str, module: str) -> str:
    return f"{run}+ops.{module}"


def encoder_environment(run: RunManifest) -> dict:
    """The provenance of the environment that computed `run`'s encoder outputs (`local_sample_embs`,
    `embs.N`): the run's own for a capture, the replay's or the injected run's for a replay."""
    envs = {run.computed_in(n) for n in run.artifacts if n == "local_sample_embs" or n.startswith("embs.")}
    if len(envs) > 1:
        raise UserError(f"run {run.label!r}'s encoder outputs were computed in {len(envs)} environments "
                        f"({', '.join(sorted(envs))}): drill the runs they came from instead")
    env = envs.pop() if envs else run.env
    return run.provenance if env == run.env else run.environments.get(env, run.provenance)


def drill_args(cfg, *args: str, module: str | None = None) -> list[str]:
    """`task=drill ARGS` with this invocation's module (or `module`), probes, bsizes, store and venv cache
    where they are not the defaults: the arguments of a command that redoes this one elsewhere."""
    out = ["task=drill", *args]
    if module or cfg.drill.module:
        out.append(f"module={module or cfg.drill.module}")
    if cfg.drill.probes != DrillConfig().probes:
        out.append(f"probes={cfg.drill.probes}")
    if cfg.drill.bsizes:
        out.append(f"bsizes=[{','.join(map(str, cfg.drill.bsizes))}]")
    if str(cfg.store.root) != StoreConfig().root:
        out.append(f"store.root={cfg.store.root}")
    if cfg.get("env_cache"):
        out.append(f"env_cache={cfg.env_cache}")
    return out


def _env_cache(cfg) -> Path | None:
    if cfg is None:
        return None
    return Path(cfg.get("env_cache") or Path(cfg.store.root) / "envs")


def run_in_hint(run: RunManifest, args: list[str], cfg=None) -> str:
    """`python -m colbert_swap ARGS` as it must be run in the environment that computed `run`'s encoder
    outputs, in backticks: the torch-read variables it had spelled out (those set here that it had not
    unset with `env -u`), and, when it names an environment spec with a venv, that venv's interpreter
    (found in the venv cache of `cfg`; without it, named in words).

        ATEN_CPU_CAPABILITY=default python -m colbert_swap task=drill run=cpu-default module=X
    """
    env = encoder_environment(run)
    variables = dict(fingerprint(env)["env"])  # the recorded ones that decide kernels (not CUDA_VISIBLE_DEVICES)
    python, where = "python", ""
    spec_name = env.get("environment")
    if spec_name:
        from colbert_swap.env.venvs import load_spec, venv_dir

        try:
            spec = load_spec(str(spec_name))
            variables = {**{k: str(v) for k, v in spec.env.items()}, **variables}
            if spec.python != "current":
                cache = _env_cache(cfg)
                if cache is None:
                    where = f" in environment {spec_name} (its venv)"
                else:
                    python = str(venv_dir(spec, cache) / "bin" / "python")
                    where = f" (environment {spec_name}'s venv)"
        except UserError:  # the spec is gone or its installer unknown: named in words
            where = f" in environment {spec_name} (its venv)"
    variables.pop(SPEC_VAR, None)
    unset = [k[4:] for k in changed_keys(env, environment()) if k.startswith("env.") and k[4:] not in variables
             and k[4:] in os.environ]  # set here, not in the run: `env -u`
    prefix = (["env", *(f"-u {k}" for k in unset)] if unset else []) + [f"{k}={shlex.quote(v)}" for k, v in
                                                                       variables.items()]
    imported = Store(cfg.store.root).imported(run.label) if cfg is not None else None
    if imported:  # made on another machine: record there, in the store it was exported from, and bring it here
        args = [a for a in args if not a.startswith("store.root=")]
        where += (f" (on the machine run {run.label} came from, in its store there: it came in bundle "
                  f"{imported.get('bundle')}; then `python -m colbert_swap task=export run={run.label}` there and "
                  f"`python -m colbert_swap task=import bundle=... store.root={cfg.store.root}` here)")
    command = " ".join([*prefix, python, "-m", "colbert_swap", *(shlex.quote(a) for a in args)])
    return f"`{command}`{where}"


def environment_refusal(cfg, run: RunManifest, args: list[str], what: str) -> str | None:
    """None where this process's environment is the one that computed `run`'s encoder outputs. Elsewhere a
    UserError naming the differences and the command to run instead; with force=true, the warning."""
    env, here = encoder_environment(run), run_environment(run.config)  # here, with the run's perturb.threads
    if not changed_keys(env, here):
        return None
    differs = f"run {run.label!r} was computed in another environment than this one ({describe_changes(env, here)})"
    command = run_in_hint(run, args, cfg)
    if not cfg.force:
        raise UserError(f"{differs}: {what} must be recorded in its environment: run {command} (or add force=true "
                        "to record it here anyway: kept as this environment's recording, never reused as the run's)")
    return (f"{what} was recorded here with force=true although {differs}: it stands for this environment, not "
            f"for the run's, and is never reused as the run's; in the run's environment: {command}.")


def recorded_in_run_environment(run: RunManifest, recording: RunManifest) -> bool:
    """Whether `recording` (a drill or an operation trace of `run`) was made in `run`'s environment."""
    return (getattr(recording.origin, "env", "") == recording.env
            and not changed_keys(encoder_environment(run), recording.provenance))


def stale_refusal(cfg, run: RunManifest, recording: RunManifest, args: list[str]) -> str | None:
    """None where `recording` was made in `run`'s environment; else a UserError saying where it was made
    and the command that records it in `run`'s environment (with force=true, the warning)."""
    if recorded_in_run_environment(run, recording):
        return None
    changes = describe_changes(encoder_environment(run), recording.provenance)
    where = (f"in another environment{f' ({changes})' if changes else ''}" if getattr(recording.origin, "env", "")
             else "before recordings kept their environment")
    text = (f"{recording.label!r} was recorded {where}, not in the environment of run {run.label!r}: record it "
            f"there with {run_in_hint(run, args, cfg)}")
    if not cfg.force:
        raise UserError(f"{text}, then run this again (or add force=true to use it anyway)")
    return f"used with force=true: {text}."


def _probing(cfg, store: Store, run: RunManifest, probes: int):
    """`run`'s config in this environment, its resources, and its probe passages. colbert-ai's chatter goes
    to the drilled run's own log, so a drill that fails leaves no folder behind."""
    here = OmegaConf.merge(cfg, run.config)
    resources = Resources(here, store, store.run_dir(run.label))
    return here, resources, probe_passages(resources.corpus.passages, probes)


def capture_drill(cfg, store: Store, run: RunManifest, progress, probes: int | None = None,
                  bsizes: list[int] | None = None) -> RunManifest:
    """Module outputs of `run`'s model in this environment (with `run`'s own config and perturb knobs): only
    in `run`'s environment (or with force=true); a stored one made in another environment is redone."""
    environment_refusal(cfg, run, drill_args(cfg, f"run={run.label}"), f"the drill capture of {run.label!r}")
    here, resources, passages = _probing(cfg, store, run, probes or cfg.drill.probes)
    bsizes = list(bsizes or cfg.drill.bsizes or [resources.colbert_config.index_bsize])
    origin = Drill(run.label, len(passages), tuple(bsizes), env_id(run_environment(run.config)))
    with open_run(store, drill_label(run.label), origin, run.config, run.config_hash, write=Write.RECORD) as writer:
        if writer.done:
            return writer.manifest
        progress(f"recording every module's output for {len(passages)} probe passages of run {run.label!r}")
        with infra.quiet(resources.log), torch.inference_mode(), infra.perturbed(here.perturb):
            outputs, batches = module_outputs(resources.checkpoint, passages, bsizes)
        for name, tensor in outputs.items():
            writer.put(name, tensor, stage="drill")
        writer.put("batches", batches, stage="drill")
        return writer.finish()


def capture_ops(cfg, store: Store, run: RunManifest, module: str, probes: int, bsizes: list[int],
                progress) -> RunManifest:
    """The aten operations inside `module` for `run`'s probes, recorded in this environment on the very
    batches of the module drill (`bsizes`); only in `run`'s environment, as `capture_drill`."""
    environment_refusal(cfg, run, drill_args(cfg, f"run={run.label}", module=module),
                        f"the operation trace of {run.label!r}")
    here, resources, passages = _probing(cfg, store, run, probes)
    env = env_id(run_environment(run.config))  # as open_run records the recording's provenance
    origin = Ops(run.label, module, len(passages), tuple(bsizes), env=env)
    with open_run(store, ops_label(run.label, module), origin, run.config, run.config_hash, write=Write.RECORD) as writer:
        if writer.done:
            return writer.manifest
        progress(f"recording the aten operations inside {module} for run {run.label!r}")
        with infra.quiet(resources.log), torch.inference_mode(), infra.perturbed(here.perturb):
            ops, params = op_trace(resources.checkpoint, passages, bsizes, module)
            context = kernel_context(resources.checkpoint, here.perturb.get("attn"))
        writer.manifest.origin = Ops(run.label, module, len(passages), tuple(bsizes), context, env)
        for i, op in enumerate(ops):
            writer.put(f"op/{i}", op["output"], stage=op["op"], inputs={str(k): h for k, h in enumerate(op["inputs"])})
        writer.put("params", params, stage="drill")
        writer.put("op_batches", [op["batch"] for op in ops], stage="drill")
        return writer.finish()


def trace(manifest: RunManifest) -> list[tuple]:
    """[(op, input hashes, output hash)] of an operation trace, in execution order."""
    ops = sorted((int(n.split("/")[1]), r) for n, r in manifest.artifacts.items() if n.startswith("op/"))
    return [(r.stage, tuple(r.inputs[str(k)] for k in range(len(r.inputs))), r.ref.hash) for _, r in ops]


def first_op_difference(store: Store, a: RunManifest, b: RunManifest) -> dict:
    """The first event of `align_ops` on the two traces, with the numbers of a differing output."""
    found = align_ops(trace(a), trace(b), store.get(a, "params") if "params" in a.artifacts else None)
    if found["kind"] == "equal inputs, different output":
        i, j = found["index"], found["other_index"]
        r = compare(found["op"], store.get(a, f"op/{i}"), store.get(b, f"op/{j}"))
        found.update(shape=r.shape, dtype=r.dtype, mismatches=r.mismatches, numel=r.numel, max_abs=r.max_abs,
                     max_ulp=r.max_ulp, max_ulp_scaled=r.max_ulp_scaled)
    return found


@dataclass(frozen=True)
class ModuleRow:
    """One module's output, both environments, all probe batches pooled."""

    module: str
    mismatches: int
    numel: int
    max_abs: float
    max_ulp: int  # bit distance
    batches_differing: list[int]
    only_in: str | None = None  # the drill run it ran in, when it ran in one environment only


@dataclass(frozen=True)
class BatchRow:
    """The model's final output (`colbert.doc`) on one probe batch."""

    batch: int
    bsize: int
    size: int  # passages in the batch
    padded_len: int
    mismatches: int
    numel: int
    max_abs: float


@dataclass(frozen=True)
class ModuleDrill:
    """task=drill's module result: per module in execution order, and per batch."""

    source: str
    target: str
    rows: list[ModuleRow]
    batches: list[BatchRow]
    # the commands of the next step, each as run_in_hint spells it in its run's environment: the source's
    # operation trace of the first differing module, then the comparison (None: named in words)
    next_steps: tuple[str, str] | None = None
    # why a recording may not stand for its run (made with force=true in another environment); empty when none
    warnings: tuple[str, ...] = ()

    @property
    def first(self) -> ModuleRow | None:
        return next((r for r in self.rows if r.mismatches), None)

    @property
    def verdict(self) -> str:
        s, t, first = self.source, self.target, self.first
        if first is None:
            text = f"All {len(self.rows)} module outputs are bitwise equal between {s} and {t} on the probe passages."
        else:
            text = (f"The first module whose output differs between {s} and {t} is `{first.module}` "
                    f"({first.mismatches:,} of {first.numel:,} elements, max abs {proof.num(first.max_abs)}, "
                    f"max ULP {first.max_ulp:,} (bits)); every module before it is bitwise equal. Its operations: ")
            if self.next_steps and not self.next_steps[0]:
                text += (f"{s}'s are recorded in the store (`{ops_label(s, first.module)}`): run "
                         f"{self.next_steps[1]} in {t}'s environment.")
            elif self.next_steps:
                text += f"run {self.next_steps[0]} in {s}'s environment, then {self.next_steps[1]} in {t}'s."
            else:
                text += (f"`python -m colbert_swap task=drill run={s} module={first.module}` in {s}'s environment, "
                         f"then `task=drill source={s} target={t} module={first.module}`.")
            differing = [b for b in self.batches if b.mismatches]
            lengths = sorted({b.padded_len for b in differing})
            same = sorted({b.padded_len for b in self.batches if not b.mismatches})
            text += (f" The final output differs in batches of padded length {lengths} ({_batch_sizes(differing)})"
                     + (f" and is equal in batches of padded length {same}." if same else ".")) if lengths else ""
        only = [f"`{r.module}` (only in {r.only_in})" for r in self.rows if r.only_in]
        return text + (f" Modules that ran in one environment only: {', '.join(only[:4])}." if only else "")


def _batch_sizes(batches: list[BatchRow]) -> str:
    """'batches of 8 passages; batch size setting 32': the passages each batch that ran held (a call of fewer
    probes than the setting runs one smaller batch), then the setting they were cut with (index_bsize)."""
    sizes = sorted({b.size for b in batches}, reverse=True)
    settings = sorted({b.bsize for b in batches})
    held = ", ".join(map(str, sizes[:-1])) + f" or {sizes[-1]}" if len(sizes) > 1 else str(sizes[0])
    return (f"batches of {held} passage{'s' if sizes != [1] else ''}; batch size setting"
            f"{'s' if len(settings) > 1 else ''} {', '.join(map(str, settings))}")


def compare_drills(store: Store, a: RunManifest, b: RunManifest) -> ModuleDrill:
    """Per module (execution order, all batches pooled) and per batch (the model's final output)."""
    batches = store.get(a, "batches")
    if batches != store.get(b, "batches"):
        raise UserError(f"drill captures {a.label!r} and {b.label!r} batched their probes differently")
    modules = [n.split("/", 1)[1] for n in a.artifacts if n.startswith("0/")]
    modules += [n.split("/", 1)[1] for n in b.artifacts if n.startswith("0/") and n.split("/", 1)[1] not in modules]
    rows = []
    for module in modules:
        only = [m.label for m in (a, b) if f"0/{module}" in m.artifacts]
        if len(only) == 1:  # the module ran in one environment only (e.g. eager attention's dropout)
            rows.append(ModuleRow(module, 0, 0, 0.0, 0, [], only[0]))
            continue
        results = [compare(module, store.get(a, f"{i['batch']}/{module}"), store.get(b, f"{i['batch']}/{module}"))
                   for i in batches]
        rows.append(ModuleRow(module, sum(r.mismatches for r in results), sum(r.numel for r in results),
                              max(r.max_abs or 0 for r in results), max(r.max_ulp or 0 for r in results),
                              [i["batch"] for i, r in zip(batches, results) if not r.same]))
    per_batch = []
    for info in batches:
        r = compare(DOC, store.get(a, f"{info['batch']}/{DOC}"), store.get(b, f"{info['batch']}/{DOC}"))
        per_batch.append(BatchRow(info["batch"], info["bsize"], info["size"], info["padded_len"], r.mismatches,
                                  r.numel, r.max_abs or 0.0))
    return ModuleDrill(a.origin.run, b.origin.run, rows, per_batch)


@dataclass(frozen=True)
class DrillData(ReportData):
    """report.json of task=drill source=A: the two runs' module outputs on the same probe passages."""

    source: str
    target: str
    injected: list[str]
    """Always empty (a key every comparing report has)."""
    root_cause: list[str]
    """Always empty (a key every comparing report has)."""
    first_module: str | None
    """The first module, in execution order, whose output differs; null when none does."""
    modules: list[dict]
    """Per module, in execution order: its output compared (ModuleRow: module, mismatches, numel, max_abs, ...)."""
    batches: list[dict]
    """Per probe batch: the final output (`colbert.doc`) compared, with its size and padded length (BatchRow)."""
    next_steps: list[str]
    """The commands that drill the first differing module to its operations: the source's trace, then the comparison."""
    warnings: list[str]
    """Why a recording may not stand for its run (made with force=true in another environment); empty when none."""
    artifacts: dict
    """Always empty: the drill compares recordings, not the runs' artifacts."""
    plots: list[str]
    """The figures beside report.md (divergence per layer, per padded length)."""


def _recordings(cfg, store: Store, progress) -> tuple[RunManifest, RunManifest, RunManifest, list[str]]:
    """The source run, the target run, the source's drill recording (checked: there, made in the source's
    environment, and its operation trace where module= asks) and the warnings of force=true."""
    source = source_run(cfg, store)
    target_run = store.load(target_label(cfg))
    s, t = source.label, target_run.label
    if not store.has_run(drill_label(s)):
        raise UserError(f"run {s!r} has no drill capture: run {run_in_hint(source, drill_args(cfg, f'run={s}'), cfg)} "
                        f"in {s}'s environment first")
    a = store.load(drill_label(s))
    warnings = [stale_refusal(cfg, source, a, drill_args(cfg, f"run={s}"))]
    if cfg.drill.module:
        if not store.has_run(ops_label(s, cfg.drill.module)):
            raise UserError(f"run {s!r} has no operation trace of {cfg.drill.module}: run "
                            f"{run_in_hint(source, drill_args(cfg, f'run={s}'), cfg)} in {s}'s environment first")
        warnings.append(stale_refusal(cfg, source, store.load(ops_label(s, cfg.drill.module)),
                                      drill_args(cfg, f"run={s}")))
    warnings.append(environment_refusal(cfg, target_run, drill_args(cfg, f"source={s}", f"target={t}"),
                                        f"the drill capture of {t!r} (the target)"))
    warnings = [w for w in warnings if w]
    for warning in warnings:
        progress(f"warning: {warning}")
    return source, target_run, a, warnings


def drill(cfg, store: Store, progress=None) -> ModuleDrill:
    """task=drill source=A target=B (without module=): the target's module outputs recorded here on the probes
    of A's recording, compared module by module; `.next_steps` name the operation traces to record next."""
    progress = progress or progress_printer()
    source, target_run, a, warnings = _recordings(cfg, store, progress)
    s, t = source.label, target_run.label
    target = capture_drill(cfg, store, target_run, progress, probes=a.origin.probes, bsizes=list(a.origin.bsizes))
    result = replace(compare_drills(store, a, target), warnings=tuple(warnings))
    if result.first:
        label = ops_label(s, result.first.module)  # recorded in the source's environment (there, or brought here)
        recorded = store.has_run(label) and recorded_in_run_environment(source, store.load(label))
        result = replace(result, next_steps=(
            "" if recorded else run_in_hint(source, drill_args(cfg, f"run={s}", module=result.first.module), cfg),
            run_in_hint(target_run, drill_args(cfg, f"source={s}", f"target={t}", module=result.first.module), cfg)))
    return result


def run(cfg) -> int:
    store = Store(cfg.store.root)
    progress = progress_printer()
    if not cfg.source:
        return _capture_only(cfg, store, progress)
    if cfg.drill.module:
        source, target_run, a, warnings = _recordings(cfg, store, progress)
        capture_drill(cfg, store, target_run, progress, probes=a.origin.probes, bsizes=list(a.origin.bsizes))
        return _run_ops(cfg, store, source, target_run, a.origin.probes, list(a.origin.bsizes), progress, warnings)
    result = drill(cfg, store, progress)
    source, warnings = store.load(result.source), list(result.warnings)
    folder = proof.out_dir(cfg, "drill")
    figures = [p.name for p in (plots.divergence_per_layer(result.rows, folder / "layers.png"),
                                plots.divergence_per_padded_length(result.batches, folder / "padded_lengths.png")) if p]
    modules = table(["module", "mismatches", "max abs", "max ULP (bits)", "batches differing"],
                    [[f"`{r.module}`", f"only in {r.only_in}" if r.only_in else f"{r.mismatches:,} / {r.numel:,}",
                      proof.num(r.max_abs), f"{r.max_ulp:,}", ",".join(map(str, r.batches_differing))]
                     for r in result.rows])
    batches = table(["batch", "batch size (index_bsize)", "passages in the batch", "padded length", "mismatches",
                     "max abs"], [[b.batch, b.bsize, b.size, b.padded_len, f"{b.mismatches:,} / {b.numel:,}",
                                   proof.num(b.max_abs)] for b in result.batches])
    report = Report("drill", f"drill: {result.source} vs {result.target}", _warned(result.verdict, warnings),
                    ["## Modules, in execution order\n\n" + modules, "## Final output per batch\n\n" + batches],
                    DrillData(source=result.source, target=result.target, injected=[], root_cause=[],
                              first_module=result.first.module if result.first else None,
                              modules=[asdict(r) for r in result.rows], batches=[asdict(b) for b in result.batches],
                              next_steps=list(result.next_steps or []), warnings=warnings,
                              artifacts={}, plots=figures), [source, store.load(result.target)], figures)
    return finish(folder, report)


def _warned(verdict: str, warnings: list[str]) -> str:
    """The verdict, after the warnings of a drill made with force=true in another environment than its run's."""
    return " ".join([*(f"Warning: {w[0].upper()}{w[1:]}" for w in warnings), verdict])


@dataclass(frozen=True)
class DrillCaptureData(ReportData):
    """report.json of task=drill run=A: A's drill capture (and with module=, its operation trace)."""

    run: str
    captures: list[str]
    """The labels of the recordings made or reused (`A+drill`, `A+ops.MODULE`)."""
    recorded_in: str
    """The environment id the drill capture was made in."""
    warnings: list[str]
    """Why the recording may not stand for its run (made with force=true in another environment); empty when none."""


def _capture_only(cfg, store: Store, progress) -> int:
    """`task=drill run=A` (in A's environment): A's module outputs, and with module= its operations."""
    run_ = store.load(str(cfg.run or target_label(cfg)))
    warning = environment_refusal(cfg, run_, drill_args(cfg, f"run={run_.label}"),
                                  f"the drill capture of {run_.label!r}")
    if warning:
        progress(f"warning: {warning}")
    manifest = capture_drill(cfg, store, run_, progress)
    lines = [f"drill capture {manifest.label!r}: {len(manifest.artifacts) - 1} module outputs stored"]
    runs = [manifest]
    if cfg.drill.module:
        ops = capture_ops(cfg, store, run_, cfg.drill.module, manifest.origin.probes, list(manifest.origin.bsizes),
                          progress)
        lines.append(f"operation trace {ops.label!r}: {len(ops.artifacts) - 2} aten operations inside {cfg.drill.module}")
        runs.append(ops)
    verdict = "; ".join(lines) + f". Next, {_next_hint(cfg, store, run_)}"
    report = Report("drill", f"drill capture {run_.label}", _warned(verdict, [warning] if warning else []), runs=runs,
                    data=DrillCaptureData(run=run_.label, captures=[r.label for r in runs],
                                          recorded_in=manifest.origin.env, warnings=[warning] if warning else []))
    return finish(proof.out_dir(cfg, "drill"), report)


def _next_hint(cfg, store: Store, run_: RunManifest) -> str:
    """The comparison to run next, in the environment of the run to compare with: `target=` when given,
    else the complete captures of the same config computed in another environment (two at most)."""
    s = run_.label
    if cfg.target and str(cfg.target) != s and store.has_run(str(cfg.target)):
        others = [store.load(str(cfg.target))]
    else:
        others = []
        for label in store.runs():
            if label == s or "+" in label or len(others) == 2:
                continue
            try:
                other = store.load(label)
                if (other.complete and other.origin.kind == "capture" and other.config_hash == run_.config_hash
                        and changed_keys(encoder_environment(run_), encoder_environment(other))):
                    others.append(other)
            except Exception:  # noqa: BLE001 - a run being written, or a damaged one: not a candidate
                continue
    if not others:
        return (f"in the environment of the run to compare it with (OTHER; its variables and interpreter as it "
                f"was captured): `python -m colbert_swap {' '.join(drill_args(cfg, f'source={s}', 'target=OTHER'))}`")
    return "; or ".join(f"in {o.label}'s environment: "
                        f"{run_in_hint(o, drill_args(cfg, f'source={s}', f'target={o.label}'), cfg)}" for o in others)


def op_verdict(module: str, s: str, t: str, found: dict) -> str:
    """What the aligned operation traces of `module` say, in a sentence or two."""
    where = f"Inside `{module}`" if module != DOC else f"In the functional steps of `{DOC}` (outside `bert` and `linear`)"
    agree = found.get("agreeing_before")
    before = f" after {agree} operations that agree" if agree else ""
    if found["index"] is None:
        return (f"{where}, all {found['ops']} aten operations of {s} have a counterpart in {t} with bitwise equal "
                f"inputs and outputs ({found['unmatched_other']} of {t}'s {found['other_ops']} have none).")
    if found["kind"] == "equal inputs, different output":
        return (f"{where}, operation {found['index']} `{found['op']}` ({found['dtype']} {found['shape']}) gets bitwise "
                f"equal inputs in {s} and {t}{before} and gives different outputs ({found['mismatches']:,} of "
                f"{found['numel']:,} elements, max abs {proof.num(found['max_abs'])}, max ULP "
                f"{found['max_ulp']:,} (bits), {proof.num(found['max_ulp_scaled'])} at scale): the kernel itself "
                "differs between the environments.")
    if found["kind"] == "same operation, different inputs":
        named = found["parameters_differing"]
        why = (f"the parameter{'s' if len(named) > 1 else ''} {', '.join(f'`{n}`' for n in named)} differ"
               f"{'' if len(named) > 1 else 's'} between the environments (other weights)" if named
               else f"input{'s' if len(found['inputs_differing']) > 1 else ''} "
                    f"{', '.join(map(str, found['inputs_differing']))} differ (computed before the module, or by an "
                    "operation that ran on one side only)")
        return (f"{where}, operation {found['index']} `{found['op']}` runs in both{before} on different inputs: {why}.")
    return f"{where}, {s} and {t} run different operations{before}: {_spans(found, s, t)}"


def _spans(found: dict, s: str, t: str) -> str:
    """'S computes `a`, `b` (ops 9-11, with 2 views or copies) where T computes ...: another implementation'."""

    def side(who: str, ops: list[str], computing: list[str], start: int | None) -> str:
        if not ops:
            return f"{who} runs nothing"
        where = f"ops {start}-{start + len(ops) - 1}" if len(ops) > 1 else f"op {start}"
        views = len(ops) - len(computing)
        if not computing:
            return f"{who} only views or copies: {quoted(ops)} ({where})"
        return (f"{who} computes {quoted(computing)} ({where}"
                + (f", with {views} view{'s' if views > 1 else ''} or cop{'ies' if views > 1 else 'y'})" if views
                   else ")"))

    same = " on inputs both traces hold" if found.get("inputs_in_other") else ""
    return (f"{side(s, found['span'], found.get('computing', found['span']), found['index'])} where "
            f"{side(t, found['other_span'], found.get('other_computing', found['other_span']), found['other_index'])}"
            f"{same}: another implementation of the same step, not another kernel result.")


@dataclass(frozen=True)
class OpsDrillData(ReportData):
    """report.json of task=drill source=A module=M: the aten operations inside M, traced in both environments."""

    source: str
    target: str
    module: str
    """The module whose operations were traced (drill.module)."""
    injected: list[str]
    """Always empty (a key every comparing report has)."""
    root_cause: list[str]
    """Always empty (a key every comparing report has)."""
    first_op: dict
    """The first event of the aligned traces: its kind, operation, index, and numbers (study.drill.align_ops)."""
    contexts: list[dict]
    """What decided which kernels ran (device, attention, autocast, CPU capability, ...): the source's, the target's."""
    warnings: list[str]
    """Why a recording may not stand for its run (made with force=true in another environment); empty when none."""
    artifacts: dict
    """Always empty: the drill compares recordings, not the runs' artifacts."""


def _run_ops(cfg, store: Store, source: RunManifest, target: RunManifest, probes: int, bsizes: list[int],
             progress, warnings: list[str] = ()) -> int:
    """The source's operation trace of `module` (checked by `run`: there, and made in the source's environment)
    against the target's, recorded here."""
    a = store.load(ops_label(source.label, cfg.drill.module))
    b = capture_ops(cfg, store, target, cfg.drill.module, probes, bsizes, progress)
    found = first_op_difference(store, a, b)
    s, t = source.label, target.label
    contexts = [a.origin.context, b.origin.context]
    report = Report("drill", f"drill {cfg.drill.module}: {s} vs {t}, aten operations",
                    _warned(op_verdict(cfg.drill.module, s, t, found), list(warnings)),
                    ["## Kernel context\n\n" + table(["", s, t], [[k, contexts[0].get(k), contexts[1].get(k)]
                                                                    for k in contexts[0]]),
                     environments_section(source, target)],
                    OpsDrillData(source=s, target=t, module=cfg.drill.module, injected=[], root_cause=[],
                                 first_op=found, contexts=contexts, warnings=list(warnings), artifacts={}), [a, b])
    return finish(proof.out_dir(cfg, "drill"), report)
