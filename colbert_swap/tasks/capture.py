"""task=capture (the default): run the whole indexing DAG in-process and keep every artifact.

    python -m colbert_swap run=a        # then run=b: identical hashes in one environment
    python -m colbert_swap run=a keep=index   # every hash, but bytes only of the index's and the small artifacts
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from colbert_swap.colbert.index_files import keeper
from colbert_swap.colbert.resources import Resources
from colbert_swap.colbert.stages import DAG
from colbert_swap.config import Config, config_hash, result_config
from colbert_swap.core.dag import INDEXING
from colbert_swap.core.store import RunManifest, Store, check_label
from colbert_swap.core.store.origin import Capture
from colbert_swap.env.provenance import default_run_label
from colbert_swap.errors import UserError
from colbert_swap.proof.report.report import ReportData
from colbert_swap.proof.report.tables import artifact_table
from colbert_swap.runs.execute import Policy, RunSpec, Write, execute, plan
from colbert_swap.tasks.common import progress_printer


def capture(cfg: Config, progress=None) -> RunManifest:
    """Capture run `cfg.run` (default: the torch version), resuming one that stopped; a complete one with
    this config is returned as it is."""
    progress = progress or progress_printer()
    store = Store(cfg.store.root)
    label = check_label(cfg.run or default_run_label())
    result = result_config(cfg)
    searching = bool(cfg.search.capture or cfg.search.queries)  # the search graph too: colbert-ai's Searcher

    def starting(resources: Resources) -> None:
        _check_inputs(resources)  # a checkpoint or collection that is not there: the run is removed again
        progress(f"capturing run {label!r} into {store.run_dir(label)} (log: {resources.log})")
        if searching:
            progress(f"searching: {len(resources.queries.texts)} queries, k={cfg.search.k}")

    return execute(cfg, store, RunSpec(label, Capture(), result, config_hash(result)),
                   targets=(*INDEXING, "search") if searching else INDEXING,
                   policy=Policy(write=Write.NEW, force=cfg.force,
                                 keep=keeper(cfg.store.keep, DAG.artifact_templates(), DAG.read_by("search"))),
                   progress=progress, before=starting)


def _check_inputs(resources: Resources) -> None:
    """The model and the collection exist and can be read, before the first stage."""
    resources.corpus
    if not Path(resources.checkpoint_path).exists():
        raise UserError(f"checkpoint {resources.checkpoint_path} does not exist")


@dataclass(frozen=True)
class CaptureData(ReportData):
    """report.json of task=capture."""

    run: str
    """The captured run's label."""
    config: dict
    """The run's result config (model, collection, index, perturb: what its artifacts depend on)."""
    artifacts: dict[str, dict]
    """Per artifact: its manifest record (blob hash, dtype, shape, stage, inputs, seconds, env id computed in)."""


def run(cfg: Config) -> int:
    from colbert_swap.proof.report import proof
    from colbert_swap.proof.report.report import Report
    from colbert_swap.tasks.common import environments_section, finish

    manifest = capture(cfg)
    store = Store(cfg.store.root)
    artifacts = artifact_table(manifest, plan(store, manifest).artifacts())
    run_dir = store.run_dir(manifest.label)
    verdict = (f"run {manifest.label!r}: {len(manifest.artifacts)} artifacts, manifest {run_dir / 'manifest.json'}; "
               f"colbert-ai index: {run_dir / 'index'}")
    print(artifacts + "\n")
    return finish(proof.out_dir(cfg, "capture"), Report(
        "capture", f"capture {manifest.label}", verdict, [environments_section(manifest), "## Artifacts\n\n" + artifacts],
        CaptureData(run=manifest.label, config=manifest.config,
                    artifacts={n: r.to_json() for n, r in manifest.artifacts.items()}), [manifest]))
