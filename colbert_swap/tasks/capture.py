"""task=capture (the default): run the whole indexing DAG in-process and keep every artifact.

    python -m colbert_swap run=a        # then run=b: identical hashes in one environment
"""

from __future__ import annotations

from pathlib import Path

from colbert_swap.config import Config, capture_options, config_hash, result_config
from colbert_swap.core.dag import INDEXING
from colbert_swap.core.engine import Engine
from colbert_swap.errors import UserError
from colbert_swap.colbert.index_files import write_index
from colbert_swap.env.provenance import default_run_label
from colbert_swap.proof.report.tables import artifact_table
from colbert_swap.colbert.resources import Resources
from colbert_swap.colbert.stages import DAG
from colbert_swap.core.store import RunManifest, Store, check_label
from colbert_swap.core.store.origin import Capture
from colbert_swap.core.store.run import open_run
from colbert_swap.tasks.common import progress_printer


def capture(cfg: Config, progress=None) -> RunManifest:
    """Capture run `cfg.run` (default: the torch version), resuming one that stopped; a complete one with
    this config is returned as it is."""
    progress = progress or progress_printer()
    store = Store(cfg.store.root)
    label = check_label(cfg.run or default_run_label())
    result = result_config(cfg)
    with open_run(store, label, Capture(), result, config_hash(result), mismatch="refuse", force=cfg.force) as run:
        if run.done:
            progress(f"run {label!r} is already captured with this config; nothing to do")
            return run.manifest
        if run.resumed:
            progress(f"resuming run {label!r}: {len(run.manifest.artifacts)} artifact(s) already stored")
        run_dir = store.run_dir(label)
        resources = Resources(cfg, store, run_dir, progress)
        _check_inputs(resources)  # a checkpoint or collection that is not there: the run is removed again
        engine = Engine(run, resources, progress)
        progress(f"capturing run {label!r} into {run_dir} (log: {resources.log})")
        engine.execute(DAG.nodes(num_chunks=1)[:2])  # num_passages, num_chunks: then the DAG can be expanded
        num_chunks = engine.get("num_chunks")
        engine.execute(DAG.nodes(num_chunks, INDEXING, capture_options(cfg)))
        progress("writing the colbert-ai index files")
        write_index(run_dir / "index", engine.get, resources.colbert_config, num_chunks)
        if cfg.search.capture or cfg.search.queries:  # the search graph too: colbert-ai's Searcher on the artifacts
            progress(f"searching: {len(resources.queries.texts)} queries, k={cfg.search.k}")
            engine.execute(DAG.nodes(num_chunks, ("search",)))
        return run.finish()


def _check_inputs(resources: Resources) -> None:
    """The model and the collection exist and can be read, before the first stage."""
    resources.corpus
    if not Path(resources.checkpoint_path).exists():
        raise UserError(f"checkpoint {resources.checkpoint_path} does not exist")


def run(cfg: Config) -> int:
    from colbert_swap.proof.report import proof
    from colbert_swap.proof.report.report import Report
    from colbert_swap.tasks.common import environments_section, finish

    manifest = capture(cfg)
    store = Store(cfg.store.root)
    from colbert_swap.runs.replay import options, phases

    artifacts = artifact_table(manifest, DAG.artifacts(store.get(manifest, "num_chunks"), phases(manifest),
                                                       options(manifest)))
    run_dir = store.run_dir(manifest.label)
    verdict = (f"run {manifest.label!r}: {len(manifest.artifacts)} artifacts, manifest {run_dir / 'manifest.json'}; "
               f"colbert-ai index: {run_dir / 'index'}")
    print(artifacts + "\n")
    return finish(proof.out_dir(cfg, "capture"), Report(
        "capture", f"capture {manifest.label}", verdict, [environments_section(manifest), "## Artifacts\n\n" + artifacts],
        {"run": manifest.label, "config": manifest.config,
         "artifacts": {n: r.to_json() for n, r in manifest.artifacts.items()}}, [manifest]))
