"""task=matrix envs=[A,B,C,...]: capture one config in every environment, compare each adjacent pair, locate
the root cause of every pair that differs (in the later environment of the pair), drill each encoder change
to the module and the operation (each side in its own environment), and give the compatibility verdict.

    python -m colbert_swap task=matrix envs=torch env_cache=/work/envcache         # a whole axis of axes.yaml
    python -m colbert_swap task=matrix envs=[torch-2.0.1,torch-2.1.0,torch-2.13.0] reference=torch-2.0.1

`envs=` takes spec names of conf/env/, axis names of conf/env/axes.yaml (`torch`, `transformers`, `faiss`,
`numpy`: every spec of the axis, in order) or both. `reference=` (default: the first environment) is the
environment the compatibility table compares every other with: index identical / index differs (the data
of colbert-ai's index files; a file that differs only in the config it records does not count), and the
change that made each environment differ from the one before it. Each pair's locate and drill reports are
linked from report.md; they are kept in STORE/matrix/<a>-vs-<b>/ and reused while the runs stay the same,
so the same command continues where a stopped matrix left off.

`matrix.parity=true` runs task=parity in each environment after its capture (colbert-ai's own Indexer there,
on the same checkpoint, collection and config): every row of the table says `parity: identical`, the files that
differ, `not compared: why` (a perturbed run, another k-means) or `failed: why`, and no verdict is given for an
environment where our capture differs from the Indexer's or could not be checked (the study is then incomplete).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from colbert_swap.study.compatibility import Skipped, Verdict, packages_text, verdict
from colbert_swap.errors import UserError
from colbert_swap.colbert.index_files import run_index_differences
from colbert_swap.study.matrix import Pair, Study, adjacent, cause_text, differing_text, env_steps, expand_envs
from colbert_swap.runs.search import retrieval_between
from colbert_swap.proof.report import proof
from colbert_swap.proof.report.tables import table
from colbert_swap.core.store import Store
from colbert_swap.tasks.common import progress_printer
from colbert_swap.proof.report.report import Report, ReportData
from colbert_swap.tasks.common import environments_section, finish
from colbert_swap.colbert.plan import plan

PAIR_HEADERS = ["pair", "index files", "retrieval", "artifacts that differ", "first divergence", "root cause",
                "module / op", "packages that differ"]
LINKS = {"locate": "locate", "drill": "module drill", "ops": "op drill"}


def pairs_table(study: Study, pairs: list[Pair], skipped: tuple[Skipped, ...] = ()) -> str:
    rows = [[f"{p.a} -> {p.b}", f"not compared: {p.why}", *["-"] * (len(PAIR_HEADERS) - 2)] for p in skipped]
    for p in pairs:
        chunks = plan(study.store, study.store.load(p.b)).num_chunks
        first = ", ".join(f"`{n}`" for n in p.comparison.first_diverged()[:3]) or "-"
        rows.append([f"{p.a} -> {p.b}", "changed" if p.index_changed else "same",
                     p.retrieval.short() if p.retrieval else "not compared", differing_text(p, chunks), first,
                     cause_text(p), drill_text(p), packages_text(p.packages)])
    return table(PAIR_HEADERS, rows)


def drill_text(pair: Pair) -> str:
    """The module / op cell of a pair: what the drill found, or why there is none."""
    if not pair.differing:
        return "-"
    if pair.drill is not None:
        d = pair.drill
        return d.error or ("no module output differs" if d.module is None else
                           f"`{d.module}` / " + (f"`{d.op.op}` ({d.op.kind})" if d.op and d.op.op else "no op differs"))
    if pair.locate is None:
        return "not drilled (not located)"
    return "not drilled (root cause outside the encoder)"


def pair_section(p: Pair) -> list[str]:
    """A pair's locate verdict, what the drills found, and links to each report (relative to report.md)."""
    lines = [f"## {p.a} -> {p.b}"]
    if p.locate:
        lines.append(p.locate.get("verdict", ""))
    lines += [f"Drill: {p.drill.text()}." if p.drill else "", _unintended(p)]
    links = [f"[{LINKS.get(s.name, s.name)}]({p.folder}/{s.name}/report.md)" + (" (kept from an earlier run)"
                                                                             if s.reused else "")
             for s in p.steps if s.ok and s.name in LINKS]
    failed = [f"`{s.command}` in {s.env} failed (exit {s.returncode}): [log]({p.folder}/{s.name}.log)"
              for s in p.steps if not s.ok]
    lines += ["Reports: " + ", ".join(links) + "." if links else "", *failed]
    return [x for x in lines if x]


def _unintended(p: Pair) -> str:
    extra = p.change().unintended
    return (f"Besides {', '.join(p.intended)}, {p.b}'s environment moves {packages_text(extra, 8)}: the change "
            "cannot be pinned on the intended package alone." if extra else "")


def compatibility(study: Study, done: list[str], pairs: list[Pair], reference: str,
                  skipped: tuple[Skipped, ...] = ()) -> Verdict:
    """The verdict against `reference`; when it was not captured, against the first environment that was (the
    stand-in, named as such)."""
    store = study.store
    against, retrieval = {}, {}
    stand_in = reference if reference in done else (done[0] if done else None)
    if stand_in is not None:
        ref = store.load(stand_in)
        for e in done:
            against[e] = run_index_differences(store, ref, store.load(e))
            found = retrieval_between(study.cfg, store, ref, store.load(e))
            retrieval[e] = found.short() if found else None
    return verdict(study.names, stand_in or reference, against, {p.b: p.change() for p in pairs}, study.failures,
                   retrieval, skipped, asked=reference if stand_in not in (None, reference) else None,
                   parity=study.parity if study.cfg.matrix.parity else None)


def compare_pairs(study: Study, asked: list[tuple[str, str]], done: list[str], folder) -> tuple[list[Pair],
                                                                                                 tuple[Skipped, ...]]:
    """Every adjacent pair asked for: compared (a pair over an environment that was not captured compares its
    captured neighbours instead), or listed as not compared with the reason. A comparison that fails is one
    pair not compared, never the end of the study."""
    skipped = [Skipped(a, b, "; ".join(f"{n} was not captured: {study.failures[n].line()}"
                                       for n in (a, b) if n in study.failures))
               for a, b in asked if a in study.failures or b in study.failures]
    pairs, memo = [], {}
    for a, b in adjacent(asked, done):
        try:
            pairs.append(study.pair(a, b, folder, memo))
        except (UserError, OSError, ValueError, KeyError) as exc:
            study.progress(f"{a} -> {b}: not compared: {type(exc).__name__}: {exc}")
            skipped.append(Skipped(a, b, f"the comparison failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"))
    return pairs, tuple(skipped)


def failures_section(study: Study) -> str:
    """Each environment that could not be captured: what failed, why, what to do, and the log's last lines."""
    blocks = []
    for name, f in study.failures.items():
        tail = "\n".join(f"    {line}" for line in f.tail.splitlines())
        blocks.append(f"- `{name}`: {f.line()}. {f.advice()}" + (f"\n\n{tail}\n" if tail else ""))
    return ("## Environments that could not be captured\n\n" + "\n".join(blocks) +
            "\n\nTheir runs are missing from the table, and every pair with them is listed as not compared.")


@dataclass(frozen=True)
class MatrixData(ReportData):
    """report.json of task=matrix envs=[...]: one config captured in every environment, adjacent pairs compared."""

    envs: list[str]
    """The environments, in the order asked (axes expanded)."""
    reference: str
    """The environment the compatibility verdict compares every other with: the one asked, or its stand-in."""
    reference_asked: str
    """The reference asked for (reference=, else the first environment)."""
    captured: list[str]
    """The environments whose run was captured."""
    failures: dict[str, dict]
    """Environment -> why it could not be captured (env.failure.EnvFailure.to_json)."""
    complete: bool
    """True when every environment was captured and every adjacent pair compared."""
    pairs: list[dict]
    """Per adjacent pair compared: what differs, its root cause, module and op, packages (study.matrix.Pair)."""
    not_compared: list[dict]
    """The adjacent pairs asked for and not compared: a, b, why."""
    compatibility: dict
    """The compatibility verdict against the reference, per environment (study.compatibility.Verdict); with
    matrix.parity=true each captured row's `parity` is task=parity there (status: identical | differs | not
    compared | failed, detail, files) and a row whose parity differs or failed has index `no verdict`."""


def run(cfg) -> int:
    envs = expand_envs(cfg.matrix.envs)
    if len(envs) < 2:
        raise UserError("task=matrix needs envs=[A,B,...] with at least two specs from conf/env/ (or an axis of "
                        "conf/env/axes.yaml: envs=torch)")
    progress = progress_printer()
    store = Store(cfg.store.root)
    study = Study(cfg, store, envs, progress)
    reference = study.reference()
    for name in study.names:
        if study.capture(name) and cfg.matrix.parity:
            study.check_parity(name)
    done = [n for n in study.names if n not in study.failures]
    folder = proof.out_dir(cfg, "matrix")
    pairs, skipped = compare_pairs(study, env_steps(cfg.matrix.envs), done, folder)
    result = compatibility(study, done, pairs, reference, skipped)
    runs = [store.load(n) for n in done]
    sections = [f"## Compatibility against {result.reference}\n\n" + result.table(),
                "## Adjacent pairs\n\n" + pairs_table(study, pairs, skipped)]
    if study.failures:
        sections.append(failures_section(study))
    sections += [environments_section(*runs)] if runs else []
    sections += ["\n\n".join(pair_section(p)) for p in pairs if p.differing]
    finish(folder, Report("matrix", f"matrix: {' -> '.join(study.names)}", result.summary, sections, MatrixData(
        envs=study.names, reference=result.reference, reference_asked=reference, captured=done,
        failures={n: f.to_json() for n, f in study.failures.items()}, complete=result.complete,
        pairs=[p.to_json() for p in pairs], not_compared=[asdict(s) for s in skipped],
        compatibility=result.to_json()), runs))
    return 0 if result.complete else 1
