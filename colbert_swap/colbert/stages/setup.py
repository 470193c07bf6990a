"""Setup: the plan. Mirrors colbert/indexing/collection_indexer.py `setup`, `_sample_pids`,
`_sample_embeddings` (one rank, so the all-reduces are identities)."""

from __future__ import annotations

import threading

import numpy as np
import torch

from colbert_swap.colbert.resources import stage
from colbert_swap.core.dag import Facts, Reduction
from colbert_swap.colbert.graphs import GraphedDocBatch, graphs_usable
from colbert_swap.colbert.tokenizer_pool import processes_for, served, tokenizer_calls


def chunksize(num_passages: int, index_config) -> int:
    """colbert.data.collection.Collection.get_chunksize with one rank, unless index.chunksize is set."""
    return index_config.chunksize or min(25_000, 1 + num_passages)


@stage("setup")
def num_passages(corpus) -> int:
    return len(corpus.passages)


@stage("setup")
def num_chunks(num_passages, index_config) -> int:
    return int(np.ceil(num_passages / chunksize(num_passages, index_config)))


@stage("setup")
def sample_pids(num_passages, rng) -> torch.Tensor:
    typical_doclen = 120  # colbert-ai keeps sampling independent of doc_maxlen
    count = min(1 + int(16 * np.sqrt(typical_doclen * num_passages)), num_passages)
    pids = rng.python.sample(range(num_passages), count)
    return torch.tensor(sorted(pids), dtype=torch.int64)  # (count,) colbert-ai keeps a set


TOKENIZER_LOCK = threading.Lock()  # the background stage (tokens.N) and the main thread take turns


def group_size(colbert_config) -> int:
    """`CollectionEncoder.encode_passages` encodes index_bsize * 50 passages per `docFromText` call."""
    return colbert_config.index_bsize * 50


def groups(passages: list[str], colbert_config) -> list[list[str]]:
    """`CollectionEncoder.encode_passages`'s groups of passages."""
    size = group_size(colbert_config)
    return [passages[start:start + size] for start in range(0, len(passages), size)]


def tokenize(passages: list[str], checkpoint, colbert_config, processes: int = 0,
             ahead: list[str] = ()) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """colbert-ai's `DocTokenizer.tensorize(group, bsize=index_bsize)`, called once per group of
    index_bsize * 50 passages as `CollectionEncoder.encode_passages` forms them: what the seed posts call
    `tensorize_output`. Returned in passage order, so two runs compare row by row:

    - ids (passages, width) int32: each group padded to its own longest passage (colbert-ai's
      padding='longest'), columns beyond a group's width hold the tokenizer's pad id;
    - masks (passages, width) uint8: the attention masks (1 on a passage's tokens);
    - order (passages,) int64: colbert-ai's `reverse_indices` of the group's length sort, as global rows
      (`torch.sort` without `stable`: equal lengths may come out in another order elsewhere).

    int32 and uint8 hold colbert-ai's int64 ids and masks exactly (`encode_tokens` casts them back).
    With `processes` > 1, the tokenizer call inside each `tensorize` is made in that many forked copies of
    this process (colbert_swap/colbert/tokenizer_pool.py), and those of the passages `ahead` (the next stage's) are
    started too; `tensorize` itself still runs here."""
    tokenizer = checkpoint.doc_tokenizer
    pad = tokenizer.tok.pad_token_id or 0
    mine = groups(passages, colbert_config)
    parts, start = [], 0
    for texts, call in zip(mine, tokenizer_calls(tokenizer, mine, processes, groups(list(ahead), colbert_config))):
        # the lock: a Rust tokenizer called from two threads at once can fail ('Already borrowed')
        with TOKENIZER_LOCK, served(tokenizer, texts, call):
            batches, reverse = tokenizer.tensorize(texts, bsize=colbert_config.index_bsize)
        reverse = reverse.cpu()
        ids = torch.cat([b[0] for b in batches]).cpu()[reverse]  # back to passage order
        masks = torch.cat([b[1] for b in batches]).cpu()[reverse]
        parts.append((ids, masks, reverse.to(torch.int64) + start))
        start += len(texts)
    width = max((p[0].shape[1] for p in parts), default=0)
    ids = torch.full((len(passages), width), pad, dtype=torch.int32)
    masks = torch.zeros((len(passages), width), dtype=torch.uint8)
    row = 0
    for ids_, masks_, _ in parts:
        ids[row:row + len(ids_), :ids_.shape[1]] = ids_.to(torch.int32)
        masks[row:row + len(ids_), :ids_.shape[1]] = masks_.to(torch.uint8)
        row += len(ids_)
    order = torch.cat([p[2] for p in parts]) if parts else torch.zeros(0, dtype=torch.int64)
    return ids, masks, order


def encode_tokens(ids: torch.Tensor, masks: torch.Tensor, order: torch.Tensor, checkpoint, colbert_config,
                  progress, pipeline: bool = True, graphs: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """`CollectionEncoder.encode_passages` from tokens: per group, colbert-ai's `docFromText(...,
    keep_dims='flatten')` after its tokenizer call (the same batches, the same model calls and flattening),
    so the result is the same as encoding the passages; `progress(done, total)` between groups.

    With `pipeline`, each batch runs `ColBERT.doc`'s very operations (`doc_batch`) but takes its punctuation
    mask from the tokens on the CPU instead of copying the ids back from the GPU (colbert-ai's `ColBERT.mask`
    waits for the forward there, every batch), and the rows kept are gathered by index and copied to pinned
    memory asynchronously: the GPU runs batch after batch without waiting for the host. The same numbers:
    tests/integration/test_pipeline.py and the GPU benchmark check it. With `graphs` as well, the batches are
    replayed from CUDA graphs where that replays the same kernels (stages/graphs.py)."""
    from colbert.modeling.tokenization.utils import _split_into_batches

    bsize = colbert_config.index_bsize
    device = "cuda" if torch.cuda.is_available() else "cpu"  # where colbert-ai's tensorize puts them (DEVICE)
    total = ids.shape[0]
    embs, doclens, copies = [], [], []
    progress(0, total)
    skip = _skiplist(checkpoint)
    batch = GraphedDocBatch(checkpoint, doc_batch) if pipeline and graphs and graphs_usable(checkpoint, device) \
        else doc_batch
    with torch.inference_mode():
        for start, g_ids, g_masks, reverse in _group_tokens(ids, masks, order, colbert_config):
            indices = reverse.sort().indices  # the length sort that `reverse` undoes (a permutation: exact)
            if not pipeline:
                g_ids, g_masks, reverse, indices = g_ids.to(device), g_masks.to(device), reverse.to(device), indices.to(device)
                batches = [checkpoint.doc(i, m, keep_dims="return_mask")
                           for i, m in _split_into_batches(g_ids[indices], g_masks[indices], bsize)]
                D = torch.cat([b[0] for b in batches])[reverse]
                mask = torch.cat([b[1] for b in batches])[reverse]
                doclens_ = mask.squeeze(-1).sum(-1).tolist()
                D = D.view(-1, colbert_config.dim)[mask.bool().flatten()].cpu()
            else:
                sorted_ids, sorted_masks = g_ids[indices], g_masks[indices]
                kept = _kept(sorted_ids, checkpoint, skip)
                batches = [batch(checkpoint, i, m, k, device) for i, m, k in
                           zip(sorted_ids.split(bsize), sorted_masks.split(bsize), kept.split(bsize))]
                kept = kept[reverse]
                doclens_ = kept.sum(-1).tolist()
                rows = kept.flatten().nonzero().squeeze(1)
                D = torch.cat(batches)[reverse.to(device)].view(-1, colbert_config.dim)
                D, done = _to_host(D.index_select(0, rows.to(device, non_blocking=True)))
                copies.append(done)
            if colbert_config.pool_factor > 1:
                _wait(copies)
                D, doclens_ = _pool(D, doclens_, colbert_config)
            embs.append(D)
            doclens.extend(doclens_)
            progress(min(start + len(g_ids), total), total)
        _wait(copies)
    if not embs:
        return torch.zeros(0, colbert_config.dim), torch.zeros(0, dtype=torch.int64)
    return torch.cat(embs), torch.tensor(doclens, dtype=torch.int64)  # (tokens, dim), (passages,)


def _skiplist(checkpoint) -> torch.Tensor:
    """The token ids `ColBERT.mask` drops besides padding (punctuation, when mask_punctuation)."""
    skiplist = getattr(checkpoint, "skiplist", {})  # only set with mask_punctuation (ColBERT.__init__)
    return torch.tensor(sorted(k for k in skiplist if isinstance(k, int)), dtype=torch.int64)


def _kept(ids: torch.Tensor, checkpoint, skip: torch.Tensor) -> torch.Tensor:
    """`ColBERT.mask`, on the CPU: the tokens that are neither padding nor in its skiplist (punctuation)."""
    return (ids != checkpoint.pad_token) & ~torch.isin(ids, skip)


def _pool(D: torch.Tensor, doclens: list[int], colbert_config) -> tuple[torch.Tensor, list[int]]:
    """`docFromText`'s pooling of a group's embeddings (pool_factor > 1)."""
    from colbert.modeling.checkpoint import pool_embeddings_hierarchical

    return pool_embeddings_hierarchical(D, doclens, pool_factor=colbert_config.pool_factor,
                                        protected_tokens=colbert_config.protected_tokens, showprogress=False)


def _group_tokens(ids: torch.Tensor, masks: torch.Tensor, order: torch.Tensor, colbert_config):
    """Per group of index_bsize * 50 passages: its first row, its ids and masks (int64, at the group's own
    width: padding='longest') and its `reverse_indices`."""
    group = group_size(colbert_config)
    for start in range(0, ids.shape[0], group):
        g_masks = masks[start:start + group].to(torch.int64)
        width = int(g_masks.sum(1).max())
        yield start, ids[start:start + group, :width].to(torch.int64), g_masks[:, :width], order[start:start + group] - start


def encode_batches(ids: torch.Tensor, masks: torch.Tensor, order: torch.Tensor, checkpoint, colbert_config,
                   progress) -> torch.Tensor:
    """`capture.batches`: each batch's output of colbert-ai's `Checkpoint.doc(ids, mask, keep_dims='return_mask')`
    inside `docFromText`, before the flattening: (passages, width, dim), the rows in colbert-ai's length-sorted
    order group by group (batch after batch), the columns beyond a group's width zero (as the masked padding)."""
    from colbert.modeling.tokenization.utils import _split_into_batches

    device = "cuda" if torch.cuda.is_available() else "cpu"
    bsize, parts = colbert_config.index_bsize, []
    progress(0, ids.shape[0])
    with torch.inference_mode():
        for start, g_ids, g_masks, reverse in _group_tokens(ids, masks, order, colbert_config):
            indices = reverse.sort().indices  # the length sort that `reverse` undoes
            parts += [checkpoint.doc(i.to(device), m.to(device), keep_dims="return_mask")[0].cpu()
                      for i, m in _split_into_batches(g_ids[indices], g_masks[indices], bsize)]
            progress(min(start + len(g_ids), ids.shape[0]), ids.shape[0])
    if not parts:
        return torch.zeros(0, 0, colbert_config.dim)
    width = max(p.shape[1] for p in parts)
    return torch.cat([torch.nn.functional.pad(p, (0, 0, 0, width - p.shape[1])) for p in parts])


def embs_from_D(D: torch.Tensor, ids: torch.Tensor, masks: torch.Tensor, order: torch.Tensor, checkpoint,
                colbert_config) -> tuple[torch.Tensor, torch.Tensor]:
    """`docFromText`'s flattening of `D` (passage order): per group, the rows and columns `ColBERT.mask` keeps
    (not padding, not punctuation), as `D.view(-1, dim)[mask.bool().flatten()]`: a selection, so the same
    numbers as `encode_tokens`."""
    skip = _skiplist(checkpoint)
    embs, doclens = [], []
    for start, g_ids, _, _ in _group_tokens(ids, masks, order, colbert_config):
        kept = _kept(g_ids, checkpoint, skip)
        flat = D[start:start + len(g_ids), :g_ids.shape[1]].reshape(-1, D.shape[-1])[kept.flatten()]
        doclens_ = kept.sum(-1).tolist()
        if colbert_config.pool_factor > 1:
            flat, doclens_ = _pool(flat, doclens_, colbert_config)
        embs.append(flat)
        doclens.extend(doclens_)
    if not embs:
        return torch.zeros(0, colbert_config.dim), torch.zeros(0, dtype=torch.int64)
    return torch.cat(embs), torch.tensor(doclens, dtype=torch.int64)


def embeddings(ids: torch.Tensor, masks: torch.Tensor, order: torch.Tensor, D: torch.Tensor | None, checkpoint,
               colbert_config, progress, pipeline: bool, graphs: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """An encoder stage's embeddings and doclens: flattened from `D` where the run keeps it (capture.batches),
    else encoded from the tokens."""
    if D is not None:
        return embs_from_D(D, ids, masks, order, checkpoint, colbert_config)
    return encode_tokens(ids, masks, order, checkpoint, colbert_config, progress, pipeline, graphs)


def doc_batch(checkpoint, input_ids: torch.Tensor, attention_mask: torch.Tensor, kept: torch.Tensor, device,
              autocast=None):
    """`Checkpoint.doc(input_ids, attention_mask, keep_dims='return_mask')`'s embeddings, operation for operation
    (colbert/modeling/colbert.py ColBERT.doc under Checkpoint.doc's no_grad and autocast), with the mask
    `kept` computed on the CPU from the same ids (ColBERT.mask: not punctuation and not padding).
    `autocast`: the autocast context in place of colbert-ai's (stages/graphs.py: the same casts, uncached)."""
    with torch.no_grad(), (autocast or checkpoint.amp_manager.context)():
        input_ids = input_ids.to(device, non_blocking=True)
        attention_mask = attention_mask.to(device, non_blocking=True)
        D = checkpoint.bert(input_ids, attention_mask=attention_mask)[0]
        D = checkpoint.linear(D)
        mask = kept.to(device, non_blocking=True).unsqueeze(2).float()
        D = D * mask
        D = torch.nn.functional.normalize(D, p=2, dim=2)
        if checkpoint.use_gpu:
            D = D.half()
    return D


def _to_host(x: torch.Tensor):
    """x on the CPU: from the GPU through pinned memory, asynchronously (the event says when it is there)."""
    if not x.is_cuda:
        return x, None
    out = torch.empty(x.shape, dtype=x.dtype, pin_memory=True)
    out.copy_(x, non_blocking=True)
    event = torch.cuda.Event()
    event.record()
    return out, event


def _wait(events: list) -> None:
    for event in events:
        if event is not None:
            event.synchronize()
    events.clear()


@stage("setup", outputs=("sample_tokens", "sample_token_masks", "sample_token_order"),
       facts={"sample_tokens": Facts(together=True), "sample_token_masks": Facts(together=True), "sample_token_order": Facts(together=True)})
def sample_tokens(corpus, sample_pids, checkpoint, colbert_config, index_config):
    """The sampled passages' `tensorize_output` (see `tokenize`)."""
    wanted = set(sample_pids.tolist())
    passages = [p for pid, p in enumerate(corpus.passages) if pid in wanted]
    first_chunk = corpus.passages[:chunksize(len(corpus.passages), index_config)]  # tokens.0's, made ahead
    return tokenize(passages, checkpoint, colbert_config, processes_for(index_config), ahead=first_chunk)


ENCODER = Facts(reduction=Reduction.hidden("the ColBERT linear layer's dot products (one layer of a deeper "
                                           "network)"))


@stage("setup", facts=ENCODER, option="batches")
def sample_batches(sample_tokens, sample_token_masks, sample_token_order, checkpoint, colbert_config, progress):
    """capture.batches=true: the sampled passages' encoder output batch by batch, padded (`encode_batches`)."""
    return encode_batches(sample_tokens, sample_token_masks, sample_token_order, checkpoint, colbert_config,
                          progress)


@stage("setup", facts=ENCODER, option="batches")
def sample_D(sample_batches, sample_token_order):
    """capture.batches=true: `docFromText`'s `D`, the batches in passage order (`torch.cat(D)[reverse_indices]`,
    group by group): a permutation of `sample_batches`."""
    return sample_batches[sample_token_order]


@stage("setup", outputs=("local_sample_embs", "sample_doclens"), facts={"local_sample_embs": ENCODER})
def local_sample_embs(sample_tokens, sample_token_masks, sample_token_order, checkpoint, colbert_config,
                      index_config, progress, sample_D=None):
    """The sampled passages' embeddings: encoded from their tokens, or with capture.batches flattened from
    `sample_D`; fp32 on CPU, fp16 on CUDA."""
    return embeddings(sample_tokens, sample_token_masks, sample_token_order, sample_D, checkpoint, colbert_config,
                      progress, index_config.pipeline, index_config.cuda_graphs)


@stage("setup")
def avg_doclen_est(sample_doclens) -> float:
    doclens = sample_doclens.tolist()
    estimate = sum(doclens) / len(doclens) if doclens else 0
    return torch.tensor([estimate]).item() / 1.0  # colbert-ai passes it through a float32 tensor


@stage("setup")
def num_embeddings_est(num_passages, avg_doclen_est) -> float:
    return num_passages * avg_doclen_est


@stage("setup")
def num_partitions(num_embeddings_est) -> int:
    return int(2 ** np.floor(np.log2(16 * np.sqrt(num_embeddings_est))))
