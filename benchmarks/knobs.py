"""What each `perturb=` knob changes on this machine: the first diverging artifact, the root cause `locate`
names, and whether colbert-ai's index files change. The README's table of deliberate causes is this
script's output; the outcomes of kernel-dependent knobs differ between CPUs, so it names the machine.

    python benchmarks/knobs.py --out benchmarks/results/knobs-cpu
    ATEN_CPU_CAPABILITY=default python benchmarks/knobs.py --out benchmarks/results/knobs-cpu-default
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from colbert_swap.proof.compare.runs import compare_runs  # noqa: E402
from colbert_swap.tasks import compose  # noqa: E402
from colbert_swap.env.provenance import environment, short  # noqa: E402
from colbert_swap.runs.replay import compact  # noqa: E402
from colbert_swap.proof.report.tables import table  # noqa: E402
from colbert_swap.core.store import Store  # noqa: E402
from colbert_swap.tasks.capture import capture  # noqa: E402
from colbert_swap.tasks.locate import locate  # noqa: E402

KNOBS = ["scale_layer", "kmeans_seed", "normalize_fp16", "eager", "sdpa_math", "index_bsize", "stable_sort",
         "no_autocast", "tf32", "no_fp16_reduction", "one_thread"]
TINY = ["collection.num_passages=120", "index.doc_maxlen=64", "index.index_bsize=16"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--store", default=None, help="default: a temporary folder")
    args = parser.parse_args()
    root = args.store or tempfile.mkdtemp(prefix="knobs-")
    quiet = lambda message: None  # noqa: E731
    cfg = lambda *o: compose(f"store.root={root}", *TINY, *o)  # noqa: E731
    start = time.perf_counter()
    target = capture(cfg("run=target"), progress=quiet)
    store = Store(root)
    rows, results = [], {}
    for knob in KNOBS:
        source = capture(cfg(f"run={knob}", f"perturb={knob}"), progress=quiet)
        before = compare_runs(store, source, target)
        result = locate(cfg(f"source={knob}", "target=target"), store, progress=quiet)
        cause = [n for g in result.minimal for n in compact(g, result.num_chunks)]
        order = [r.name for r in result.final_cmp.results if r.status == "order_only"]
        from colbert_swap.colbert.index_files import data_differences, run_index_differences

        index = run_index_differences(store, source, target)
        data = data_differences(index)
        first = ", ".join(f"`{n}`" for n in before.first_diverged()) or "nothing"
        located = ", ".join(f"`{n}`" for n in cause) or ("nothing: `ivf` in another order only" if order else "nothing")
        files = "changed" if data else "identical" if not index else "same data, config differs: " + \
            next(iter(index.values())).removeprefix("config: ")
        rows.append([f"`{knob}`", first, located, files])
        results[knob] = {"first_diverged": before.first_diverged(), "root_cause": cause, "order_only": order,
                         "index_files_differing": index}
    env = environment()
    machine = f"{env.get('cpu') or 'CPU'}, {short(env)}"
    md = "\n\n".join([f"# What each perturb knob changes on {machine}", "Command: `" + " ".join(
        ["ATEN_CPU_CAPABILITY=" + os.environ["ATEN_CPU_CAPABILITY"] + " "] if os.environ.get("ATEN_CPU_CAPABILITY") else [])
        + "python benchmarks/knobs.py " + " ".join(sys.argv[1:]) + f"` ({time.perf_counter() - start:.0f} s; tiny model, "
        "120 passages)", table(["`perturb=`", "first diverging artifact", "`locate` root cause",
                                "colbert-ai index files"], rows), ""])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(md)
    (out / "results.json").write_text(json.dumps({"machine": env, "knobs": results}, indent=1, default=str) + "\n")
    print(md)


if __name__ == "__main__":
    main()
