"""task=parity run=NAME: colbert-ai's own Indexer, here, on the run's checkpoint, collection and index config,
and its index files against the capture's: is our in-process capture colbert-ai's Indexer in this environment?

    python -m colbert_swap task=parity run=mine    # exit 0: identical, 1: files differ, 2: not compared

The Indexer runs as users run it (`Run().context(RunConfig(nranks=1, ...))`, one spawned worker) into the run's
folder, `STORE/runs/NAME/indexer/` (its index in `reference/indexes/reference/`); the result is kept beside it,
`indexer/parity.json`, written through the run's writer. The Indexer's files are reused while the run and the
environment stay the same; the comparison itself is made again every time.

Only a run colbert-ai could have computed is compared: a run with perturb.* set, another k-means
(index.kmeans_backend), chunk size, seed or autocast, a replay, or a run captured in another environment is
"not compared", with why (run task=parity in the run's own environment: task=matrix matrix.parity=true does,
in each).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from colbert_swap.colbert.index_files import index_differences
from colbert_swap.colbert.infra import colbert_release
from colbert_swap.colbert.reference import indexer_inputs, not_comparable, reference_index
from colbert_swap.core.console import quiet
from colbert_swap.core.store import RunManifest, Store
from colbert_swap.core.store.run import Write, open_run
from colbert_swap.env.provenance import default_run_label, describe_changes, env_id, run_environment
from colbert_swap.errors import UserError
from colbert_swap.proof.report import proof
from colbert_swap.proof.report.report import Report, ReportData
from colbert_swap.proof.report.tables import table
from colbert_swap.tasks.common import environments_section, finish

IDENTICAL, DIFFERS, NOT_COMPARED = "identical", "differs", "not compared"
FOLDER = "indexer"  # in the run's folder: the Indexer's root (its index folder), its log and parity.json
RESULT = "parity.json"
EXIT = {IDENTICAL: 0, DIFFERS: 1, NOT_COMPARED: 2}


@dataclass(frozen=True)
class ParityData(ReportData):
    """report.json of task=parity run=NAME."""

    run: str
    """The run whose index files were compared with colbert-ai's Indexer's."""
    status: str
    """identical | differs | not compared."""
    why: Optional[str]
    """Why it was not compared (a setting colbert-ai's Indexer cannot take, another environment, ...); else null."""
    differences: dict[str, str]
    """Index file -> how the capture's differs from the Indexer's (colbert.index_files.index_differences; the
    config keys that name places are left out); empty when identical or not compared."""
    files: list[str]
    """The index files compared (the capture's and the Indexer's, by name)."""
    indexer: Optional[str]
    """The Indexer's index folder (STORE/runs/NAME/indexer/reference/indexes/reference); null when not compared."""
    reused: bool
    """The Indexer's files were kept from an earlier task=parity over the same run in the same environment."""
    env: Optional[str]
    """The environment id the Indexer ran in (that of the capture)."""


def verdict_text(status: str, differences: dict[str, str], why: Optional[str]) -> str:
    """The one line every report (this one, the matrix's rows) words parity with."""
    if status == IDENTICAL:
        return "our capture = colbert-ai's Indexer here: identical"
    if status == DIFFERS:
        return "our capture differs from colbert-ai's Indexer here: " + "; ".join(
            f"{name} ({how})" for name, how in sorted(differences.items()))
    return f"not compared: {why}"


def why_not(store: Store, manifest: RunManifest) -> Optional[str]:
    """Why this run's index cannot be compared with colbert-ai's Indexer here, or None."""
    if manifest.origin.kind != "capture":
        return f"run {manifest.label!r} is a {manifest.origin.kind}, not a capture: the Indexer computes captures only"
    why = not_comparable(manifest.config)
    if why:
        return why
    if not (store.run_dir(manifest.label) / "index" / "metadata.json").exists():
        return f"run {manifest.label!r} has no index folder"
    moved = describe_changes(manifest.provenance, run_environment(manifest.config))
    if moved:
        return (f"run {manifest.label!r} was captured in another environment ({moved}; the run's vs this one's): "
                "run task=parity there")
    return None


def key_of(manifest: RunManifest) -> dict:
    """What the Indexer's files depend on: the run as captured and this environment (and colbert-ai's version)."""
    return {"run": [manifest.label, manifest.created, manifest.config_hash],
            "env": env_id(run_environment(manifest.config)), "colbert-ai": colbert_release()}


def check(store: Store, manifest: RunManifest, key: dict,
          progress=print) -> tuple[str, dict[str, str], list[str], Path, bool]:
    """(status, differences, files compared, the Indexer's folder, reused): the Indexer runs into the run's folder
    unless its files are there from the same run in the same environment (`key`, key_of); parity.json records
    the result."""
    with open_run(store, manifest.label, manifest.origin, manifest.config, manifest.config_hash,
                  write=Write.EXTEND) as writer:
        folder = writer.folder(FOLDER)
        result = folder / RESULT
        kept = json.loads(result.read_text()) if result.exists() else {}
        theirs = Path(kept.get("indexer") or folder / "none")
        reused = kept.get("key") == key and (theirs / "metadata.json").exists()
        if not reused:
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            checkpoint, collection = indexer_inputs(manifest.config, store.root)
            progress(f"running colbert-ai's Indexer on run {manifest.label!r}'s checkpoint and collection "
                     f"(log: {folder / 'indexer.log'})")
            with quiet(folder / "indexer.log"):
                theirs = reference_index(checkpoint, collection, manifest.config["index"], folder.resolve())
        ours = store.run_dir(manifest.label) / "index"
        diffs = index_differences(ours, theirs)
        files = sorted({p.name for p in ours.iterdir()} | {p.name for p in theirs.iterdir()})
        status = DIFFERS if diffs else IDENTICAL
        result.write_text(json.dumps({"key": key, "indexer": str(theirs), "status": status, "differences": diffs,
                                      "files": files, "checked": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=1) + "\n")
    return status, diffs, files, theirs, reused


def run(cfg) -> int:
    store = Store(cfg.store.root)
    label = str(cfg.run or default_run_label())
    manifest = store.load(label)
    if not manifest.complete:
        raise UserError(f"run {label!r} is incomplete: finish its capture (the same command resumes it) first")
    why = why_not(store, manifest)
    diffs, files, theirs, reused, env = {}, [], None, False, None
    if why:
        status = NOT_COMPARED
    else:
        key = key_of(manifest)
        env = key["env"]
        status, diffs, files, theirs, reused = check(store, manifest, key)
    verdict = verdict_text(status, diffs, why)
    if status != NOT_COMPARED:
        verdict += (f" ({len(files)} index files of run {label!r} against the Indexer's, "
                    f"{'kept from an earlier check' if reused else 'run just now'} in {env})")
    sections = []
    if files:
        rows = [[f"`{name}`", diffs.get(name, "identical")] for name in files]
        sections.append("## Index files: our capture against colbert-ai's Indexer\n\n" +
                        table(["file", "capture vs Indexer"], rows))
    sections.append(environments_section(manifest))
    finish(proof.out_dir(cfg, "parity"), Report("parity", f"parity: run {label} against colbert-ai's Indexer", verdict,
                                                sections, ParityData(
        run=label, status=status, why=why, differences=diffs, files=files, indexer=str(theirs) if theirs else None,
        reused=reused, env=env), [manifest]))
    return EXIT[status]
