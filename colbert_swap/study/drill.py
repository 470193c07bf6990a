"""Module drill-down: every named module's output of the ColBERT model on a fixed probe set, and the aten
operations inside one module.

Probe passages are spread over the collection's length range, split by length into a few calls, and
batched exactly as colbert-ai's encoder batches a call (`DocTokenizer.tensorize` pads the call, sorts by
length, cuts batches), so each batch has the padded length colbert-ai would give it. Both drills run the
very same calls and batches (`probe_batches`). Hook names are the model's `named_modules()` paths
(`bert.encoder.layer.3.intermediate.dense`); `colbert.doc` is the normalized output of `Checkpoint.doc`,
and its operation trace holds the functional steps of `ColBERT.doc` outside `bert` and `linear` (the
punctuation mask and the final normalize). Outputs are recorded in the order modules finish.
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


def probe_batches(checkpoint, passages: list[str], bsizes: list[int], groups: int = 3) -> list[tuple]:
    """[(bsize, input_ids, attention_mask)]: the probes split by length into `groups` calls (short to long;
    colbert-ai pads a whole `docFromText` call to its longest passage, so the padded length belongs to the
    call), each call batched once per size in `bsizes`, as colbert-ai's tokenizer batches it."""
    ordered = sorted(passages, key=len)
    size = -(-len(ordered) // max(1, min(groups, len(ordered))))
    calls = [ordered[i:i + size] for i in range(0, len(ordered), size)]
    return [(bsize, ids, mask) for call in calls for bsize in bsizes
            for ids, mask in checkpoint.doc_tokenizer.tensorize(call, bsize=bsize)[0]]


def drillable(checkpoint) -> list[str]:
    """Every name the module drill reports: the model's named modules, then `colbert.doc`."""
    return [name for name, _ in checkpoint.model.named_modules() if name] + [DOC]


def module_outputs(checkpoint, passages: list[str], bsizes: list[int]) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """{'<batch>/<module>': output}, in finishing order, and per batch its size and padded length."""
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
        for b, (bsize, ids, mask) in enumerate(probe_batches(checkpoint, passages, bsizes)):
            current[0] = b
            D, _ = checkpoint.doc(ids, mask, keep_dims="return_mask")  # (B, L, dim), normalized
            outputs[f"{b}/{DOC}"] = D.detach().to("cpu").clone()
            info.append({"batch": b, "bsize": bsize, "size": int(ids.shape[0]), "padded_len": int(ids.shape[1])})
    finally:
        for h in handles:
            h.remove()
    return outputs, info


def kernel_context(checkpoint, attn: str | None) -> dict:
    """What decides which kernels ran: device, the attention implementation actually set on BERT, the SDPA
    backend, autocast as it acts (colbert-ai's `torch.cuda.amp.autocast` does nothing on the CPU), TF32 and
    fp16 reduced-precision reductions (cuBLAS only), and the CPU kernels torch picked."""
    device = str(checkpoint.device)
    cuda = device.startswith("cuda")
    impl = getattr(getattr(checkpoint.bert, "config", None), "_attn_implementation", None) or "eager"
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # torch < 2.1
        capability = None
    return {"device": device, "attention": impl,
            "sdpa_backend": ("math only" if attn == "sdpa_math" else "torch's choice") if impl == "sdpa" else "-",
            "autocast": ("fp16" if checkpoint.amp_manager.activated else "off") if cuda else
            "off (CPU: colbert-ai's CUDA autocast does nothing)",
            "tf32": bool(torch.backends.cuda.matmul.allow_tf32) if cuda else "- (CPU)",
            "fp16_reduction": bool(torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction) if cuda
            else "- (CPU)",
            "cpu_capability": capability}


def op_trace(checkpoint, passages: list[str], bsizes: list[int], module_name: str):
    """Every aten operation run inside `module_name` on the probe batches (the module drill's own), in
    order: its name, the content hashes of its tensor inputs, its first tensor output. Also returns the
    content hash -> name of the model's parameters and buffers, so a differing input can be named."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    from colbert_swap.errors import UserError
    from colbert_swap.core.store.blobs import tensor_hash

    modules = dict(checkpoint.model.named_modules())
    if module_name not in modules and module_name != DOC:
        raise UserError(f"module={module_name!r} is not a module of this model; drillable names: "
                        f"{', '.join(drillable(checkpoint)[:8])}, ... (the drill report lists them all)")

    class Recorder(TorchDispatchMode):
        depth = 0  # inside `module_name` (or, for colbert.doc: inside doc() and outside its child modules)

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if self.depth == 1:
                first = out[0] if isinstance(out, (tuple, list)) else out
                if isinstance(first, torch.Tensor):
                    ins = [tensor_hash(a) for a in tree_flatten((args, kwargs or {}))[0] if isinstance(a, torch.Tensor)]
                    ops.append({"op": str(func), "inputs": ins, "output": first.detach().to("cpu").clone(),
                                "batch": batch[0]})
            return out

    ops: list[dict] = []
    batch = [0]
    recorder = Recorder()

    def enter(*_):
        recorder.depth += 1

    def leave(*_):
        recorder.depth -= 1

    if module_name == DOC:  # the doc() call counts as one level, its child modules take it back out
        targets, inverted = [m for _, m in checkpoint.model.named_children()], True
    else:
        targets, inverted = [modules[module_name]], False
    handles = [h for m in targets for h in (m.register_forward_pre_hook(leave if inverted else enter),
                                             m.register_forward_hook(enter if inverted else leave))]
    params = {tensor_hash(t): name for name, t in [*checkpoint.model.named_parameters(),
                                                   *checkpoint.model.named_buffers()]}
    try:
        with recorder:
            for b, (_, ids, mask) in enumerate(probe_batches(checkpoint, passages, bsizes)):
                batch[0] = b
                recorder.depth = 1 if inverted else 0
                checkpoint.doc(ids, mask, keep_dims="return_mask")
    finally:
        for h in handles:
            h.remove()
    return ops, params


# Operations that compute nothing: views (the output aliases the input: only shape and strides change) and
# plain copies (clone, contiguous, _unsafe_view, lift_fresh), by base name (`aten.transpose.int` ->
# `transpose`; a functionalized `<view>_copy` counts as its view). Their outputs hold their inputs' elements
# unchanged, so a span of operations that differs is named by its other operations, the ones that compute.
# A name set, not the op schemas' alias annotations: traces keep op names only, they may come from another
# torch version, and some aliasing schemas compute (`to`, `_autocast_to_reduced_precision` cast dtypes).
VIEW_OPS = frozenset({
    "view", "view_as", "_unsafe_view", "_reshape_alias", "reshape", "reshape_as", "flatten", "unflatten",
    "transpose", "t", "permute", "movedim", "moveaxis", "swapaxes", "swapdims",
    "expand", "expand_as", "as_strided", "unsqueeze", "squeeze",
    "slice", "select", "narrow", "diagonal", "unfold", "unbind", "split", "split_with_sizes", "unsafe_split",
    "chunk", "unsafe_chunk", "tensor_split",
    "detach", "alias", "lift_fresh", "clone", "contiguous",
})
COPY_OPS = frozenset({"_unsafe_view", "clone", "contiguous", "lift_fresh"})  # copies, or may copy, among them

# What the first event of `align_ops` means, per kind: the op report's own words (first_op["verdict"]).
VERDICTS = {"equal inputs, different output": "the kernel differs",
            "same operation, different inputs": "other inputs",
            "different operations": "another implementation",
            "no operation differs on equal inputs": None}


def computes(op: str) -> bool:
    """False for views and plain copies (`VIEW_OPS`), True for every other operation."""
    parts = op.split(".")
    base = parts[1] if len(parts) > 1 else parts[0]
    if base.endswith("_copy") and base[: -len("_copy")] in VIEW_OPS:
        base = base[: -len("_copy")]
    return base not in VIEW_OPS


def quoted(ops: list[str], most: int = 6) -> str:
    return ", ".join(f"`{o}`" for o in ops[:most]) + (" ..." if len(ops) > most else "")


def align_ops(a: list[tuple], b: list[tuple], params: dict[str, str] | None = None) -> dict:
    """Align two operation traces, each [(op, input hashes, output hash)], by operation and input content
    (not by position: the same computation may run its steps in another order), and name the first event
    in a's order: an operation that gets bitwise equal inputs in both and gives different outputs (the kernel
    differs), an operation that runs in both on different inputs (e.g. a parameter that differs), or a span
    of operations that runs on one side only (another implementation).

    The event's `kind` names it, `verdict` says it in the op report's words (`VERDICTS`), `op` is the
    operation of a (index `op_index`). For different operations, `index` is where a's span starts, `span` and
    `other_span` hold every operation of each side's span, `computing` and `other_computing` the ones that
    compute (views and copies left out, `computes`); `op` is a's first computing operation and `other_op` the
    other side's computing operations, quoted (a span that only views or copies is named by its views)."""
    from collections import defaultdict, deque

    free: dict[tuple, deque] = defaultdict(deque)
    for j, (op, ins, _) in enumerate(b):
        free[(op, tuple(ins))].append(j)
    match: dict[int, int] = {}
    for i, (op, ins, _) in enumerate(a):
        if free[(op, tuple(ins))]:
            match[i] = free[(op, tuple(ins))].popleft()
    matched_b = set(match.values())
    for i in range(len(a)):
        if i in match and a[i][2] != b[match[i]][2]:
            kind = "equal inputs, different output"
            return {"kind": kind, "verdict": VERDICTS[kind], "index": i, "other_index": match[i], "op": a[i][0],
                    "op_index": i, "agreeing_before": sum(1 for k in range(i) if k in match)}
        if i in match:
            continue
        span_a = _run(i, lambda k: k < len(a) and k not in match)
        last = max((match[k] for k in range(i) if k in match), default=-1)
        start_b = next((j for j in range(last + 1, len(b)) if j not in matched_b), None)
        span_b = _run(start_b, lambda k: k < len(b) and k not in matched_b) if start_b is not None else []
        event = {"index": i, "other_index": start_b, "op": a[i][0], "op_index": i,
                 "span": [a[k][0] for k in span_a], "other_span": [b[k][0] for k in span_b],
                 "agreeing_before": len([k for k in range(i) if k in match])}
        if len(span_b) >= 1 and b[span_b[0]][0] == a[i][0] and len(b[span_b[0]][1]) == len(a[i][1]):
            differ = [k for k, (x, y) in enumerate(zip(a[i][1], b[span_b[0]][1])) if x != y]
            named = {k: (params or {}).get(a[i][1][k]) for k in differ}
            kind = "same operation, different inputs"
            return {**event, "kind": kind, "verdict": VERDICTS[kind], "other_op": quoted(event["other_span"]),
                    "inputs_differing": differ, "parameters_differing": [n for n in named.values() if n]}
        known_b = {h for _, ins, out in b for h in (*ins, out)}
        event["inputs_in_other"] = all(h in known_b for h in a[i][1])
        computing = [k for k in span_a if computes(a[k][0])]
        other_computing = [b[k][0] for k in span_b if computes(b[k][0])]
        if computing:
            event.update(op=a[computing[0]][0], op_index=computing[0])
        kind = "different operations"
        return {**event, "kind": kind, "verdict": VERDICTS[kind], "computing": [a[k][0] for k in computing],
                "other_computing": other_computing, "other_op": quoted(other_computing or event["other_span"])}
    kind = "no operation differs on equal inputs"
    return {"kind": kind, "verdict": VERDICTS[kind], "index": None, "op": None, "op_index": None, "ops": len(a),
            "other_ops": len(b), "unmatched_other": len(b) - len(matched_b)}


def _run(start: int, member) -> list[int]:
    out, k = [], start
    while member(k):
        out.append(k)
        k += 1
    return out
