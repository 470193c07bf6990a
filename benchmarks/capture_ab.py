"""A capture with and without the store's writer thread, each in a fresh process, into a store of its own
(so every file is written: none is already there).

    python benchmarks/capture_ab.py --passages 100000 --variant writer --store /tmp/ab-1 --out DIR
    python benchmarks/capture_ab.py --passages 100000 --variant none --store /tmp/ab-2 --out DIR
    python benchmarks/capture_ab.py --summary --out DIR      # the table, and whether every artifact is equal

`--variant writer,graphs`: tensor files written by the writer thread and the encoder's batches replayed
from CUDA graphs (the defaults); leave either out to turn it off (`none`: neither).
(results/h200-100k-writer-warmup also measured an encoder warm-up on the GPU while the sample was tokenized,
at commit 9dcea9b: it gained nothing and was removed.)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def capture_once(args) -> None:
    from run import cfg_for, stage_profile, warm_up  # benchmarks/run.py

    from colbert_swap.colbert.resources import Resources
    from colbert_swap.core.store import Store
    from colbert_swap.core.store.blobs import BlobStore
    from colbert_swap.tasks.capture import capture

    on = set(args.variant.split(",")) if args.variant else set()
    if "writer" not in on:
        put = BlobStore.put
        BlobStore.put = lambda self, value, behind=False: put(self, value, behind=False)
    graphs = f"index.cuda_graphs={'graphs' in on}"
    cfg = cfg_for(args, args.store, f"index.kmeans_backend={args.kmeans}", "run=ab", graphs)
    store = Store(args.store)
    Resources(cfg, store, Path(args.store)).checkpoint_path  # the model's and the collection's files, untimed
    Resources(cfg, store, Path(args.store)).corpus
    warm_up()  # colbert-ai's extensions compiled (or loaded) untimed
    start = time.perf_counter()
    manifest = capture(cfg, progress=lambda m: None)
    seconds = time.perf_counter() - start
    row = {"variant": args.variant or "none", "seconds": round(seconds, 2), "store": args.store,
           "stages": stage_profile(manifest)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "rows.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row))


def summary(args) -> None:
    from colbert_swap.core.store import Store

    out = Path(args.out)
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    hashes = [{k: r.ref.hash for k, r in Store(row["store"]).load("ab").artifacts.items()} for row in rows]
    same = all(h == hashes[0] for h in hashes)
    lines = [f"# {out.name}", "", f"`{' '.join(sys.argv)}`, after one process per row:", "",
             "| variant (on) | capture s | embs | local_sample_embs | sample_tokens | tokens | prenorm_centroids |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        s = row["stages"]
        lines.append(f"| {row['variant']} | {row['seconds']} | " + " | ".join(
            str(s.get(k, "")) for k in ("embs", "local_sample_embs", "sample_tokens", "tokens", "prenorm_centroids")) + " |")
    lines += ["", f"every artifact's hash equal in all rows: {same}"]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--passages", type=int, default=100_000)
    ap.add_argument("--model", default="base")
    ap.add_argument("--niters", type=int, default=4)
    ap.add_argument("--kmeans", default="torch")
    ap.add_argument("--variant", default="writer")
    ap.add_argument("--store", default="/tmp/ab")
    ap.add_argument("--out", required=True)
    ap.add_argument("--summary", action="store_true")
    a = ap.parse_args()
    summary(a) if a.summary else capture_once(a)
