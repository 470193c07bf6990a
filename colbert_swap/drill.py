"""Module drill-down: every named module's output of the ColBERT model on a fixed probe set.

Probe passages are spread over the collection's length range and batched exactly as colbert-ai's
encoder batches them (`DocTokenizer.tensorize` pads the group, sorts by length, cuts `index_bsize`
batches), so each batch has the padded length colbert-ai would give it. Hook names are the model's
`named_modules()` paths (`bert.encoder.layer.3.intermediate.dense`); `colbert.doc` is the normalized
output of `Checkpoint.doc`. Outputs are recorded in the order modules finish.
"""

from __future__ import annotations

import torch

DOC = "colbert.doc"


def probe_passages(passages: list[str], count: int) -> list[str]:
    """`count` passages at evenly spaced ranks of length (shortest to longest), in pid order."""
    ranked = sorted(range(len(passages)), key=lambda pid: (len(passages[pid]), pid))
    count = min(count, len(passages))
    picked = sorted({ranked[round(i * (len(ranked) - 1) / max(count - 1, 1))] for i in range(count)})
    return [passages[pid] for pid in picked]


def module_outputs(checkpoint, passages: list[str], bsize: int) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """{'<batch>/<module>': output}, in finishing order, and per batch its size and padded length."""
    batches, _ = checkpoint.doc_tokenizer.tensorize(passages, bsize=bsize)
    outputs: dict[str, torch.Tensor] = {}
    current = [0]

    def hook(name):
        def record(module, args, output):
            first = output[0] if isinstance(output, (tuple, list)) else output
            if isinstance(first, torch.Tensor):
                outputs[f"{current[0]}/{name}"] = first.detach().to("cpu").clone()  # (B, L, H) mostly
        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in checkpoint.model.named_modules() if name]
    info = []
    try:
        for b, (ids, mask) in enumerate(batches):
            current[0] = b
            D, _ = checkpoint.doc(ids, mask, keep_dims="return_mask")  # (B, L, dim), normalized
            outputs[f"{b}/{DOC}"] = D.detach().to("cpu").clone()
            info.append({"batch": b, "size": int(ids.shape[0]), "padded_len": int(ids.shape[1])})
    finally:
        for h in handles:
            h.remove()
    return outputs, info
