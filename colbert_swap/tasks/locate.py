"""task=locate: find the smallest set of injected tensors that explains all divergence.

    python -m colbert_swap task=locate source=2.0.1

Round by round: compare the (replayed) target with the source, inject the first diverging artifacts
(every output of that stage, every chunk), replay, repeat until nothing downstream differs. Then drop
each injected group whose removal still leaves nothing different: what remains is minimal.

Then each root-cause stage runs again here on the target's and on the source's own inputs (where that run was
computed in this environment, or in one that differs only in its thread counts): a stage that does not
reproduce the outputs the run recorded is named noise, not a cause, in the verdict and in report.json's
`noise` (`root_cause` still lists what the injection explains); a run computed elsewhere is named unchecked.
`locate.noise_check=false` turns the check off; `task=determinism` checks every stage of a run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from colbert_swap.proof.compare.comparators import Status
from colbert_swap.proof.compare.runs import (RunComparison, WholeRun, check_comparable, compare_runs, inputs_sentence,
                                             whole_run)
from colbert_swap.study.determinism import PROCESSES, REPRODUCIBLE, RUN_TO_RUN, THREADS, NoiseCheck, locate_checks
from colbert_swap.errors import UserError
from colbert_swap.proof.report import proof
from colbert_swap.proof.report.meaning import meaning
from colbert_swap.proof.report.report import Report, ReportData
from colbert_swap.proof.report.tables import table
from colbert_swap.runs.replay import compact, options, replay
from colbert_swap.colbert.stages import DAG
from colbert_swap.core.store import RunManifest, Store
from colbert_swap.tasks.common import environments_section, finish, progress_printer, source_run, tolerance
from colbert_swap.tasks.inject import ensure_target
from colbert_swap.colbert.plan import plan
from colbert_swap.core.dag import template


def _groups(names: list[str]) -> list[list[str]]:
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(DAG.producer(n).name, []).append(n)
    return list(groups.values())


@dataclass(frozen=True)
class Round:
    round: int
    run: str  # the run compared with the source in this round
    diverged: int  # artifacts that differ from the source's
    inject: list[str]  # what is injected next (compact names)


@dataclass(frozen=True)
class Location:
    """task=locate's result: the rounds, the minimal set of injected groups, and the final replay."""

    source: RunManifest
    target: RunManifest
    before: RunComparison  # source vs target
    rounds: list[Round]
    minimal: list[list[str]]  # groups (the outputs of one stage, every chunk) whose injection explains all
    final: RunManifest  # the replay with the minimal set injected (the target when nothing differs)
    final_cmp: RunComparison  # final vs source, every artifact
    num_chunks: int
    whole: WholeRun  # final vs source as wholes, index files included
    goal: list[str] | None = None  # locate.target_artifact and its stage's other outputs: what must become equal
    noise_checks: tuple[NoiseCheck, ...] = ()  # each root-cause stage run again here on each run's own inputs

    @property
    def root_cause(self) -> list[str]:
        return [n for g in self.minimal for n in compact(g, self.num_chunks)]

    @property
    def verdict(self) -> str:
        """The sentence the report opens with (`verdict(result)`)."""
        return verdict(self)

    @property
    def noise(self) -> list[NoiseCheck]:
        """The checks of root-cause stages that did not reproduce their recorded outputs: noise, not a cause."""
        return [c for c in self.noise_checks if c.noise]

    def noisy(self, group: list[str]) -> list[NoiseCheck]:
        stage = DAG.producer(group[0]).name
        return [c for c in self.noise if c.stage == stage]

    @property
    def harmless(self) -> list[str]:
        """With a goal: the artifacts that still differ in the final replay, which the goal does not depend on
        (or does, without changing): differences that do not reach it."""
        return [n for n in self.final_cmp.diverged() if not self.goal or n not in self.goal]


def goal_of(cfg, store: Store, num_chunks: int, target: RunManifest) -> list[str] | None:
    """locate.target_artifact, as every output of the stage that makes it (ranked_pids: and ranked_scores)."""
    from colbert_swap.runs.replay import resolve

    name = cfg.locate.target_artifact
    if not name:
        return None
    names = resolve([str(name)], num_chunks, options(target))
    return [o for n in DAG.nodes(num_chunks, options=options(target)) for o in n.outputs if set(n.outputs) & set(names)]


def locate(cfg, store: Store, progress=None) -> Location:
    progress = progress or progress_printer()
    source = source_run(cfg, store)
    target = ensure_target(cfg, store, progress)
    check_comparable(source, target, cfg.force)
    num_chunks = plan(store, target).num_chunks
    goal = goal_of(cfg, store, num_chunks, target)
    if goal and any(DAG.phase_of(n) == "search" for n in goal):  # both runs searched, as each was made
        from colbert_swap.runs.search import ensure_searched

        source, target = (ensure_searched(cfg, store, r, progress) for r in (source, target))
    among = DAG.upstream_of(goal, num_chunks, options(target)) if goal else None  # only what the goal is computed from
    memo: dict = {}  # every pair of blobs is read and compared once over all rounds
    tol = tolerance(cfg)
    unexplained = (lambda c: [n for n in c.diverged() if n in goal]) if goal else (lambda c: c.diverged())  # noqa
    before = compare_runs(store, source, target, force=True, memo=memo, tol=tol, progress=progress)
    injected: list[str] = []
    current, comparison, rounds = target, compare_runs(store, target, source, force=True, memo=memo, tol=tol, progress=progress), []
    while unexplained(comparison):
        first = comparison.first_diverged(among)
        rounds.append(Round(len(rounds) + 1, current.label, len(comparison.diverged()), compact(first, num_chunks)))
        if any(n in injected for n in first):
            raise UserError(f"injecting {first} did not make them equal to the source; the store is inconsistent")
        injected += first
        progress(f"round {len(rounds)}: {proof.plural(len(comparison.diverged()), 'artifact')} "
                 f"{proof.differ(len(comparison.diverged()))}; injecting "
                 f"{', '.join(compact(first, num_chunks))}")
        current = replay(cfg, store, target, source, injected, progress=progress)
        comparison = compare_runs(store, current, source, force=True, memo=memo, tol=tol, progress=progress)
    rounds.append(Round(len(rounds) + 1, current.label, len(comparison.diverged()), []))
    minimal = _prune(cfg, store, source, target, _groups(injected), progress, memo, tol, unexplained)
    final = replay(cfg, store, target, source, [n for g in minimal for n in g], progress=progress) if minimal else target
    final_cmp = compare_runs(store, final, source, force=True, memo=memo, tol=tol, progress=progress)
    checks = ()
    if minimal and cfg.locate.get("noise_check", True):  # is a root-cause stage noise of an environment?
        checks = tuple(locate_checks(cfg, store, source, target, minimal, num_chunks, progress))
    return Location(source, target, before, rounds, minimal, final, final_cmp, num_chunks,
                    whole_run(store, final_cmp, final, source), goal, checks)


def _prune(cfg, store, source, target, groups: list[list[str]], progress, memo: dict, tol,
           unexplained) -> list[list[str]]:
    """Drop every group whose removal still leaves nothing unexplained (the whole run, or the goal)."""
    kept = list(groups)
    for group in list(groups):
        if len(kept) == 1:
            break
        trial = [n for g in kept if g is not group for n in g]
        run = replay(cfg, store, target, source, trial, progress=progress)
        if not unexplained(compare_runs(store, run, source, force=True, memo=memo, tol=tol, progress=progress)):
            progress(f"{group[0]} is not needed: dropped")
            kept = [g for g in kept if g is not group]
    return kept


def verdict(result: Location) -> str:
    return inputs_sentence(result.source, result.target) + _verdict(result)


def _verdict(result: Location) -> str:
    if result.goal:
        return goal_verdict(result)
    source, target, minimal = result.source.label, result.target.label, result.minimal
    final = result.final_cmp
    index = proof.index_sentence(result.whole)
    order = [r for r in final.results if r.status == Status.ORDER_ONLY]
    if not minimal:
        if order:
            return (f"Runs {source} and {target} do not diverge: every artifact is bitwise equal except the order "
                    "of " + "; ".join(f"`{r.name}` ({r.note})" for r in order) + f". Nothing to locate. {index}")
        return f"Runs {source} and {target} do not diverge: nothing to locate. {index}"
    causes, noise = cause_texts(result)
    left = [r.name for r in final.results if not r.same]
    text = " ".join(([f"Root cause: {causes}."] if causes else []) + noise)
    text += (f" Injecting {'it' if len(minimal) == 1 else 'these'} from {source} into {target} "
             f"makes every artifact identical to {source}'s")
    if order:
        text += " except the order of " + "; ".join(f"`{r.name}` ({r.note})" for r in order)
    text += "." if not left else f"; still different: {proof.describe(left)}."
    return f"{text}{tokens_sentence(result)} {index}{checked_sentence(result)}"


NOISE_WORDS = {RUN_TO_RUN: "it differs run to run",
               PROCESSES: "it gives other bits than {run}'s own process in this environment",
               THREADS: "it gives other bits than {run} computed with other thread counts ({threads})"}


def cause_texts(result: Location) -> tuple[str, list[str]]:
    """The root-cause groups that are causes (`x` (stage `x`); ...), and one sentence per group that is noise: a
    stage that, run again here on a run's own inputs, did not reproduce that run's outputs."""
    causes, noise = [], []
    for group in result.minimal:
        names, stage = compact(group, result.num_chunks), DAG.producer(group[0]).name
        checks = result.noisy(group)
        if not checks:
            causes.append(f"{proof.describe(names)} (stage `{stage}`)")
            continue
        how = "; ".join(f"run again here on the {c.environment} {c.run}'s own inputs, "
                        + NOISE_WORDS[c.status].format(run=c.run, threads=c.threads) for c in checks)
        runs = list(dict.fromkeys(f"{c.run} (the {c.environment})" for c in checks))
        where = f"where {' and '.join(runs)} {'was' if len(runs) == 1 else 'were'} computed"
        if all(c.status == THREADS for c in checks):
            noise.append(f"Noise, not a cause: {proof.describe(names)} (stage `{stage}`) differs with the thread count "
                         f"on equal inputs ({how}): its difference is noise of the thread counts of this environment "
                         f"and the one {where}, not evidence of a cause.")
        else:
            noise.append(f"Noise, not a cause: {proof.describe(names)} (stage `{stage}`) differs between two runs here "
                         f"on equal inputs ({how}): its difference is noise of this environment, {where}, not "
                         "evidence of a cause.")
    return "; ".join(causes), noise


def checked_sentence(result: Location) -> str:
    """What the noise check found reproducible, and what it could not check (runs computed elsewhere)."""
    if not result.noise_checks:
        return ""
    text = ""
    noisy = {c.stage for c in result.noise}
    good = [c for c in result.noise_checks if c.status == REPRODUCIBLE and c.stage not in noisy]
    if good:
        stages = list(dict.fromkeys(c.stage for c in good))
        runs = " and ".join(dict.fromkeys(c.run for c in good))
        text += (f" Not noise: run again here on the inputs of {runs}, {proof.describe(stages)} reproduce"
                 f"{'s' if len(stages) == 1 else ''} the recorded outputs bit for bit.")
    unchecked = list(dict.fromkeys(c.status.split(": ", 1)[1] for c in result.noise_checks if not c.checked))
    if unchecked:
        text += f" Not checked for noise: {'; '.join(unchecked)}."
    return text


def tokens_sentence(result: Location) -> str:
    """Whether an encoder output named as root cause was computed from equal tokens (the model differs) or
    the tokens themselves are the cause (the tokenizer differs)."""
    named = [n for g in result.minimal for n in g]
    tokenized = [n for n in named if DAG.facts(n).together]
    if tokenized:
        differ = [n for n in tokenized if n in result.source.artifacts and n in result.target.artifacts
                  and result.source.artifacts[n].ref.hash != result.target.artifacts[n].ref.hash]
        if differ and all(template(n).split(".")[0].endswith("_order") for n in differ):
            orders = proof.describe(compact(differ, result.num_chunks))
            return (f" The tokens are equal; only colbert-ai's length sort put passages of equal length in another "
                    f"order ({orders}: torch.sort is not stable; see What this means).")
        return " The tokenizer's output differs: the passages are split into other tokens (see What this means)."
    inputs = [DAG.together_inputs(n)[0] for n in named if DAG.together_inputs(n)]  # the ids each was encoded from
    if not inputs or not all(n in r.artifacts for n in inputs for r in (result.source, result.target)):
        return ""
    if all(result.source.artifacts[n].ref.hash == result.target.artifacts[n].ref.hash for n in inputs):
        tokens = proof.describe(compact(inputs, result.num_chunks))
        return f" Tokens equal ({tokens}): the model computes differently on the same tokens."
    return ""


def goal_verdict(result: Location) -> str:
    """locate.target_artifact: what changes the goal (the rankings), and what differs without reaching it."""
    source, target, goal = result.source.label, result.target.label, result.goal
    what = proof.describe(goal)
    harmless = result.harmless
    left = "; ".join(f"`{n}` differs in {result.final_cmp[n].mismatches:,} value"
                     f"{'s' if result.final_cmp[n].mismatches != 1 else ''}" for n in harmless[:6])
    left += f" and {len(harmless) - 6} more" if len(harmless) > 6 else ""
    if not result.before.diverged():
        return f"Runs {source} and {target} do not diverge: nothing to locate. " + proof.index_sentence(result.whole)
    if not result.minimal:
        return (f"{what} of {source} and {target} are identical: what differs does not reach them (harmless: "
                f"{left}). " + proof.index_sentence(result.whole))
    causes, noise = cause_texts(result)
    text = " ".join(([f"What changes {what}: {causes}."] if causes else []) + noise)
    text += (f" Injecting {'it' if len(result.minimal) == 1 else 'these'} from {source} "
             f"into {target} makes {what} identical to {source}'s")
    text += f"; what still differs does not reach them (harmless: {left})." if harmless else \
        "; every artifact is then identical."
    return f"{text} " + proof.index_sentence(result.whole) + checked_sentence(result)


NOISE_LEGEND = ("\n\nNoise check: each root-cause stage run again here on the target's and on the source's own "
                "inputs, where that run was computed in this environment (or in one that differs only in its thread "
                "count), and compared with the outputs it recorded (`locate.noise_check=false`: off). A stage that "
                "does not reproduce them is noise of that environment, not evidence of a cause "
                "(`task=determinism run=RUN` checks every stage).")


@dataclass(frozen=True)
class LocateData(ReportData):
    """report.json of task=locate: the smallest set of injected artifacts that explains every difference."""

    source: str
    target: str
    injected: list[str]
    """Every artifact of the minimal set injected into the target, each chunk named (`embs.0`, ...)."""
    root_cause: list[str]
    """The minimal set, compact (`embs` for every chunk), in injection order; stages found noise too (see `noise`)."""
    goal: list[str] | None
    """locate.target_artifact and the other outputs of its stage: what had to become equal; null: every artifact."""
    harmless: list[str]
    """With a goal: the artifacts that still differ after the injection without reaching the goal; else empty."""
    root_cause_stages: list[str]
    """The stage of each root-cause group, in the order of `root_cause`'s groups."""
    noise: list[dict]
    """The noise checks of root-cause stages that did not reproduce their recorded outputs: noise, not a cause."""
    noise_checks: list[dict]
    """Every noise check: a root-cause stage run again here on one run's own inputs (study.determinism.NoiseCheck)."""
    rounds: list[dict]
    """Per round: the run compared with the source, how many artifacts differed, what was injected next."""
    replay_run: str
    """The label of the final replay (the minimal set injected; the target when nothing differs)."""
    whole_run: dict
    """The final replay vs the source as wholes: artifacts that differ anywhere, and colbert-ai's index files."""
    tolerance: dict
    """The tolerance the status `allclose` stands for (table, per dtype, per artifact)."""
    artifacts: dict[str, dict]
    """Every artifact, the final replay vs the source: its comparison (status, stage, max_abs, mad, mismatches, ...)."""
    before: dict[str, dict]
    """Every artifact, the source vs the target (before any injection)."""
    explain: dict
    """Per artifact that differs between the source and the target: what its difference means."""


def run(cfg) -> int:
    store = Store(cfg.store.root)
    result = locate(cfg, store)
    s, t = result.source.label, result.target.label
    folder = proof.out_dir(cfg, "locate")
    meaning_md, meaning_json = meaning(store, result.source, result.target, result.before, folder,
                                       f"What this means ({s} vs {t})")
    checks = lambda g: "; ".join(f"{c.environment} ({c.run}): {c.status if not c.noise else f'**{c.status}**'}"  # noqa
                                 for c in result.noise_checks if c.stage == DAG.producer(g[0]).name) or "off"
    causes = [[", ".join(f"`{n}`" for n in compact(g, result.num_chunks)), f"`{DAG.producer(g[0]).name}`",
               result.before[g[0]].status, f"{result.before[g[0]].mismatches:,}", proof.num(result.before[g[0]].max_abs),
               checks(g)] for g in result.minimal]
    rounds = table(["round", "run compared with source", "artifacts differing", "injected next"],
                   [[r.round, r.run, r.diverged, ", ".join(r.inject)] for r in result.rounds])
    report = Report("locate", f"locate: {s} vs {t}", verdict(result), runs=[result.source, result.target, result.final],
                    sections=[
        environments_section(result.source, result.target), "## Rounds\n\n" + rounds,
        "## Root cause\n\n" + table(["artifacts", "stage", f"status ({s} vs {t})", "mismatches", "max abs",
                                     "run again here on each run's inputs (noise check)"], causes)
        + NOISE_LEGEND,
        f"## Before ({s} vs {t})\n\n" + proof.comparison_table(result.before),
        f"## After injecting the root cause (`{result.final.label}` vs {s})\n\n"
        + proof.comparison_table(result.final_cmp, legend=False), meaning_md], data=LocateData(
        source=s, target=t, injected=[n for g in result.minimal for n in g], root_cause=result.root_cause,
        goal=result.goal, harmless=result.harmless if result.goal else [],
        root_cause_stages=[DAG.producer(g[0]).name for g in result.minimal],
        noise=[c.to_json() for c in result.noise], noise_checks=[c.to_json() for c in result.noise_checks],
        rounds=[asdict(r) for r in result.rounds], replay_run=result.final.label,
        whole_run=result.whole.to_json(), tolerance=result.before.tolerance.to_json(),
        artifacts=proof.artifact_json(result.final_cmp.results),
        before=proof.artifact_json(result.before.results), explain=meaning_json))
    return finish(folder, report)
