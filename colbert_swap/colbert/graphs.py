"""The encoder's batches replayed from CUDA graphs: colbert-ai's very kernels, without the host launching them.

On a fast GPU, `setup.doc_batch` is bound by the host: BERT-base launches hundreds of kernels per batch from
Python, each costing more host time than the GPU needs to run it. A CUDA graph records one batch's kernels
once and replays them with one call. A replay runs the kernels recorded, with the arguments recorded (the
same cuBLAS algorithms, the same attention backend), on the inputs copied into the graph's own buffers:
the same numbers, checked bitwise by tests/integration/test_cuda.py and benchmarks/cuda_graphs.py.

One graph per batch shape and per answer to transformers' question "is the whole attention mask ones?" (SDPA
then runs without a mask: other kernels), recorded at a shape's second batch: a shape seen once runs as
colbert-ai runs it. Graphs live for one encoder call (one stage): every setting that chooses kernels (a
perturbation, an attention backend, TF32) is fixed while it runs. Graphs are not used when the model
has hooks or a torch dispatch or function mode is active (they would run at the recording only), nor for a
model whose attention mask is prepared by other code than transformers' `_prepare_4d_attention_mask_for_sdpa`.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager

import torch


def graphs_usable(checkpoint, device: str) -> bool:
    """Whether CUDA graphs replay what eager calls would run (see the module's text)."""
    if device != "cuda" or not torch.cuda.is_available():
        return False
    from torch.nn.modules import module as nn_module
    from torch.overrides import _get_current_function_mode_stack
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    if _get_current_dispatch_mode() is not None or _get_current_function_mode_stack():
        return False
    if nn_module._global_forward_hooks or nn_module._global_forward_pre_hooks:
        return False
    if any(m._forward_hooks or m._forward_pre_hooks for m in checkpoint.modules()):
        return False
    return _mask_module(checkpoint) is not None


def _mask_module(checkpoint):
    """The module of the model's class when it prepares SDPA's mask with transformers' own function."""
    from transformers import modeling_attn_mask_utils

    module = sys.modules.get(type(checkpoint.bert).__module__)
    fn = getattr(module, "_prepare_4d_attention_mask_for_sdpa", None)
    return module if fn is modeling_attn_mask_utils._prepare_4d_attention_mask_for_sdpa else None


@contextmanager
def _mask_known(module, all_ones: bool):
    """transformers' `_prepare_4d_attention_mask_for_sdpa` with its answer to `torch.all(mask == 1)` given: the
    question reads the GPU, which a recording cannot; both branches are the function's own."""
    from transformers.modeling_attn_mask_utils import AttentionMaskConverter

    original = module._prepare_4d_attention_mask_for_sdpa

    def prepare(mask, dtype, tgt_len=None):
        return None if all_ones else AttentionMaskConverter._expand_mask(mask=mask, dtype=dtype, tgt_len=tgt_len)

    module._prepare_4d_attention_mask_for_sdpa = prepare
    try:
        yield
    finally:
        module._prepare_4d_attention_mask_for_sdpa = original


class GraphedDocBatch:
    """`eager` (setup.doc_batch) for one encoder call: eager at a shape's first batch, then from its graph."""

    def __init__(self, checkpoint, eager):
        self.checkpoint, self.eager, self.module = checkpoint, eager, _mask_module(checkpoint)
        self.seen: set[tuple] = set()
        self.graphs: dict[tuple, tuple] = {}
        self.pool = None
        self.stream = torch.cuda.Stream()
        self.failed: str | None = None  # why a recording failed: the rest of the call runs eagerly

    def __call__(self, checkpoint, input_ids, attention_mask, kept, device):
        assert checkpoint is self.checkpoint
        key = (tuple(input_ids.shape), bool((attention_mask == 1).all()))
        if key not in self.graphs:
            if key not in self.seen or self.failed:
                self.seen.add(key)
                return self.eager(checkpoint, input_ids, attention_mask, kept, device)
            try:
                self.graphs[key] = self._record(key[1], input_ids, attention_mask, kept)
            except Exception as e:  # noqa: BLE001 (an operation a graph cannot hold, a host sync: eager then)
                self.failed = f"{type(e).__name__}: {e}"
                torch.cuda.synchronize()
                return self.eager(checkpoint, input_ids, attention_mask, kept, device)
        graph, inputs, out = self.graphs[key]
        for static, value in zip(inputs, (input_ids, attention_mask, kept)):
            static.copy_(value, non_blocking=True)
        graph.replay()
        return out.clone()

    def _record(self, all_ones: bool, *values):
        """One batch's kernels recorded on a side stream (torch.cuda.graph without its gc.collect per graph)."""
        inputs = [v.to("cuda") for v in values]
        graph = torch.cuda.CUDAGraph()
        amp = self.checkpoint.amp_manager.activated
        autocast = (lambda: torch.autocast("cuda", dtype=torch.float16, cache_enabled=False)) if amp else None
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream), _mask_known(self.module, all_ones):
            graph.capture_begin(pool=self.pool, capture_error_mode="thread_local")
            try:
                out = self.eager(self.checkpoint, *inputs, "cuda", autocast=autocast)
            except BaseException:
                try:  # ends the invalidated capture; the forward's error is the one to report
                    graph.capture_end()
                except Exception:  # noqa: BLE001
                    pass
                raise
            graph.capture_end()
        torch.cuda.current_stream().wait_stream(self.stream)
        self.pool = self.pool or graph.pool()
        return graph, inputs, out
