"""task=repair run=NAME: refill the run's missing or damaged blob files by computing them again, each checked
against the hash its manifest recorded.

    python -m colbert_swap task=repair run=2.1.0     # after task=verify named a missing or damaged file
    python -m colbert_swap task=repair               # every run of the store with a missing or damaged file

The store is content-addressed: an artifact's file is named by the hash of its content, so a file computed
again is the lost one exactly when its hash is the recorded one, and the run's manifest needs no change. The
stages that made the lost artifacts run again here (in a scratch run, `NAME.repair`, removed after) on the
run's own stored inputs, from the generator states the run recorded, with the run's config; a lost input is
computed first. What is not computed again, with why: an artifact computed in another environment (repair it
there: the same command in that environment), one injected from another run (repair that run), one whose
stage needs a generator state that is lost too, and one whose recomputation gives other bits (the stage does
not repeat itself here: `task=determinism run=NAME` says which). Exit 0 when every lost file is back, 1 when
some are not, and the report says which and why. The artifacts a bundle left out of a run imported from it
(task=export artifacts=index) are not lost: they are not in this store by choice, and not computed again.
"""

from __future__ import annotations

from dataclasses import dataclass

from colbert_swap.core.store import RunManifest, Store
from colbert_swap.errors import UserError
from colbert_swap.proof.report import proof
from colbert_swap.proof.report.report import Report, ReportData
from colbert_swap.proof.report.tables import table
from colbert_swap.runs.recompute import SCRATCH, recompute, why_not_here
from colbert_swap.tasks.common import finish, progress_printer
from colbert_swap.tasks.verify import by_choice



def lost(store: Store, run: RunManifest) -> dict[str, str]:
    """Artifact -> 'missing' or 'damaged' for every artifact of `run` whose blob file is not its content (not those
    the bundle it was imported from left out: `Store.left_out`)."""
    return {name: "missing" if why.endswith("is missing from the store") else "damaged"
            for name, why in store.lost(run).items()}


@dataclass(frozen=True)
class Repaired:
    run: str
    lost: dict[str, str]  # artifact -> missing | damaged
    refilled: list[str]  # computed again, equal to the recorded hash: the file is back
    not_refilled: dict[str, str]  # artifact -> why not


def repair(cfg, store: Store, run: RunManifest, progress) -> Repaired:
    gone = lost(store, run)
    if not gone:
        return Repaired(run.label, {}, [], {})
    refused = {n: why for n in gone if (why := why_not_here(store, run, n))}
    wanted = [n for n in gone if n not in refused]
    for name in wanted:
        if gone[name] == "damaged":  # put() keeps a file that is there: the damaged one goes first
            store.blobs.path(run.artifacts[name].ref).unlink(missing_ok=True)
    refilled, differ = [], {}
    if wanted:
        progress(f"computing again {proof.describe(wanted)} of run {run.label!r} ({len(wanted)} lost file(s))")
        refilled, differ = recompute(cfg, store, run, wanted, progress)
    return Repaired(run.label, gone, refilled, {**refused, **differ})


@dataclass(frozen=True)
class RepairData(ReportData):
    """report.json of task=repair."""

    runs: dict[str, dict]
    """Run label -> {lost: artifact -> missing|damaged, refilled: [artifact], not_refilled: artifact -> why}."""


def run(cfg) -> int:
    store = Store(cfg.store.root)
    progress = progress_printer()
    labels = [str(cfg.run)] if cfg.run else [r for r in store.runs() if not r.endswith(SCRATCH)]
    results = []
    for label in labels:
        manifest = store.load(label)
        if not manifest.complete:
            raise UserError(f"run {label!r} is incomplete: the command that made it resumes it (a repair is for "
                            "complete runs)")
        results.append(repair(cfg, store, manifest, progress))
    for line in by_choice(store, labels):
        print(f"not computed again: {line}")
    damaged = [r for r in results if r.lost]
    left = {r.run: r.not_refilled for r in damaged if r.not_refilled}
    if not damaged:
        verdict = f"{proof.plural(len(results), 'run')} checked: every artifact file is there and matches its hash."
    else:
        verdict = " ".join(
            f"Run {r.run!r}: {len(r.refilled)} of {proof.plural(len(r.lost), 'lost file')} computed again, "
            "each equal to its recorded hash" + (f"; not refilled: {proof.describe(list(r.not_refilled))}."
                                                if r.not_refilled else ": the run is whole again.")
            for r in damaged)
    rows = [[f"`{r.run}`", f"`{n}`", how, "refilled" if n in r.refilled else f"not refilled: {r.not_refilled[n]}"]
            for r in damaged for n, how in r.lost.items()]
    sections = ["## Lost files\n\n" + (table(["run", "artifact", "file", "repair"], rows) if rows else "None.")]
    report = Report("repair", f"repair {store.root}", verdict, sections, RepairData(runs={
        r.run: {"lost": r.lost, "refilled": r.refilled, "not_refilled": r.not_refilled} for r in results}))
    finish(proof.out_dir(cfg, "repair"), report)
    return 1 if left else 0
