"""Module drill-down: every named module's output of the ColBERT model on a fixed probe set.

Probe passages are spread over the collection's length range, split by length into a few calls, and
batched exactly as colbert-ai's encoder batches a call (`DocTokenizer.tensorize` pads the call, sorts by
length, cuts batches), so each batch has the padded length colbert-ai would give it. Hook names are the model's
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


def module_outputs(checkpoint, passages: list[str], bsizes: list[int],
                   groups: int = 3) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """{'<batch>/<module>': output}, in finishing order, and per batch its size and padded length.

    colbert-ai pads a whole `docFromText` call to its longest passage before cutting batches, so the
    padded length belongs to the call: the probes are split by length into `groups` calls (short to
    long) to cover several padded lengths, each batched once per size in `bsizes`."""
    ordered = sorted(passages, key=len)
    size = -(-len(ordered) // max(1, min(groups, len(ordered))))
    calls = [ordered[i:i + size] for i in range(0, len(ordered), size)]
    batches = [(bsize, batch) for call in calls for bsize in bsizes
               for batch in checkpoint.doc_tokenizer.tensorize(call, bsize=bsize)[0]]
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
        for b, (bsize, (ids, mask)) in enumerate(batches):
            current[0] = b
            D, _ = checkpoint.doc(ids, mask, keep_dims="return_mask")  # (B, L, dim), normalized
            outputs[f"{b}/{DOC}"] = D.detach().to("cpu").clone()
            info.append({"batch": b, "bsize": bsize, "size": int(ids.shape[0]), "padded_len": int(ids.shape[1])})
    finally:
        for h in handles:
            h.remove()
    return outputs, info


def op_trace(checkpoint, passages: list[str], bsize: int, module_name: str):
    """Every aten operation run inside `module_name`, per batch: its name, the content hashes of its
    tensor inputs, its first tensor output, and the kernel context (device, autocast, TF32, SDPA)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    from colbert_swap.store.blobs import tensor_hash

    modules = dict(checkpoint.model.named_modules())
    if module_name not in modules:
        from colbert_swap.errors import UserError

        raise UserError(f"module={module_name!r} is not a module of this model (see the drill report's list)")

    class Recorder(TorchDispatchMode):
        active = False

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if self.active:
                first = out[0] if isinstance(out, (tuple, list)) else out
                if isinstance(first, torch.Tensor):
                    ins = [tensor_hash(a) for a in tree_flatten((args, kwargs or {}))[0] if isinstance(a, torch.Tensor)]
                    ops.append({"op": str(func), "inputs": ins, "output": first.detach().to("cpu").clone()})
            return out

    ops: list[dict] = []
    recorder = Recorder()
    module = modules[module_name]
    handles = [module.register_forward_pre_hook(lambda *a: setattr(recorder, "active", True)),
               module.register_forward_hook(lambda *a: setattr(recorder, "active", False))]
    batches, _ = checkpoint.doc_tokenizer.tensorize(passages, bsize=bsize)
    context = {"device": str(checkpoint.device), "autocast": bool(checkpoint.amp_manager.activated),
               "tf32": bool(torch.backends.cuda.matmul.allow_tf32),
               "fp16_reduction": bool(torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction)}
    try:
        with recorder:
            for ids, mask in batches:
                checkpoint.doc(ids, mask, keep_dims="return_mask")
    finally:
        for h in handles:
            h.remove()
    return ops, context
