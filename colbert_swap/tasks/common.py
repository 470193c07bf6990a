"""What the tasks share: the runs named on the command line, the environments table, the tolerance, the
progress printer, and the tail every task ends with (`finish`: write the report, print its verdict)."""

from __future__ import annotations

import time

from colbert_swap.proof.compare.tolerances import Tolerance
from colbert_swap.errors import UserError
from colbert_swap.env.provenance import default_run_label
from colbert_swap.core.store import RunManifest, Store

# Provenance facts shown side by side in reports (the spec and the GPU's details only where a run has them).
ENV_KEYS = ("environment", "platform", "python", "torch", "cuda", "cudnn", "gpu", "gpu_capability", "gpu_memory_gib",
            "driver", "cuda_driver", "cpu", "cpu_capability", "torch_threads", "transformers", "tokenizers", "colbert-ai",
            "faiss", "numpy")


def source_run(cfg, store: Store) -> RunManifest:
    if not cfg.source:
        raise UserError(f"task={cfg.task} needs source=RUN ({store.missing('').split('(', 1)[1]}")
    if str(cfg.source) == target_label(cfg) and cfg.task in ("compare", "locate", "search"):
        raise UserError(f"source and target are the same run ({cfg.source!r}): name the run to compare it with, "
                        "target=OTHER")
    return store.load(str(cfg.source))


def target_label(cfg) -> str:
    return str(cfg.target or cfg.run or default_run_label())


def knobs(config: dict) -> str:
    """The perturb knobs a run set, `attn=eager, kmeans_seed=7`; `none` when it set none."""
    set_ = {k: v for k, v in (config.get("perturb") or {}).items() if v is not None}
    return ", ".join(f"{k}={v}" for k, v in set_.items()) or "none"


def environment_rows(*runs: RunManifest) -> list[list[str]]:
    """Rows of the Environments table: provenance facts, the torch-read environment variables that are set,
    the environment id (provenance.env_id) and the perturb knobs that are set."""
    rows = []
    for key in ENV_KEYS:
        values = ["-" if r.provenance.get(key) is None else str(r.provenance.get(key)) for r in runs]
        if key in ("environment", "gpu_capability", "gpu_memory_gib", "driver", "cuda_driver") and set(values) == {"-"}:
            continue
        rows.append([key, *values, "" if len(set(values)) == 1 else "differs"])
        if key == "torch_threads":
            rows += thread_rows(*runs)
    env = [", ".join(f"{k}={v}" for k, v in (r.provenance.get("env") or {}).items()) or "-" for r in runs]
    rows.append(["environment variables", *env, "" if len(set(env)) == 1 else "differs"])
    ids = [f"`{r.env}`" for r in runs]
    rows.append(["environment id", *ids, "" if len(set(ids)) == 1 else "differs"])
    perturb = [knobs(r.config) for r in runs]
    rows.append(["perturb knobs set", *perturb, "" if len(set(perturb)) == 1 else "differs"])
    return rows


def thread_rows(*runs: RunManifest) -> list[list[str]]:
    """Rows of the thread facts (provenance["threads"], provenance["torch_parallel"]); none for runs recorded
    before them."""
    facts = [r.provenance.get("threads") or {} for r in runs]
    if not any(facts):
        return []

    def show(*keys: str) -> list[str]:
        return [" / ".join("-" if f.get(k) is None else str(f.get(k)) for k in keys) if f else "-" for f in facts]

    def libraries(f: dict) -> str:  # "openblas 0.3.15 SkylakeX x2 (faiss_cpu.libs)"
        return "; ".join(" ".join(str(x) for x in (lib.get("internal_api"), lib.get("version"), lib.get("architecture"),
                                                   f"x{lib.get('num_threads')}") if x)
                         + f" ({lib.get('package') or lib.get('library')})" for lib in f.get("blas") or []) or "-"

    def backend(r: RunManifest) -> str:
        p = r.provenance.get("torch_parallel") or {}
        parts = [p.get("backend") and f"ATen {p['backend']}", p.get("openmp") and f"OpenMP {p['openmp']}",
                 p.get("mkl") and f"MKL {p['mkl']}", p.get("mkldnn") and f"oneDNN {p['mkldnn']}"]
        return ", ".join(x for x in parts if x) or "-"

    rows = [["threads: torch intra-op / inter-op", *show("torch", "torch_interop")],
            ["threads: torch's OpenMP / MKL", *show("omp", "mkl")],
            ["threads: faiss (OpenMP)", *show("faiss")],
            ["CPUs usable / present", *show("affinity", "cpu_count")],
            ["BLAS and OpenMP libraries", *[libraries(f) if f else "-" for f in facts]],
            ["torch parallel backend", *[backend(r) for r in runs]]]
    return [[row[0], *row[1:], "" if len(set(row[1:])) == 1 else "differs"] for row in rows]


def tolerance(cfg) -> Tolerance:
    """compare.tolerance and compare.per_artifact of this invocation, over the tolerances the stages declare."""
    from colbert_swap.colbert.stages import DAG

    return Tolerance.from_config(cfg.get("compare"), DAG.tolerances())


def progress_printer(stream=None):
    """Progress lines on the terminal, with the seconds since the task started (`[   3.4s] ...`)."""
    from colbert_swap.core.console import console

    start = time.perf_counter()
    stream = stream or console()

    def say(message: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f}s] {message}", file=stream, flush=True)

    return say


def environments_section(*runs: RunManifest, labels: list[str] | None = None) -> str:
    """`## Environments` and the table of the runs' environments side by side."""
    from colbert_swap.proof.report.tables import table

    return "## Environments\n\n" + table(["", *(labels or [r.label for r in runs]), "differs?"], environment_rows(*runs))


WRITTEN: list = []  # the report.md of every report this process wrote, in order (api.report, --json)


def finish(folder, report) -> int:
    """Write `report` (a report.report.Report) into `folder` with the command line that made it (under Hydra),
    print its verdict and where it is, and the zip to attach to an issue with its size."""
    from colbert_swap.proof.report.report import ATTACH

    if report.invocation is None:
        report.invocation = invocation()
    path = report.write(folder)
    WRITTEN.append(path)
    print(report.verdict)
    attach = path.parent / ATTACH
    print(f"\nreport: {path}" + (f" (to attach to an issue: {attach}, {attach.stat().st_size / 1024:,.0f} KB)"
                                 if attach.exists() else ""))
    return 0


def invocation() -> list[str] | None:
    """This job's command-line overrides (a sweep's job: its own), or None outside a Hydra run (a Python call)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except (ValueError, ImportError):
        return None
