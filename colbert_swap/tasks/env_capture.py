"""task=env_capture environment=NAME: build environment NAME (conf/env/NAME.yaml) once and capture run NAME in it.

One environment per Hydra job, so a launcher spreads a version matrix over processes or a cluster:

    python -m colbert_swap -m task=env_capture environment=torch-2.0.1,torch-2.1.0 hydra/launcher=joblib
    python -m colbert_swap task=matrix envs=[torch-2.0.1,torch-2.1.0]    # then: compare and locate

Jobs that share no file system (cloud containers, nodes without a shared disk) each capture into a store of their
own and export: `env_capture.export_to=DIR` writes DIR/NAME.colbert-swap.zip; `task=import bundle=DIR` gathers the
bundles into one store, where task=matrix compares them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from colbert_swap.errors import UserError
from colbert_swap.study.matrix import Study
from colbert_swap.proof.report import proof
from colbert_swap.proof.report.report import Report, ReportData
from colbert_swap.core.store import Store
from colbert_swap.core.store.bundle import export_bundle
from colbert_swap.tasks.common import progress_printer
from colbert_swap.tasks.export import SUFFIX, derived_from


@dataclass(frozen=True)
class EnvCaptureData(ReportData):
    """report.json of task=env_capture."""

    env: str
    """The environment spec (conf/env/NAME.yaml) the run was captured in."""
    run: str
    """The run captured in it: named as the environment."""
    captured: bool
    failure: dict | None
    """Why the environment could not be captured (env.failure.EnvFailure.to_json); null when it was."""
    injected: list[str]
    """Always empty (a key every report of a sweep has)."""


def run(cfg) -> int:
    if not cfg.env_capture.environment:
        raise UserError("task=env_capture needs environment=NAME (a spec in conf/env/)")
    study = Study(cfg, Store(cfg.store.root), [cfg.env_capture.environment], progress_printer())
    name = study.names[0]
    ok = study.capture(name)
    failure = study.failures.get(name)
    verdict = f"run {name!r} is captured in environment {name!r}" if ok else failure.text()
    Report("env_capture", f"env_capture {name}", verdict, data=EnvCaptureData(
        env=name, run=name, captured=ok, failure=failure.to_json() if failure else None,
        injected=[])).write(proof.out_dir(cfg, "env_capture"))
    if not ok:
        raise UserError(verdict)
    print(verdict)
    if cfg.env_capture.export_to:
        store = Store(cfg.store.root)
        out = Path(str(cfg.env_capture.export_to)).expanduser() / f"{name}{SUFFIX}"
        summary = export_bundle(store, [name, *derived_from(store, name)], out, progress=progress_printer())
        print(f"bundle: {summary.path.resolve()} ({summary.size / 2**20:.1f} MiB): `python -m colbert_swap task=import "
              f"bundle={out.parent}` gathers the jobs' bundles into one store")
    return 0
