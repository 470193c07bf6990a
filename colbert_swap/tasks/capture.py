"""task=capture (the default): run the whole indexing DAG in-process and keep every artifact.

    python -m colbert_swap run=a        # then run=b: identical hashes in one environment
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from colbert_swap.colbert_env import console
from colbert_swap.config import Config, config_hash, result_config
from colbert_swap.engine import Engine, Resources
from colbert_swap.errors import UserError
from colbert_swap.index_files import write_index
from colbert_swap.provenance import changed_keys, default_run_label, environment
from colbert_swap.report.tables import artifact_table
from colbert_swap.stages import DAG
from colbert_swap.store import RunManifest, Store, check_label



def progress_printer(stream=None):
    start = time.perf_counter()
    stream = stream or console()

    def say(message: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f}s] {message}", file=stream, flush=True)

    return say


def capture(cfg: Config, progress=None) -> RunManifest:
    store = Store(cfg.store.root)
    label = check_label(cfg.run or default_run_label())
    with store.lock(label):
        return _capture(cfg, store, label, progress or progress_printer())


def _capture(cfg: Config, store: Store, label: str, progress) -> RunManifest:
    run_dir = store.run_dir(label)
    result = result_config(cfg)
    digest = config_hash(result)
    env = environment()
    manifest = store.load(label) if store.has_run(label) else None
    if manifest is not None and manifest.config_hash != digest:
        if not cfg.force:
            raise UserError(f"run {label!r} already exists in {store.root} with another config "
                            f"({manifest.config_hash} != {digest}); choose another run=NAME or pass force=true "
                            "to replace it")
        shutil.rmtree(run_dir)
        manifest = None
    if manifest is not None and manifest.complete:
        progress(f"run {label!r} is already captured with this config; nothing to do")
        return manifest
    if manifest is not None:
        changed = changed_keys(manifest.provenance, env)
        if changed:
            raise UserError(f"run {label!r} was started in another environment ({', '.join(changed)} differ); "
                            "resume it there, or pass force=true to start it over here")
        progress(f"resuming run {label!r}: {len(manifest.artifacts)} artifact(s) already stored")
    resources = Resources(cfg, store, run_dir, progress)
    if manifest is None:
        _check_inputs(resources, run_dir, progress)  # a checkpoint or collection that is not there: no run
        manifest = RunManifest(label=label, config=result, config_hash=digest, provenance=env,
                               origin={"kind": "capture"})
        store.save(manifest)
    engine = Engine(store, resources, manifest, progress)
    progress(f"capturing run {label!r} into {run_dir} (log: {resources.log})")
    engine.execute(DAG.nodes(num_chunks=1)[:2])  # num_passages, num_chunks: then the DAG can be expanded
    num_chunks = engine.get("num_chunks")
    engine.execute(DAG.nodes(num_chunks))
    progress("writing the colbert-ai index files")
    write_index(run_dir / "index", engine.get, resources.colbert_config, num_chunks)
    manifest.complete = True
    store.save(manifest)
    return manifest


def _check_inputs(resources: Resources, run_dir, progress) -> None:
    """The model and the collection exist and can be read, before the run is created: a capture that fails
    here leaves nothing in the store."""
    existed = run_dir.exists()
    try:
        resources.corpus
        if not Path(resources.checkpoint_path).exists():
            raise UserError(f"checkpoint {resources.checkpoint_path} does not exist")
    except BaseException:
        if not existed:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def run(cfg: Config) -> int:
    from colbert_swap.report import proof
    from colbert_swap.report.tables import table
    from colbert_swap.tasks.common import environment_rows

    manifest = capture(cfg)
    store = Store(cfg.store.root)
    num_chunks = store.get(manifest, "num_chunks")
    artifacts = artifact_table(manifest, DAG.artifacts(num_chunks))
    run_dir = store.run_dir(manifest.label)
    verdict = (f"run {manifest.label!r}: {len(manifest.artifacts)} artifacts, manifest {run_dir / 'manifest.json'}; "
               f"colbert-ai index: {run_dir / 'index'}")
    md = "\n\n".join([f"# capture {manifest.label}", verdict, "## Environment",
                       table(["", manifest.label, ""], environment_rows(manifest)), "## Artifacts", artifacts, ""])
    report = {"task": "capture", "run": manifest.label, "verdict": verdict, "config": manifest.config,
              "artifacts": {n: r.to_json() for n, r in manifest.artifacts.items()}}
    path = proof.write(proof.out_dir(cfg, "capture"), report, md, (manifest,))
    print(artifacts)
    print(f"\n{verdict}\nreport: {path}")
    return 0
