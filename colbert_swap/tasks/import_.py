"""task=import bundle=FILE: bring the runs of a bundle that task=export wrote into this store.

    python -m colbert_swap task=import bundle=2.1.0.colbert-swap.zip
    python -m colbert_swap task=import bundle=2.1.0.colbert-swap.zip as=gpu     # under another name

Everything is checked before anything is written: every file of the bundle against its sha256, every blob
against its content hash, every manifest against its digest. A run already in the store with the same manifest
is skipped; a run of that name with other content is refused (as=NAME imports the bundle's run, and the runs
derived from it, NAME+drill, ..., under another name). The import is all or nothing: one that fails, is
interrupted or killed leaves the store as it was (a killed one is rolled back by the next import, task=verify or
task=gc). Blobs already in the store are not written again.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from colbert_swap.config import run_overrides
from colbert_swap.core.store import Store, derived
from colbert_swap.core.store.bundle import import_bundle
from colbert_swap.env.provenance import default_run_label
from colbert_swap.errors import UserError
from colbert_swap.proof.report import proof
from colbert_swap.proof.report.reproduce import PROGRAM
from colbert_swap.tasks.common import progress_printer
from colbert_swap.tasks.export import SUFFIX


def machine(facts: dict) -> str:
    """The exporting machine in a few words: torch 2.1.0+cu121, NVIDIA H200, Python 3.11.7."""
    parts = [f"torch {facts.get('torch')}", facts.get("gpu") or facts.get("cpu"), f"Python {facts.get('python')}"]
    return ", ".join(str(p) for p in parts if p and "None" not in str(p)) or "not recorded"


def bundles(value) -> list[Path]:
    """bundle=: a file, a folder (every *.zip in it, sorted) or a list of them."""
    out: list[Path] = []
    for item in ([value] if isinstance(value, (str, Path)) else list(value or [])):
        path = Path(str(item)).expanduser()
        if path.is_dir():
            found = sorted(path.glob("*.zip"))
            if not found:
                raise UserError(f"bundle={item}: the folder holds no .zip file (task=export writes NAME{SUFFIX})")
            out += found
        else:
            out.append(path)
    if not out:
        raise UserError("task=import needs bundle=FILE (the .zip that task=export wrote), a folder of them, or a list")
    return out


def run(cfg) -> int:
    paths = bundles(cfg.transfer.bundle)
    if cfg.transfer.label and len(paths) > 1:
        raise UserError(f"as={cfg.transfer.label} renames the run of one bundle; bundle= names {len(paths)}")
    store = Store(cfg.store.root)
    main: list[str] = []
    for path in paths:
        main += [label for label in _import(store, path, cfg.transfer.label) if not derived(label)]
    if len(main) == 1:
        config = store.load(main[0]).config_hash
        same = [r for r in store.runs() if r != main[0] and not derived(r) and _config_hash(store, r) == config]
        here = default_run_label()  # this machine's run, as a capture here names it by default
        here = same[0] if same else here if here != main[0] else f"{here}-here"
        captured = store.has_run(here)
        if not captured:
            args = [f"run={here}", *run_overrides(store.load(main[0]).config)]
            print(f"capture the same config here: {PROGRAM} {' '.join(shlex.quote(a) for a in args)}")
        print(f"{'compare' if captured else 'then compare'}: {PROGRAM} task=compare source={main[0]} target={here}")
    elif main:
        print(f"compare them: {PROGRAM} task=compare source={main[0]} target={main[1]}, or every neighbour with "
              f"task=matrix envs=[{','.join(main)}] where they are environments of conf/env/")
    return 0


def _config_hash(store: Store, label: str) -> str | None:
    try:
        return store.load(label).config_hash
    except UserError:  # a damaged manifest: task=verify names it
        return None


def _import(store: Store, path: Path, label: str | None) -> list[str]:
    """Import one bundle and say what it did: the labels of its runs here."""
    summary = import_bundle(store, path, rename=label, progress=progress_printer())
    theirs = {here: there for there, here in summary.labels.items()}

    def named(label: str) -> str:
        return repr(label) + (f" (run {theirs[label]!r} in the bundle)" if theirs[label] != label else "")

    for label in summary.imported:
        print(f"imported run {named(label)}")
    for label in summary.skipped:
        print(f"run {named(label)}: already there, the same manifest: skipped")
    print(f"from {summary.bundle.name}, exported on: {machine(summary.machine)}")
    if summary.imported:
        print(f"blobs: {summary.blobs_written:,} written, {summary.blobs_present:,} already in the store "
              f"({summary.bytes_written / 2**20:.1f} MiB written in {summary.seconds:.1f} s)")
    else:
        print("nothing written: every run of the bundle is in the store already")
    for label, left in summary.left_out.items():
        print(f"run {label!r}: the bundle left out the bytes of {proof.plural(len(left), 'artifact')} "
              f"({', '.join(left[:8])}{' ...' if len(left) > 8 else ''}): not in this store by choice")
    return list(summary.labels.values())
