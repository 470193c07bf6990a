"""Benchmarks: colbert-ai's Indexer vs our capture, replay, sweep, locate, compare, k-means backends.

    python benchmarks/run.py --passages 5000 --model base --out benchmarks/results/h100-5k
    python benchmarks/run.py --passages 100000 --model base --kmeans fastkmeans --skip-indexer \\
        --steps capture,perturbed,locate --out benchmarks/results/h100-100k
    python benchmarks/run.py --kmeans-only 638000x128:8192,2000000x128:32768 --niters 10 \\
        --out benchmarks/results/h200-kmeans

Writes results.json and results.md (the command, the GPU, versions, one row per step with wall
seconds and peak GPU / host memory, and the per-stage seconds of each capture: where the time goes).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import psutil  # noqa: E402
import torch  # noqa: E402

from colbert_swap.env.provenance import environment  # noqa: E402

ROWS: list[dict] = []
PROFILED: list[str] = []  # step names (their first word) run under cProfile
PROFILES: dict[str, dict] = {}
OUT: list[Path] = []


@contextmanager
def measured(step: str, children: bool = False, **extra):
    """Wall seconds, peak GPU memory (torch allocator) and peak host RSS (sampled every 100 ms).

    Worker processes are added only where a step spawns them (`children=True`, the Indexer): walking the
    process tree reads every /proc entry and, holding the GIL, slowed our Python-heavy tokenization."""
    proc, peak, stop = psutil.Process(), [0], threading.Event()

    def sample():
        while not stop.is_set():
            rss = proc.memory_info().rss
            if children:
                rss += sum(c.memory_info().rss for c in proc.children(recursive=True))
            peak[0] = max(peak[0], rss)
            time.sleep(0.1)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    row = {"step": step, **extra}
    profiler = None
    if step.split()[0] in PROFILED:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        yield row
    finally:
        if profiler is not None:
            profiler.disable()
            write_profile(profiler, step)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        row["seconds"] = round(time.perf_counter() - start, 2)
        stop.set()
        thread.join()
        row["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None
        row["peak_host_gib"] = round(peak[0] / 2**30, 2)
        ROWS.append(row)
        print(f"[bench] {row}", flush=True)
        if OUT:
            write_results(OUT[0])  # after every step: a run cut short keeps what it measured


def write_profile(profiler, step: str) -> None:
    import io
    import pstats

    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(45)
    (OUT[0] / f"profile-{step.split()[0]}.txt").write_text(f"# cProfile of step: {step}\n{text.getvalue()}")


def cfg_for(args, store: str, *overrides: str):
    from colbert_swap.tasks import compose

    return compose(f"store.root={store}", f"model={args.model}", f"collection.num_passages={args.passages}",
                    f"index.kmeans_niters={args.niters}", *overrides)


class Timeline:
    """A progress callback noting when each message came: where a task's time goes, without a profiler's
    overhead (written as `seconds  message` lines)."""

    def __init__(self):
        self.began, self.lines = time.perf_counter(), []

    def __call__(self, message: str) -> None:
        self.lines.append((time.perf_counter() - self.began, message))

    def write(self, path: Path) -> None:
        path.write_text("".join(f"{t:8.2f} s  {m}\n" for t, m in self.lines))


def stage_profile(manifest) -> dict[str, float]:
    """Seconds per stage (chunks summed: embs.0 + embs.1 -> embs), from the manifest: where time goes."""
    per_node = {r.stage: r.seconds for r in manifest.artifacts.values() if not r.stage.startswith("inject:")}
    out: dict[str, float] = {}
    for node, seconds in per_node.items():
        out[node.split(".")[0]] = out.get(node.split(".")[0], 0.0) + seconds
    return {k: round(v, 2) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}


def warm_up() -> None:
    """Compile colbert-ai's C++/CUDA extensions once, untimed (both sides use the same cache)."""
    from colbert.indexing.codecs.residual import ResidualCodec
    from colbert.modeling.colbert import ColBERT

    ResidualCodec.try_load_torch_extensions(torch.cuda.is_available())
    ColBERT.try_load_torch_extensions(torch.cuda.is_available())


def run_indexer(cfg, root: Path) -> Path:
    from colbert import Indexer
    from colbert.infra import ColBERTConfig, Run, RunConfig

    from colbert_swap.colbert.resources import Resources
    from colbert_swap.core.store import Store

    res = Resources(cfg, Store(cfg.store.root), root)
    i = cfg.index
    with Run().context(RunConfig(nranks=1, experiment="indexer", root=str(root))):
        config = ColBERTConfig(doc_maxlen=i.doc_maxlen, nbits=i.nbits, kmeans_niters=i.kmeans_niters,
                               index_bsize=i.index_bsize, index_root=str(root))
        return Path(Indexer(checkpoint=res.checkpoint_path, config=config, verbose=0)
                    .index(name="indexer", collection=res.corpus.path, overwrite=True))


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def kmeans_bench(spec: str, niters: int) -> None:
    """Per size, in one process: each GPU backend run twice in full (niters iterations; are the two
    bitwise equal?) and once with one iteration; the torch versions' Lloyd loop alone as well, every
    iteration timed to a synchronize; faiss-cpu (one iteration) below `faiss_skip`'s size. Compilation
    and cuBLAS start-up are warmed up untimed. flash-kmeans (index.kmeans_backend=flash) runs twice over:
    `flash-fp32` on the fp32 points, `flash-fp16` on them as fp16 (what the backend gets: colbert-ai's
    fp16 sample), each handed over from host memory as the stage hands it.

    per_iteration: the median iteration of the loop alone for torch and torch-v1 (sampling, the copy
    to the GPU and the fp16 operands excluded: `setup_seconds`), (T(niters) - T(1)) / (niters - 1)
    of the full runs for fastkmeans and flash (their setup cancels), the whole one-iteration run for
    faiss-cpu (its setup is small beside it). per_iteration_with_setup: a full run's seconds / niters.
    inertia: mean squared distance of the points to their nearest centroid (float32, lower is better)."""
    import faiss

    from colbert_swap.colbert.kmeans import fast_kmeans, flash_kmeans, torch_kmeans

    for item in spec.split(","):
        shape, k = item.split(":")
        n, d = map(int, shape.split("x"))
        k = int(k)
        tag = f"{n}x{d}->{k}"
        data = torch.nn.functional.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(0)), dim=-1)
        data = data.half().float().numpy()  # what colbert-ai clusters: fp16 embeddings, as fp32
        small = data[: k * 4]
        half = torch.from_numpy(data).half()  # colbert-ai's sample is fp16 on the host
        fast_kmeans(small, k, 1, 123)  # compile the Triton kernels, untimed
        flash_kmeans(torch.from_numpy(small), k, 1, 123)  # flash-kmeans's, per dtype, untimed
        flash_kmeans(half[: k * 4], k, 1, 123)
        torch_kmeans(torch.from_numpy(small), k, 1, 123)  # cuBLAS handles and kernels, untimed
        torch_kmeans_v1(torch.from_numpy(small), k, 1, 123)
        runs = {"torch": lambda it: torch_kmeans(torch.from_numpy(data), k, it, 123),
                "torch-v1": lambda it: torch_kmeans_v1(torch.from_numpy(data), k, it, 123),
                "fastkmeans": lambda it: fast_kmeans(data, k, it, 123),
                "flash-fp32": lambda it: flash_kmeans(torch.from_numpy(data), k, it, 123),
                "flash-fp16": lambda it: flash_kmeans(half, k, it, 123)}
        results: dict[str, list] = {}
        totals: dict[str, list] = {}
        per_iteration: dict[str, float] = {}
        for _ in range(2):
            for name, fn in runs.items():
                with measured(f"kmeans {name}", shape=tag, iterations=niters) as row:
                    start = time.perf_counter()
                    results.setdefault(name, []).append(fn(niters))
                    _sync()
                    totals.setdefault(name, []).append(time.perf_counter() - start)
                    row["per_iteration_with_setup"] = round(totals[name][-1] / niters, 4)
        for name, fn in runs.items():
            with measured(f"kmeans {name}, 1 iteration", shape=tag, iterations=1) as row:
                start = time.perf_counter()
                fn(1)
                _sync()
                one = time.perf_counter() - start
            if niters > 1:
                row["per_iteration_marginal"] = round((min(totals[name]) - one) / (niters - 1), 4)
                per_iteration[name] = row["per_iteration_marginal"]
        for name, loop in (("torch", torch_loop), ("torch-v1", torch_v1_loop)):
            with measured(f"kmeans {name}, Lloyd loop alone", shape=tag, iterations=niters) as row:
                centroids, times, info = loop(torch.from_numpy(data), k, niters, 123)
                row.update(info)
                row["iteration_seconds"] = [round(t, 4) for t in times]
                row["per_iteration"] = per_iteration[name] = round(statistics.median(times), 4)
                row["equal_to_full_run"] = bool(torch.equal(centroids, results[name][0]))
        for name, (x, y) in results.items():
            note(f"{name}: two runs bitwise equal", shape=tag, equal=bool(torch.equal(x, y)),
                 inertia=round(inertia(data, x), 8))
        if not faiss_skip(n, k):
            with measured("kmeans faiss-cpu", shape=tag, iterations=1) as row:
                start = time.perf_counter()
                km = faiss.Kmeans(d, k, niter=1, gpu=False, verbose=False, seed=123)
                km.train(data)
                row["per_iteration"] = per_iteration["faiss-cpu"] = round(time.perf_counter() - start, 4)
        summary = {name: seconds for name, seconds in per_iteration.items()}
        if "faiss-cpu" in per_iteration:
            summary.update({f"{name} speedup over faiss-cpu": round(per_iteration["faiss-cpu"] / max(s, 1e-9), 1)
                            for name, s in per_iteration.items() if name != "faiss-cpu"})
        note("seconds per iteration", shape=tag, **summary)


def note(step: str, **extra) -> None:
    """A row that times nothing (a check or a summary)."""
    ROWS.append({"step": step, **extra, "seconds": 0, "peak_gpu_gib": None, "peak_host_gib": None})
    print(f"[bench] {ROWS[-1]}", flush=True)


def inertia(data, centroids: torch.Tensor) -> float:
    """Mean over points of the squared distance to the nearest centroid, float32 on the GPU when there is one."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x, c = torch.from_numpy(data).to(device), centroids.to(device)
    norms, total = (c * c).sum(1), torch.zeros((), dtype=torch.float64, device=device)
    for xs in x.split(max(1024, (1 << 27) // c.shape[0])):
        total += (torch.addmm(norms, xs, c.T, alpha=-2).amin(1) + (xs * xs).sum(1)).double().sum()
    return float(total) / x.shape[0]


def torch_loop(data: torch.Tensor, k: int, niters: int, seed: int):
    """colbert_swap.colbert.kmeans.torch_kmeans step by step: setup, then each Lloyd iteration timed."""
    from colbert_swap.colbert.kmeans import _Distances, _start, _update

    start = time.perf_counter()
    x, centroids = _start(data, k, seed, None)
    distances = _Distances(x, k)
    _sync()
    info = {"setup_seconds": round(time.perf_counter() - start, 4), "fp16_gemm": distances.half,
            "points_exact_in_fp16": distances.exact, "gemm_k": distances.points.shape[1],
            "chunk_rows": distances.chunk}
    times = []
    for _ in range(niters):
        start = time.perf_counter()
        centroids = _update(x, distances.nearest(centroids), centroids)
        _sync()
        times.append(time.perf_counter() - start)
    return centroids.cpu(), times, info


# The torch backend before issue 18, for comparison (fp16 products rounded to fp16, float64 prefix sums).
def torch_kmeans_v1(data: torch.Tensor, k: int, niter: int, seed: int, device: str | None = None) -> torch.Tensor:
    from colbert_swap.colbert.kmeans import _start  # the same sampling and initialisation as before issue 18

    x, centroids = _start(data, k, seed, device)
    for _ in range(niter):
        centroids = _update_v1(x, _assign_v1(x, centroids), centroids)
    return centroids.cpu()


def _assign_v1(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    k = centroids.shape[0]
    norms = (centroids * centroids).sum(1)  # (k,)
    dtype = torch.float16 if x.is_cuda else torch.float32
    c = centroids.to(dtype)
    chunk = max(1024, (1 << 28) // k)
    labels = [(norms - 2 * (xs.to(dtype) @ c.T).float()).argmin(1) for xs in x.split(chunk)]
    return torch.cat(labels)  # (n,) int64


def _update_v1(x: torch.Tensor, labels: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    k = old.shape[0]
    counts = torch.bincount(labels, minlength=k)  # integer counts: exact in any order
    ordered = x[torch.argsort(labels, stable=True)].double()
    prefix = torch.cat([ordered.new_zeros(1, x.shape[1]), ordered.cumsum(0)])  # (n + 1, d)
    ends = counts.cumsum(0)
    sums = prefix[ends] - prefix[ends - counts]  # (k, d)
    means = (sums / counts.clamp(min=1).unsqueeze(1)).float()
    empty = (counts == 0).nonzero().squeeze(1)
    if empty.numel():  # split the largest clusters, one per empty centroid (faiss: EPS = 1 / 1024)
        largest = torch.argsort(counts, descending=True, stable=True)[: empty.numel()]
        means[empty] = means[largest] * (1 + 1 / 1024)
        means[largest] = means[largest] * (1 - 1 / 1024)
    return means


def torch_v1_loop(data: torch.Tensor, k: int, niters: int, seed: int):
    start = time.perf_counter()
    from colbert_swap.colbert.kmeans import _start

    x, centroids = _start(data, k, seed, None)
    _sync()
    info = {"setup_seconds": round(time.perf_counter() - start, 4)}
    times = []
    for _ in range(niters):
        start = time.perf_counter()
        centroids = _update_v1(x, _assign_v1(x, centroids), centroids)
        _sync()
        times.append(time.perf_counter() - start)
    return centroids.cpu(), times, info


def faiss_skip(n: int, k: int) -> bool:
    """faiss-cpu takes ~100 s per iteration at 2M x 32768 on 16 cores: measured only below that size."""
    return n * k > 638_000 * 8192 * 2


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--passages", type=int, default=5000)
    ap.add_argument("--model", default="base")
    ap.add_argument("--niters", type=int, default=4)
    ap.add_argument("--kmeans", default="faiss")
    ap.add_argument("--skip-indexer", action="store_true")
    ap.add_argument("--steps", default="capture,sequential,perturbed,compare,inject,sweep,locate,gpu-kmeans")
    ap.add_argument("--kmeans-only", default="")
    ap.add_argument("--store", default="/tmp/bench-store")
    ap.add_argument("--out", required=True)
    ap.add_argument("--profile", default="", help="comma-separated steps to run under cProfile (top functions "
                                                  "by cumulative time go to OUT/profile-STEP.txt)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    OUT.append(out)
    PROFILED.extend(args.profile.split(",") if args.profile else [])
    steps = args.steps.split(",")
    profiles = PROFILES

    if args.kmeans_only:
        kmeans_bench(args.kmeans_only, args.niters)
    else:
        from colbert_swap.proof.compare.runs import compare_runs
        from colbert_swap.colbert.index_files import index_differences
        from colbert_swap.runs.replay import replay
        from colbert_swap.core.store import Store
        from colbert_swap.tasks.capture import capture
        from colbert_swap.tasks.locate import locate

        quiet = lambda m: None  # noqa: E731
        km = f"index.kmeans_backend={args.kmeans}"
        base = cfg_for(args, args.store, "run=bench", km)
        store = Store(args.store)
        from colbert_swap.colbert.resources import Resources

        Resources(base, store, Path(args.store)).checkpoint_path  # build model and collection, untimed
        Resources(base, store, Path(args.store)).corpus
        warm_up()
        if not args.skip_indexer:
            with measured("colbert-ai Indexer (spawned worker)", children=True, passages=args.passages):
                ref = run_indexer(base, Path(args.store) / "indexer")
        if "capture" in steps:
            timeline = Timeline()
            with measured("capture (all intermediates stored)", passages=args.passages, kmeans=args.kmeans):
                target = capture(base, progress=timeline)
            timeline.write(out / "capture-timeline.txt")
            profiles["capture"] = stage_profile(target)
            if not args.skip_indexer:
                diffs = index_differences(store.run_dir("bench") / "index", ref)
                ROWS[-1]["index_equal_to_indexer"] = not diffs
                ROWS[-1]["index_differences"] = diffs
        if "sequential" in steps and "capture" in steps:
            with measured("capture, encoder not pipelined (index.pipeline=false)", passages=args.passages) as row:
                seq = capture(cfg_for(args, args.store, "run=bench-sequential", km, "index.pipeline=false"),
                              progress=quiet)
            profiles["capture, not pipelined"] = stage_profile(seq)
            same = {n: r.ref.hash for n, r in seq.artifacts.items()} == \
                {n: r.ref.hash for n, r in target.artifacts.items()}
            row["every_artifact_equal_to_pipelined"] = same
        if "perturbed" in steps:
            with measured("capture of a second run (perturb=eager)", passages=args.passages):
                capture(cfg_for(args, args.store, "run=bench-eager", "perturb=eager", km), progress=quiet)
        if "capture" not in steps and "bench" in store.runs():
            target = store.load("bench")  # captured by an earlier call into the same store
        source = store.load("bench-eager") if "bench-eager" in store.runs() else None
        if "compare" in steps and source:
            with measured("compare (all artifacts)"):
                compare_runs(store, source, target, force=True)
        if "inject" in steps and source:
            with measured("replay from local_sample_embs"):
                replay(cfg_for(args, args.store, km), store, target, source, ["local_sample_embs"], progress=quiet)
        if "sweep" in steps and source:
            points = ["local_sample_embs", "sample", "prenorm_centroids", "postnorm_centroids", "centroids",
                      "half_centroids", "embs", "codes", "residuals", "ivf"]
            with measured("sweep over every injection point", points=len(points)):
                for point in points:
                    replay(cfg_for(args, args.store, km), store, target, source, [point], progress=quiet)
        if "locate" in steps and source:
            timeline = Timeline()
            with measured("locate (rounds + pruning)") as row:
                result = locate(cfg_for(args, args.store, km, "source=bench-eager", "target=bench"), store,
                                progress=timeline)
                row["root_cause"] = [n for g in result.minimal for n in g][:4]
            timeline.write(out / "locate-timeline.txt")
        if "gpu-kmeans" in steps and args.kmeans == "faiss":
            with measured("capture with kmeans_backend=torch", passages=args.passages):
                fk = capture(cfg_for(args, args.store, "run=bench-torch-kmeans", "index.kmeans_backend=torch"),
                             progress=quiet)
            profiles["capture, torch k-means"] = stage_profile(fk)

    write_results(out)
    print((out / "results.md").read_text())


def write_results(out: Path) -> None:
    env = environment()
    result = {"command": " ".join([sys.executable.split("/")[-1], *sys.argv]), "gpu": env["gpu"], "env": env,
              "rows": ROWS, "stage_seconds": PROFILES}
    (out / "results.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    lines = [f"# {out.name}", "", f"`{result['command']}`", "",
             f"GPU: {env['gpu']}; torch {env['torch']} (CUDA {env['cuda']}); transformers {env['transformers']}; "
             f"colbert-ai {env['colbert-ai']}; faiss {env['faiss']}; CPU threads {env['torch_threads']}", "",
             "| step | seconds | peak GPU GiB | peak host GiB | notes |", "|---|---|---|---|---|"]
    for row in ROWS:
        notes = {k: v for k, v in row.items() if k not in ("step", "seconds", "peak_gpu_gib", "peak_host_gib")}
        lines.append(f"| {row['step']} | {row['seconds']} | {row['peak_gpu_gib']} | {row['peak_host_gib']} | "
                     f"{json.dumps(notes) if notes else ''} |")
    for name, prof in PROFILES.items():
        lines += ["", f"Seconds per stage, {name}: " + ", ".join(f"{k} {v}" for k, v in prof.items())]
    (out / "results.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
