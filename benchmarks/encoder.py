"""Where the encoder's time goes: colbert-ai's tokenizer call in this process vs in forked workers, the
pipelined encoder vs colbert-ai's per-batch path, with pageable or pinned inputs, and a bare forward.

    python benchmarks/encoder.py --passages 25000 --model base --out benchmarks/results/h200-encoder

Every variant's outputs are hashed: the table says whether they equal the first variant's.
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


def digest(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(name: str, fn, passages: int, reference: dict, key: str, **extra):
    sync()
    start = time.perf_counter()
    out = fn()
    sync()
    seconds = time.perf_counter() - start
    h = digest(*out)
    reference.setdefault(key, h)
    ROWS.append({"step": name, "seconds": round(seconds, 3), "passages_per_s": round(passages / seconds),
                 "equal_to_first": h == reference[key], **extra})
    print(ROWS[-1], flush=True)
    return out


def pinned_doc_batch(original):
    def doc_batch(checkpoint, input_ids, attention_mask, kept, device):
        if device == "cuda":
            input_ids, attention_mask, kept = input_ids.pin_memory(), attention_mask.pin_memory(), kept.pin_memory()
        return original(checkpoint, input_ids, attention_mask, kept, device)
    return doc_batch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--passages", type=int, default=25000)
    parser.add_argument("--model", default="base")
    parser.add_argument("--processes", default="0,4,8")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    cfg = compose(f"model={args.model}", f"collection.num_passages={args.passages}")
    res = Resources(cfg, Store(tempfile.mkdtemp()), Path(tempfile.mkdtemp()))
    passages, checkpoint, config = res.corpus.passages, res.checkpoint, res.colbert_config
    ref: dict = {}
    tokens = None
    for p in [int(x) for x in args.processes.split(",")]:
        out = timed(f"tokenize, tokenizer_processes={p}",
                    lambda: setup.tokenize(passages, checkpoint, config, p), len(passages), ref, "tokens")
        tokens = tokens or out
    ids, masks, order = tokens
    quiet = lambda done, total: None  # noqa: E731
    encode = lambda pipeline: setup.encode_tokens(ids, masks, order, checkpoint, config, quiet, pipeline)  # noqa
    timed("encode, pipeline (warm-up)", lambda: encode(True), len(passages), ref, "embs")
    timed("encode, pipeline", lambda: encode(True), len(passages), ref, "embs")
    timed("encode, colbert-ai's per-batch path", lambda: encode(False), len(passages), ref, "embs")
    original = setup.doc_batch
    setup.doc_batch = pinned_doc_batch(original)
    try:
        timed("encode, pipeline, inputs pinned per batch", lambda: encode(True), len(passages), ref, "embs")
    finally:
        setup.doc_batch = original
    tokens_total = int(masks.sum())

    def forward():
        group = config.index_bsize * 50
        with torch.no_grad(), checkpoint.amp_manager.context():
            for start in range(0, len(passages), group):
                g_masks = masks[start:start + group].to(torch.int64)
                width = int(g_masks.sum(1).max())
                g_ids = ids[start:start + group, :width].to(torch.int64).to(checkpoint.bert.device)
                g_masks = g_masks[:, :width].to(checkpoint.bert.device)
                indices = (order[start:start + group] - start).sort().indices.to(checkpoint.bert.device)
                for i, m in zip(g_ids[indices].split(config.index_bsize), g_masks[indices].split(config.index_bsize)):
                    checkpoint.bert(i, attention_mask=m)
        return (torch.zeros(1),)
    timed("bare BERT forward, same batches, inputs on the device", forward, len(passages), ref, "forward",
          tokens=tokens_total)
    args.out.mkdir(parents=True, exist_ok=True)
    env = environment()
    command = "python benchmarks/encoder.py " + " ".join(sys.argv[1:])
    (args.out / "results.json").write_text(json.dumps({"command": command, "rows": ROWS, "environment": env,
                                                       "cpus": os.cpu_count()}, indent=1, default=str))
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none (CPU)"
    lines = [f"# {args.out.name}", "", f"`{command}`", "",
             f"GPU: {gpu}; torch {torch.__version__}; {os.cpu_count()} CPUs; {len(passages)} passages, "
             f"{tokens_total} tokens", "", "| step | seconds | passages/s | equal to the first |", "|---|---|---|---|"]
    lines += [f"| {r['step']} | {r['seconds']} | {r['passages_per_s']} | {r['equal_to_first']} |" for r in ROWS]
    (args.out / "results.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
