"""Does this machine build another index with other thread settings? Each condition captures the default run in
a fresh process with a few variables set (what a joblib worker sets, what a container's core count gives, which
BLAS and faiss kernels load) and compares it with a capture under the same kernels and default threads.

    python benchmarks/threads.py --out benchmarks/results/threads-cpu

One pair per condition: `base` (kernel variables only) vs `base` + thread variables. The table says which
artifacts differ first and how many of colbert-ai's index files differ; the machine is named in the header.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from colbert_swap.env.provenance import environment, short  # noqa: E402
from colbert_swap.proof.report.tables import table  # noqa: E402

# What joblib sets in each worker of a pool (joblib/_parallel_backends.py MAX_NUM_THREADS_VARS), for one thread.
JOBLIB_ONE = {v: "1" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                                "VECLIB_MAXIMUM_THREADS", "NUMBA_NUM_THREADS", "NUMEXPR_NUM_THREADS")}
# (name, kernel variables of both runs, thread variables of the second run)
CONDITIONS = [
    ("OMP_NUM_THREADS=1", {}, {"OMP_NUM_THREADS": "1"}),
    ("OPENBLAS_NUM_THREADS=1", {}, {"OPENBLAS_NUM_THREADS": "1"}),
    ("MKL_NUM_THREADS=1", {}, {"MKL_NUM_THREADS": "1"}),
    ("a joblib worker (n_jobs = cores)", {}, JOBLIB_ONE),
    ("ATEN_CPU_CAPABILITY=avx2, OMP_NUM_THREADS=1", {"ATEN_CPU_CAPABILITY": "avx2"}, {"OMP_NUM_THREADS": "1"}),
    ("ATEN_CPU_CAPABILITY=default, OMP_NUM_THREADS=1", {"ATEN_CPU_CAPABILITY": "default"}, {"OMP_NUM_THREADS": "1"}),
    ("OPENBLAS_CORETYPE=Haswell (AVX2 sgemm), OMP_NUM_THREADS=1", {"OPENBLAS_CORETYPE": "Haswell"},
     {"OMP_NUM_THREADS": "1"}),
    ("OPENBLAS_CORETYPE=Zen, OMP_NUM_THREADS=1", {"OPENBLAS_CORETYPE": "Zen"}, {"OMP_NUM_THREADS": "1"}),
    ("FAISS_OPT_LEVEL=avx2, OMP_NUM_THREADS=1", {"FAISS_OPT_LEVEL": "avx2"}, {"OMP_NUM_THREADS": "1"}),
    ("FAISS_OPT_LEVEL=generic, OMP_NUM_THREADS=1", {"FAISS_OPT_LEVEL": "generic"}, {"OMP_NUM_THREADS": "1"}),
]


def cli(args: list[str], env: dict, log: Path) -> None:
    with open(log, "a") as f:
        done = subprocess.run([sys.executable, "-m", "colbert_swap", *args], cwd=REPO, env=env, stdout=f,
                              stderr=subprocess.STDOUT)
    if done.returncode:
        raise SystemExit(f"`{' '.join(args)}` failed; see {log}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "threads-cpu")
    parser.add_argument("--store", type=Path, default=None)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    store = args.store or Path(tempfile.mkdtemp(prefix="threads-"))
    clean = {k: v for k, v in os.environ.items() if k not in {*JOBLIB_ONE, "ATEN_CPU_CAPABILITY", "OPENBLAS_CORETYPE",
                                                              "FAISS_OPT_LEVEL"}}
    rows, found = [], []
    for i, (name, kernels, threads) in enumerate(CONDITIONS):
        base, other = f"c{i}-base", f"c{i}-threads"
        log = args.out / "commands.log"
        cli([f"run={base}", f"store.root={store}"], {**clean, **kernels}, log)
        cli([f"run={other}", f"store.root={store}"], {**clean, **kernels, **threads}, log)
        report = args.out / f"c{i}"
        cli(["task=compare", f"source={base}", f"target={other}", f"store.root={store}", f"out_dir={report}"],
            clean, log)
        data = json.loads((report / "report.json").read_text())
        whole = data["whole_run"]
        first = ", ".join(data["first_diverged"]) or "nothing"
        files = whole.get("index_files_differing") or {}
        rows.append([name, first, str(len(whole.get("differing") or [])), str(len(files)) if files else "identical"])
        found.append({"condition": name, "kernels": kernels, "threads": threads, "first_diverged": data["first_diverged"],
                      "differing": whole.get("differing"), "index_files_differing": files})
        print(f"{name}: first divergence {first}", flush=True)
    here = environment()
    text = (f"# Thread settings on {here.get('cpu')} ({short(here)}), {os.cpu_count()} cores\n\n"
            f"`python benchmarks/threads.py --out {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}`"
            "\n\n" + table(["condition (second run)", "first divergence", "artifacts that differ", "index files that differ"],
                           rows) + "\n")
    (args.out / "results.md").write_text(text)
    (args.out / "results.json").write_text(json.dumps({"machine": here, "conditions": found}, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
