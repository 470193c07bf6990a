"""Finalize: the inverted file. Mirrors collection_indexer.py `_build_ivf` and
colbert/indexing/utils.py `optimize_ivf` (emb2pid built with repeat_interleave: same integers)."""

from __future__ import annotations

import torch

from colbert_swap.colbert.resources import stage
from colbert_swap.core.dag import Facts


@stage("finalize", inputs={"chunk_codes": "codes.*"}, facts=Facts(label_level=True))
def all_codes(chunk_codes):
    return torch.cat([c.long() for c in chunk_codes])  # (num_embeddings,) int64


@stage("finalize", inputs={"chunk_codes": "codes.*"})
def num_embeddings(chunk_codes) -> int:
    return sum(int(c.numel()) for c in chunk_codes)


@stage("finalize", outputs=("ivf", "values"),
       facts={"ivf": Facts(order_free="ivf_lengths", label_level=True), "values": Facts(label_level=True)})
def ivf(all_codes, perturb):
    ordered = all_codes.sort() if perturb.stable_sort is None else all_codes.sort(stable=perturb.stable_sort)
    return ordered.indices, ordered.values  # embedding ids grouped by centroid, their centroid ids


@stage("finalize", facts=Facts(label_level=True))
def ivf_lengths(values, num_partitions):
    lengths = torch.bincount(values, minlength=num_partitions)
    assert lengths.size(0) == num_partitions
    return lengths  # (num_partitions,) embeddings per centroid


@stage("finalize", outputs=("ivf_pid", "ivf_pid_lengths"), inputs={"chunk_doclens": "doclens.*"},
       facts={"ivf_pid": Facts(order_free="ivf_pid_lengths", label_level=True),
              "ivf_pid_lengths": Facts(label_level=True)})
def ivf_pid(ivf, ivf_lengths, chunk_doclens):
    doclens = torch.cat(list(chunk_doclens))
    emb2pid = torch.repeat_interleave(torch.arange(doclens.numel(), dtype=torch.int), doclens)
    pid_ivf = emb2pid[ivf]
    unique_pids, lengths = [], []
    offset = 0
    for length in ivf_lengths.tolist():
        pids = torch.unique(pid_ivf[offset:offset + length])
        unique_pids.append(pids)
        lengths.append(pids.shape[0])
        offset += length
    pid_ivf = torch.cat(unique_pids)
    pid_lengths = torch.tensor(lengths)
    max_stride = pid_lengths.max().item()
    offsets = torch.cat((torch.zeros(1, dtype=torch.long), torch.cumsum(pid_lengths, dim=0)))
    if offsets[-2] + max_stride > pid_ivf.size(0):
        pid_ivf = torch.cat((pid_ivf, torch.zeros(max_stride, dtype=pid_ivf.dtype)))
    return pid_ivf, pid_lengths  # what ivf.pid.pt holds
