"""Where a locate's time goes: the replays of an earlier locate removed from the store, the same locate
again under cProfile (the cumulative top 45 functions). Run after `bash benchmarks/h200.sh 100k`:

    python3 benchmarks/locate_profile.py --store /tmp/bench-100k --out $OUT/h200-100k-locate-profile.txt
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from colbert_swap.tasks import compose  # noqa: E402
from colbert_swap.core.store import Store  # noqa: E402
from colbert_swap.tasks.locate import locate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", required=True)
    ap.add_argument("--passages", type=int, default=100000)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    store = Store(args.store)
    for label in store.runs():
        if "@" in label:  # a replay of the earlier locate: its outputs would be reused
            shutil.rmtree(store.run_dir(label))
    cfg = compose(f"store.root={args.store}", "model=base", f"collection.num_passages={args.passages}",
                  "index.kmeans_niters=4", "index.kmeans_backend=torch", "source=bench-eager", "target=bench")
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    result = locate(cfg, store, progress=lambda m: print(f"[{time.perf_counter() - start:7.1f}s] {m}", flush=True))
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(45)
    args.out.write_text(f"locate under cProfile: {time.perf_counter() - start:.1f} s, root cause "
                        f"{result.minimal}\n\n{text.getvalue()}")
    print(text.getvalue()[:6000])


if __name__ == "__main__":
    main()
