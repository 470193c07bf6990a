"""task=drill: from "this stage diverges" to "this module diverges".

    python -m colbert_swap task=drill run=2.0.1              # in 2.0.1's environment: its drill capture
    python -m colbert_swap task=drill source=2.0.1           # here: this run's drill capture, then compare

Each environment records its own model's module outputs on the same probe passages (stored as run
`<run>+drill`); the report names the first module, in execution order, whose output differs, with
per-module numbers and the divergence per batch (size and padded length).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from omegaconf import OmegaConf

from colbert_swap import colbert_env
from colbert_swap.compare.comparators import compare
from colbert_swap.drill import DOC, align_ops, kernel_context, module_outputs, op_trace, probe_passages, quoted
from colbert_swap.errors import UserError
from colbert_swap.report import plots, proof
from colbert_swap.resources import Resources
from colbert_swap.report.report import Report
from colbert_swap.report.tables import table
from colbert_swap.store import RunManifest, Store
from colbert_swap.store.origin import Drill, Ops
from colbert_swap.store.run import open_run
from colbert_swap.tasks.common import environments_section, finish, progress_printer, source_run, target_label


def drill_label(run: str) -> str:
    return f"{run}+drill"


def _probing(cfg, store: Store, run: RunManifest, probes: int):
    """`run`'s config in this environment, its resources, and its probe passages. colbert-ai's chatter goes
    to the drilled run's own log, so a drill that fails leaves no folder behind."""
    here = OmegaConf.merge(cfg, run.config)
    resources = Resources(here, store, store.run_dir(run.label))
    return here, resources, probe_passages(resources.corpus.passages, probes)


def capture_drill(cfg, store: Store, run: RunManifest, progress, probes: int | None = None,
                  bsizes: list[int] | None = None) -> RunManifest:
    """Module outputs of `run`'s model in this environment (with `run`'s own config and perturb knobs)."""
    here, resources, passages = _probing(cfg, store, run, probes or cfg.drill.probes)
    bsizes = list(bsizes or cfg.drill.bsizes or [resources.colbert_config.index_bsize])
    origin = Drill(run.label, len(passages), tuple(bsizes))
    with open_run(store, drill_label(run.label), origin, run.config, run.config_hash, resume=False) as writer:
        if writer.done:
            return writer.manifest
        progress(f"recording every module's output for {len(passages)} probe passages of run {run.label!r}")
        with colbert_env.quiet(resources.log), torch.inference_mode(), colbert_env.perturbed(here.perturb):
            outputs, batches = module_outputs(resources.checkpoint, passages, bsizes)
        for name, tensor in outputs.items():
            writer.put(name, tensor, stage="drill")
        writer.put("batches", batches, stage="drill")
        return writer.finish()


def capture_ops(cfg, store: Store, run: RunManifest, module: str, probes: int, bsizes: list[int],
                progress) -> RunManifest:
    """The aten operations inside `module` for `run`'s probes, recorded in this environment on the very
    batches of the module drill (`bsizes`)."""
    here, resources, passages = _probing(cfg, store, run, probes)
    origin = Ops(run.label, module, len(passages), tuple(bsizes))
    with open_run(store, f"{run.label}+ops={module}", origin, run.config, run.config_hash, resume=False) as writer:
        if writer.done:
            return writer.manifest
        progress(f"recording the aten operations inside {module} for run {run.label!r}")
        with colbert_env.quiet(resources.log), torch.inference_mode(), colbert_env.perturbed(here.perturb):
            ops, params = op_trace(resources.checkpoint, passages, bsizes, module)
            context = kernel_context(resources.checkpoint, here.perturb.get("attn"))
        writer.manifest.origin = Ops(run.label, module, len(passages), tuple(bsizes), context)
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
                    f"max ULP {first.max_ulp:,} (bits)); every module before it is bitwise equal. Its operations: "
                    f"`python -m colbert_swap task=drill run={s} module={first.module}` in {s}'s environment, then "
                    f"`task=drill source={s} target={t} module={first.module}`.")
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


def run(cfg) -> int:
    store = Store(cfg.store.root)
    progress = progress_printer()
    if not cfg.source:
        return _capture_only(cfg, store, progress)
    source = source_run(cfg, store)
    if not store.has_run(drill_label(source.label)):
        raise UserError(f"run {source.label!r} has no drill capture: run `python -m colbert_swap task=drill "
                        f"run={source.label}` in {source.label}'s environment first")
    a = store.load(drill_label(source.label))
    target = capture_drill(cfg, store, store.load(target_label(cfg)), progress, probes=a.origin.probes,
                           bsizes=list(a.origin.bsizes))
    if cfg.drill.module:
        return _run_ops(cfg, store, source, store.load(target_label(cfg)), a.origin.probes, list(a.origin.bsizes),
                        progress)
    result = compare_drills(store, a, target)
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
    report = Report("drill", f"drill: {result.source} vs {result.target}", result.verdict,
                    ["## Modules, in execution order\n\n" + modules, "## Final output per batch\n\n" + batches],
                    {"source": result.source, "target": result.target, "injected": [], "root_cause": [],
                     "first_module": result.first.module if result.first else None,
                     "modules": [asdict(r) for r in result.rows], "batches": [asdict(b) for b in result.batches],
                     "artifacts": {}, "plots": figures}, [source, store.load(result.target)], figures)
    return finish(folder, report)


def _capture_only(cfg, store: Store, progress) -> int:
    """`task=drill run=A` (in A's environment): A's module outputs, and with module= its operations."""
    manifest = capture_drill(cfg, store, store.load(str(cfg.run or target_label(cfg))), progress)
    lines = [f"drill capture {manifest.label!r}: {len(manifest.artifacts) - 1} module outputs stored"]
    runs = [manifest]
    if cfg.drill.module:
        ops = capture_ops(cfg, store, store.load(manifest.origin.run), cfg.drill.module, manifest.origin.probes,
                          list(manifest.origin.bsizes), progress)
        lines.append(f"operation trace {ops.label!r}: {len(ops.artifacts) - 2} aten operations inside {cfg.drill.module}")
        runs.append(ops)
    module = f" module={cfg.drill.module}" if cfg.drill.module else ""
    verdict = "; ".join(lines) + (f". Next, in the other environment: `python -m colbert_swap task=drill "
                                  f"source={manifest.origin.run}{module}`")
    report = Report("drill", f"drill capture {manifest.origin.run}", verdict, runs=runs,
                    data={"run": manifest.origin.run, "captures": [r.label for r in runs]})
    return finish(proof.out_dir(cfg, "drill"), report)


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


def _run_ops(cfg, store: Store, source: RunManifest, target: RunManifest, probes: int, bsizes: list[int],
             progress) -> int:
    label = f"{source.label}+ops={cfg.drill.module}"
    if not store.has_run(label):
        raise UserError(f"run {source.label!r} has no operation trace of {cfg.drill.module}: run `python -m colbert_swap "
                        f"task=drill run={source.label} module={cfg.drill.module}` in {source.label}'s environment first")
    a, b = store.load(label), capture_ops(cfg, store, target, cfg.drill.module, probes, bsizes, progress)
    found = first_op_difference(store, a, b)
    s, t = source.label, target.label
    contexts = [a.origin.context, b.origin.context]
    report = Report("drill", f"drill {cfg.drill.module}: {s} vs {t}, aten operations", op_verdict(cfg.drill.module, s, t, found),
                    ["## Kernel context\n\n" + table(["", s, t], [[k, contexts[0].get(k), contexts[1].get(k)]
                                                                    for k in contexts[0]]),
                     environments_section(source, target)],
                    {"source": s, "target": t, "module": cfg.drill.module, "injected": [], "root_cause": [],
                     "first_op": found, "contexts": contexts, "artifacts": {}}, [a, b])
    return finish(proof.out_dir(cfg, "drill"), report)
