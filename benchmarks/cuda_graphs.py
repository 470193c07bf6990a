"""Is the encoder's forward bound by the host's kernel launches? colbert-ai's per-batch operations (setup.doc_batch)
run eagerly vs replayed from one CUDA graph per batch shape: the same kernels, so the outputs must be bitwise equal.

    python benchmarks/cuda_graphs.py --passages 25000 --model base --out benchmarks/results/h200-cuda-graphs
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from colbert_swap.tasks import compose  # noqa: E402
from colbert_swap.env.provenance import environment  # noqa: E402
from colbert_swap.colbert.resources import Resources  # noqa: E402
from colbert_swap.colbert.stages import setup  # noqa: E402
from colbert_swap.core.store import Store  # noqa: E402

ROWS: list[dict] = []


def batches(ids, masks, order, checkpoint, config):
    """Every batch's (ids, mask, kept) on the CPU, as the pipeline hands them to `doc_batch` (recorded from
    one eager encode_tokens call)."""
    out = []
    eager = setup.doc_batch

    def recording(checkpoint_, input_ids, attention_mask, kept, device):
        out.append((input_ids, attention_mask, kept))
        return eager(checkpoint_, input_ids, attention_mask, kept, device)

    setup.doc_batch = recording
    try:
        setup.encode_tokens(ids, masks, order, checkpoint, config, lambda done, total: None, pipeline=True)
    finally:
        setup.doc_batch = eager
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--passages", type=int, default=25000)
    parser.add_argument("--model", default="base")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    cfg = compose(f"model={args.model}", f"collection.num_passages={args.passages}")
    res = Resources(cfg, Store(tempfile.mkdtemp()), Path(tempfile.mkdtemp()))
    checkpoint, config = res.checkpoint, res.colbert_config
    ids, masks, order = setup.tokenize(res.corpus.passages, checkpoint, config, 8)
    work = batches(ids, masks, order, checkpoint, config)
    shapes = {(tuple(i.shape), bool(m.all())) for i, m, _ in work}
    print(f"{len(work)} batches, {len(shapes)} distinct (shape, all-ones mask)", flush=True)
    from colbert_swap.colbert.graphs import GraphedDocBatch, graphs_usable

    print("graphs usable:", graphs_usable(checkpoint, "cuda"), flush=True)

    def run(fn):
        torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.inference_mode():
            outs = [fn(checkpoint, i, m, k, "cuda") for i, m, k in work]
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        h = hashlib.sha256()
        for o in outs:
            h.update(o.cpu().contiguous().view(torch.uint8).numpy().tobytes())
        return seconds, h.hexdigest()[:16]

    graphed = GraphedDocBatch(checkpoint, setup.doc_batch)
    ref = None
    for name, fn in [("eager (warm-up)", setup.doc_batch), ("eager", setup.doc_batch),
                     ("CUDA graphs, capturing", graphed), ("CUDA graphs, replayed", graphed),
                     ("eager again", setup.doc_batch)]:
        seconds, h = run(fn)
        ref = ref or h
        ROWS.append({"step": name, "seconds": round(seconds, 3), "passages_per_s": round(args.passages / seconds),
                     "ms_per_batch": round(1000 * seconds / len(work), 2), "equal_to_eager": h == ref,
                     "graphs": len(graphed.graphs)})
        print(ROWS[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/cuda_graphs.py " + " ".join(sys.argv[1:])
    (args.out / "results.json").write_text(json.dumps({"command": command, "rows": ROWS, "environment": environment(),
                                                       "batches": len(work), "shapes": len(shapes)}, indent=1,
                                                      default=str))
    lines = [f"# {args.out.name}", "", f"`{command}`", "",
             f"GPU: {torch.cuda.get_device_name()}; torch {torch.__version__}; {len(work)} batches of "
             f"{config.index_bsize}, {len(shapes)} distinct (shape, all-ones mask)", "",
             "| step | seconds | passages/s | ms per batch | bitwise equal to eager | graphs |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['step']} | {r['seconds']} | {r['passages_per_s']} | {r['ms_per_batch']} | {r['equal_to_eager']} "
              f"| {r['graphs']} |" for r in ROWS]
    (args.out / "results.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
