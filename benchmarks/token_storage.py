"""What the token artifacts cost in the store: bytes per passage of `tokens.N` (+ masks + order) and of
`sample_tokens`, against `embs.N` (float16, dim 128), at 100,000 synthetic passages (doc_maxlen 180,
index_bsize 64, colbert-ai's chunks of 25,000). Tokenization only: no model forward, so it runs on a CPU.

    python benchmarks/token_storage.py --passages 100000 --out benchmarks/results/token-storage-cpu
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--passages", type=int, default=100_000)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    from colbert_swap.tasks import compose
    from colbert_swap.colbert.resources import Resources
    from colbert_swap.colbert.stages.setup import chunksize, tokenize
    from colbert_swap.core.store import Store

    root = tempfile.mkdtemp(prefix="token-storage-")
    cfg = compose(f"store.root={root}", f"collection.num_passages={args.passages}", "index.device=cpu")
    store = Store(root)
    res = Resources(cfg, store, Path(root) / "run")
    passages = res.corpus.passages
    size = chunksize(len(passages), res.index)
    dim = res.colbert_config.dim
    rows, kept, seconds = {}, 0, 0.0
    for c in range(0, len(passages), size):
        start = time.perf_counter()
        ids, masks, order = tokenize(passages[c:c + size], res.checkpoint, res.colbert_config)
        seconds += time.perf_counter() - start
        chunk = c // size
        for name, value in ((f"tokens.{chunk}", ids), (f"token_masks.{chunk}", masks), (f"token_order.{chunk}", order)):
            ref = store.blobs.put(value)
            rows[name] = store.blobs.path(ref).stat().st_size
        skip = set(k for k in getattr(res.checkpoint, "skiplist", {}) if isinstance(k, int))
        real = ids[masks.bool()]
        kept += int(sum(1 for t in real.tolist() if t not in skip))  # rows embs.N would hold
    token_bytes = sum(rows.values())
    embs_bytes = kept * dim * 2
    result = {"command": " ".join(["python", *sys.argv]), "passages": len(passages), "chunks": len(passages) // size
              + bool(len(passages) % size), "doc_maxlen": res.index.doc_maxlen, "index_bsize": res.index.index_bsize,
              "token_files_bytes": token_bytes, "token_bytes_per_passage": round(token_bytes / len(passages), 1),
              "embs_bytes_fp16": embs_bytes, "embs_bytes_per_passage": round(embs_bytes / len(passages), 1),
              "tokens_vs_embs": round(token_bytes / embs_bytes, 4), "tokenize_seconds": round(seconds, 1),
              "passages_per_second": round(len(passages) / seconds), "files": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "results.md").write_text(
        f"# token storage\n\n`{result['command']}`\n\n"
        f"{result['passages']:,} passages in {result['chunks']} chunks (doc_maxlen {result['doc_maxlen']}, index_bsize "
        f"{result['index_bsize']}): `tokens.N` + `token_masks.N` + `token_order.N` take {token_bytes:,} bytes, "
        f"**{result['token_bytes_per_passage']} bytes per passage**; `embs.N` (float16, dim {dim}) would take "
        f"{embs_bytes:,} bytes, {result['embs_bytes_per_passage']} per passage: the tokens add "
        f"{100 * result['tokens_vs_embs']:.1f}% to the chunks' embeddings (`sample_tokens` adds the same per sampled "
        f"passage). Tokenized at {result['passages_per_second']:,} passages/s on this CPU.\n")
    print((out / "results.md").read_text())


if __name__ == "__main__":
    main()
