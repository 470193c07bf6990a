"""inject=NAME source=RUN: swap the source run's tensor into this environment's run, replay what is
downstream, and compare every downstream artifact with both runs.

    python -m colbert_swap inject=local_sample_embs source=2.0.1
    python -m colbert_swap inject=[local_sample_embs,embs] source=2.0.1 target=2.1.0
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import OmegaConf

from colbert_swap.proof.compare.runs import RunComparison, WholeRun, check_comparable, compare_runs, whole_run
from colbert_swap.env.provenance import environment_differences
from colbert_swap.proof.report import proof
from colbert_swap.proof.report.meaning import meaning
from colbert_swap.proof.report.report import Report, ReportData
from colbert_swap.runs.replay import as_names, compact, options, phases, replay
from colbert_swap.colbert.stages import DAG
from colbert_swap.core.store import RunManifest, Store
from colbert_swap.tasks.capture import capture
from colbert_swap.tasks.common import progress_printer
from colbert_swap.tasks.common import environments_section, finish, source_run, target_label, tolerance
from colbert_swap.colbert.plan import plan


@dataclass
class Injection:
    source: RunManifest
    target: RunManifest
    replayed: RunManifest
    downstream: list[str]
    before: RunComparison  # source vs target
    after: RunComparison  # replayed vs source, every artifact
    vs_target: RunComparison  # replayed vs target
    whole: WholeRun  # replayed vs source as wholes: what differs anywhere, and the index files

    @property
    def names(self) -> list[str]:
        """The injected artifacts, every chunk of a per-chunk one written once (`embs`)."""
        return list(self.replayed.origin.names)

    @property
    def verdict(self) -> str:
        return environment_differences(self.source.provenance, self.target.provenance,
                                       (self.source.label, self.target.label)) + \
            proof.injection_verdict(self.names, self.source.label, self.target.label, self.before, self.after,
                                    self.downstream, self.whole) + self.tokens_sentence()

    def tokens_sentence(self) -> str:
        """inject=sample_tokens / tokens: are the injected tokens the same, and do the embeddings still differ?"""
        tokens = [n for n in self.replayed.origin.injected if DAG.facts(n).together]
        if not tokens:
            return ""
        encoded = [n for n in self.downstream if DAG.together_inputs(n)]  # computed from tokens
        still = [n for n in encoded if not self.after[n].same]
        s = self.source.label
        if all(self.before[n].same for n in tokens):
            if still:
                return (f" {s}'s tokens are the same as {self.target.label}'s, yet the encoder on them here gives other "
                        f"embeddings than {s}'s ({proof.describe(compact(still, self.num_chunks))}): the model "
                        f"computes differently on the same tokens.")
            return f" {s}'s tokens are the same as {self.target.label}'s."
        text = f" {s}'s tokens differ from {self.target.label}'s (see What this means)"
        if encoded and not still:
            return text + f"; encoded here, they give {s}'s embeddings exactly: the tokenizer explains the embeddings."
        if still:
            return text + (f"; encoded here, they still give other embeddings than {s}'s "
                           f"({proof.describe(compact(still, self.num_chunks))}): the model differs too.")
        return text + "."

    @property
    def num_chunks(self) -> int:
        return sum(1 for n in self.replayed.artifacts if n.startswith("doclens."))


def ensure_target(cfg, store: Store, progress) -> RunManifest:
    """The target run, captured here first when it is not in the store yet."""
    label = target_label(cfg)
    if not store.has_run(label) or not store.load(label).complete:
        progress(f"target run {label!r} is not in the store: capturing it in this environment first")
        capture(OmegaConf.merge(cfg, {"run": label}), progress=progress)
    return store.load(label)


def inject(cfg, store: Store, names: list[str], progress=None) -> Injection:
    progress = progress or progress_printer()
    source = source_run(cfg, store)
    target = ensure_target(cfg, store, progress)
    check_comparable(source, target, cfg.force)
    replayed = replay(cfg, store, target, source, names, progress=progress)
    injected = list(replayed.origin.injected)
    num_chunks = plan(store, target).num_chunks
    downstream = [o for n in DAG.downstream_of(injected, num_chunks, phases(target), options(target)) for o in n.outputs
                  if o not in injected]
    tol = tolerance(cfg)
    n = len(replayed.artifacts)
    progress(f"comparing the replay {replayed.label!r} with {source.label!r} ({n} artifacts)")
    after = compare_runs(store, replayed, source, force=True, tol=tol, progress=progress)
    progress(f"comparing {source.label!r} with {target.label!r}, and the replay with {target.label!r}")
    before = compare_runs(store, source, target, force=True, tol=tol, progress=progress)
    vs_target = compare_runs(store, replayed, target, force=True, tol=tol, progress=progress)
    progress("comparing colbert-ai's index files")
    return Injection(source, target, replayed, downstream, before=before, after=after, vs_target=vs_target,
                     whole=whole_run(store, after, replayed, source))


def explanations(store: Store, result: Injection, folder) -> tuple[str, dict]:
    """What the injected artifacts' divergence means (source vs target), and what is left after the replay."""
    s, t = result.source.label, result.target.label
    injected, ij = meaning(store, result.source, result.target, result.before, folder,
                           f"What this means: the injected artifacts ({s} vs {t})", list(result.replayed.origin.injected))
    left, lj = meaning(store, result.replayed, result.source, result.after, folder,
                       f"What this means: left after the injection (replayed vs {s})", result.downstream)
    return "\n\n".join(x for x in (injected, left) if x), {"injected": ij, "left": lj}


@dataclass(frozen=True)
class InjectData(ReportData):
    """report.json of inject=NAME: the source's artifacts injected into the target, what is downstream replayed."""

    source: str
    target: str
    injected: list[str]
    """The injected artifacts as named (`embs` for every chunk)."""
    injected_artifacts: list[str]
    """The injected artifacts, every chunk named (`embs.0`, `embs.1`, ...)."""
    root_cause: list[str]
    """Always empty: inject tests one explanation (task=locate finds the root cause)."""
    replay_run: str
    """The label of the replayed run (the target with the source's artifacts injected)."""
    downstream: list[str]
    """The artifacts computed from the injected ones, recomputed in the replay."""
    whole_run: dict
    """The replayed run vs the source as wholes: artifacts that differ anywhere, and colbert-ai's index files."""
    tolerance: dict
    """The tolerance the status `allclose` stands for (table, per dtype, per artifact)."""
    computed_in: dict[str, str]
    """Per artifact of the replayed run: the environment id it was computed in."""
    replay_environments: dict[str, dict]
    """Environment id -> provenance, of every environment an artifact of the replayed run was computed in."""
    artifacts: dict[str, dict]
    """Every artifact, the replayed run vs the source: its comparison (status, stage, max_abs, mad, mismatches, ...)."""
    before: dict[str, dict]
    """Every artifact, the source vs the target (before the injection)."""
    vs_target: dict[str, dict]
    """The downstream artifacts, the replayed run vs the target."""
    explain: dict
    """What the differences mean: `injected` (source vs target, the injected artifacts), `left` (replayed vs source)."""


def report(result: Injection, meaning_md: str = "", meaning_json: dict | None = None) -> Report:
    s, t, r = result.source.label, result.target.label, result.replayed.label
    shown = result.downstream + [n for n in result.whole.differing if n not in result.downstream]
    nothing = f"No stage reads {proof.describe(result.names)}: nothing was recomputed."
    sections = [
        environments_section(result.source, result.target, result.replayed, labels=[s, t, "replayed here"]),
        f"## Before injection ({s} vs {t})\n\n" + proof.comparison_table(result.before),
        f"## After injection (replayed `{r}` vs {s}): the downstream artifacts and any other that still differs\n\n"
        + (proof.comparison_table(result.after, shown, legend=False) if shown else nothing),
        f"## Replayed vs {t}, downstream artifacts\n\n"
        + (proof.comparison_table(result.vs_target, result.downstream, legend=False) if result.downstream else nothing),
        "## Where the replayed run's artifacts were computed\n\n" + proof.computed_where(result.replayed), meaning_md]
    data = InjectData(source=s, target=t, injected=result.names,
                      injected_artifacts=list(result.replayed.origin.injected), root_cause=[], replay_run=r,
                      downstream=result.downstream, whole_run=result.whole.to_json(),
                      tolerance=result.after.tolerance.to_json(),
                      computed_in={n: result.replayed.computed_in(n) for n in result.replayed.artifacts},
                      replay_environments=result.replayed.environments,
                      artifacts=proof.artifact_json(result.after.results),
                      before=proof.artifact_json(result.before.results),
                      vs_target=proof.artifact_json([result.vs_target[n] for n in result.downstream]),
                      explain=meaning_json or {})
    return Report("inject", f"inject {', '.join(result.names)}: {s} into {t}", result.verdict, sections, data,
                  [result.source, result.target, result.replayed])


def run(cfg) -> int:
    store = Store(cfg.store.root)
    result = inject(cfg, store, as_names(cfg.inject))
    folder = proof.out_dir(cfg, "inject")
    return finish(folder, report(result, *explanations(store, result, folder)))
