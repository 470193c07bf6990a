"""Search: colbert-ai 0.2.22's `Searcher.search_all` as stages, on the index artifacts themselves.

Mirrors colbert/searcher.py (`encode`, `dense_search`), colbert/modeling/checkpoint.py (`queryFromText`),
colbert/search/candidate_generation.py (`get_cells`, `generate_candidates`) and
colbert/search/index_storage.py (`rank`); `score_pids` is colbert-ai's own, called on an `IndexScorer` built
from the run's artifacts instead of its index files (the same tensors: the parity tests show the files hold
exactly these artifacts). Every stage loops over the queries one at a time, as `search_all` does.
"""

from __future__ import annotations

import torch

from colbert_swap.colbert.resources import stage
from colbert_swap.core.dag import Facts, Reduction


def _config(search_config, search_settings):
    """The Searcher's config as `dense_search` configures it for this k."""
    config = search_config.__class__.from_existing(search_config)
    config.configure(ncells=search_settings["ncells"], centroid_score_threshold=search_settings["threshold"],
                     ndocs=search_settings["ndocs"])
    return config


def searched(run) -> bool:
    """The run (a RunManifest) holds a complete search: the search graph's last artifacts are there."""
    return "ranked_pids" in run.artifacts and "ranked_scores" in run.artifacts


@stage("search")
def query_texts(queries) -> dict:
    """The queries searched: their ids and texts (search.queries, or seeded windows of the collection)."""
    return {"qids": list(queries.qids), "texts": list(queries.texts)}


@stage("search", outputs=("query_tokens", "query_mask"), facts={"query_tokens": Facts()})
def query_tokens(query_texts, checkpoint, search_config):
    """QueryTokenizer.tensorize of every query ([Q] marker, [MASK] padding to query_maxlen), as
    Searcher.encode calls it (queryFromText splits the same tensor into batches of 128 beyond 128 queries)."""
    tokenizer = checkpoint.query_tokenizer
    tokenizer.query_maxlen = search_config.query_maxlen  # Searcher.encode
    ids, mask = tokenizer.tensorize(query_texts["texts"])
    return ids.cpu(), mask.cpu()  # (nq, query_maxlen) int64 each


@stage("search", facts=Facts(reduction=Reduction.hidden("the ColBERT linear layer's dot products (one layer of "
                                                          "a deeper network)")))
def Q(query_tokens, query_mask, checkpoint):
    """Checkpoint.queryFromText: one call for up to 128 queries, batches of 128 (moved to the CPU) beyond."""
    n = query_tokens.size(0)
    if n <= 128:
        return checkpoint.query(query_tokens, query_mask)  # (nq, query_maxlen, dim)
    return torch.cat([checkpoint.query(query_tokens[i:i + 128], query_mask[i:i + 128], to_cpu=True)
                      for i in range(0, n, 128)])


@stage("search")
def search_settings(search, search_config) -> dict:
    """Searcher.dense_search's defaults for this k (where the config leaves them unset)."""
    k = search.k
    ncells, threshold, ndocs = (1, 0.5, 256) if k <= 10 else (2, 0.45, 1024) if k <= 100 else (4, 0.4, max(k * 4, 4096))
    pick = lambda value, default: default if value is None else value  # noqa: E731
    return {"k": k, "ncells": pick(search_config.ncells, ncells),
            "threshold": pick(search_config.centroid_score_threshold, threshold),
            "ndocs": pick(search_config.ndocs, ndocs)}


@stage("search")
def centroid_scores(Q, half_centroids, search_config, device):
    """get_cells' scores, `centroids @ Q.T`, per query (the codec's centroids: fp16 on CUDA, fp32 on CPU)."""
    centroids = half_centroids.cuda().half() if device == "cuda" else half_centroids.float()  # ResidualCodec
    out = []
    for i in range(Q.size(0)):
        q = Q[i:i + 1][:, :search_config.query_maxlen].squeeze(0)  # retrieve() keeps the query tokens
        if device == "cuda":
            q = q.cuda().half()
        out.append(centroids @ q.T)  # (K, query_maxlen)
    return torch.stack(out)  # (nq, K, query_maxlen)


@stage("search", outputs=("cells", "cell_counts"), facts={"cells": Facts(order_free="cell_counts")})
def cells(centroid_scores, search_settings):
    """get_cells: the ncells best centroids of every query token, each centroid once."""
    ncells, out, counts = search_settings["ncells"], [], []
    for scores in centroid_scores:
        if ncells == 1:
            c = scores.argmax(dim=0, keepdim=True).permute(1, 0)
        else:
            c = scores.topk(ncells, dim=0, sorted=False).indices.permute(1, 0)  # (query_maxlen, ncells)
        c = c.flatten().contiguous().unique(sorted=False)
        out.append(c)
        counts.append(c.numel())
    return torch.cat(out), torch.tensor(counts)  # (sum of counts,) centroid ids, (nq,)


@stage("search", outputs=("candidate_pids", "candidate_counts"))
def candidate_pids(cells, cell_counts, ivf_pid, ivf_pid_lengths, device):
    """generate_candidates: the pids in those centroids' IVF lists, sorted, each once."""
    from colbert.search.strided_tensor import StridedTensor

    ivf = StridedTensor(ivf_pid, ivf_pid_lengths, use_gpu=device == "cuda")
    out, counts = [], []
    for query_cells in cells.split(cell_counts.tolist()):
        pids, _ = ivf.lookup(query_cells)
        if device == "cuda":
            pids = pids.cuda()
        pids, _ = torch.unique_consecutive(pids.sort().values, return_counts=True)
        out.append(pids)
        counts.append(pids.numel())
    return torch.cat(out), torch.tensor(counts)  # (sum of counts,), (nq,)


def index_scorer(search_config, half_centroids, avg_residual, bucket_cutoffs, bucket_weights, ivf_pid,
                 ivf_pid_lengths, chunk_codes, chunk_residuals, chunk_doclens, device):
    """colbert-ai's IndexScorer over the artifacts, as IndexLoader builds it from the files: the codec
    (ResidualCodec.load), the pid IVF, the doclens, and the embeddings padded by 512 rows (load_chunks)."""
    from colbert.indexing.codecs.residual import ResidualCodec
    from colbert.indexing.codecs.residual_embeddings import ResidualEmbeddings
    from colbert.search.index_storage import IndexScorer
    from colbert.search.strided_tensor import StridedTensor

    use_gpu = device == "cuda"
    scorer = IndexScorer.__new__(IndexScorer)
    scorer.index_path, scorer.use_gpu, scorer.load_index_with_mmap = None, use_gpu, False
    avg = avg_residual.cpu()
    scorer.codec = ResidualCodec(config=search_config, centroids=half_centroids.cpu(),
                                 avg_residual=avg.item() if avg.dim() == 0 else avg,
                                 bucket_cutoffs=bucket_cutoffs.cpu(), bucket_weights=bucket_weights.cpu())
    scorer.ivf = StridedTensor(ivf_pid.cpu(), ivf_pid_lengths.cpu(), use_gpu=use_gpu)
    scorer.doclens = torch.cat([d.cpu() for d in chunk_doclens])
    codes, residuals = torch.cat([c.cpu() for c in chunk_codes]), torch.cat([r.cpu() for r in chunk_residuals])
    pad = 512  # load_chunks allocates num_embeddings + 512 rows (for strided access); zeros here, not garbage
    codes = torch.cat([codes.to(torch.int32), torch.zeros(pad, dtype=torch.int32)])
    residuals = torch.cat([residuals, torch.zeros(pad, residuals.size(1), dtype=torch.uint8)])
    scorer.embeddings = ResidualEmbeddings(codes, residuals)
    IndexScorer.try_load_torch_extensions(use_gpu)
    from colbert.modeling.colbert import ColBERT

    ColBERT.try_load_torch_extensions(use_gpu)  # colbert_score_packed's segmented_maxsim (loaded with a model)
    scorer.set_embeddings_strided()
    return scorer


@stage("search", outputs=("scored_pids", "scored_scores", "scored_counts"),
       inputs={"chunk_codes": "codes.*", "chunk_residuals": "residuals.*", "chunk_doclens": "doclens.*"})
def scored_pids(Q, centroid_scores, candidate_pids, candidate_counts, half_centroids, avg_residual, bucket_cutoffs,
                bucket_weights, ivf_pid, ivf_pid_lengths, chunk_codes, chunk_residuals, chunk_doclens,
                search_settings, search_config, device):
    """IndexScorer.score_pids: the candidates that survive centroid pruning, scored on their decompressed
    embeddings (colbert-ai's own code, on an IndexScorer built from the artifacts)."""
    scorer = index_scorer(search_config, half_centroids, avg_residual, bucket_cutoffs, bucket_weights, ivf_pid,
                          ivf_pid_lengths, chunk_codes, chunk_residuals, chunk_doclens, device)
    config = _config(search_config, search_settings)
    pids_out, scores_out, counts = [], [], []
    for i, pids in enumerate(candidate_pids.split(candidate_counts.tolist())):
        scores, pids = scorer.score_pids(config, Q[i:i + 1], pids, centroid_scores[i])
        pids_out.append(pids)
        scores_out.append(scores)
        counts.append(pids.numel())
    return torch.cat(pids_out), torch.cat(scores_out), torch.tensor(counts)


@stage("search", outputs=("ranked_pids", "ranked_scores"))
def ranked_pids(scored_pids, scored_scores, scored_counts, search_settings):
    """IndexScorer.rank's sort and dense_search's top k: what Searcher.search_all returns (-1 and nan where
    fewer than k passages were scored)."""
    k, pids_out, scores_out = search_settings["k"], [], []
    for pids, scores in zip(scored_pids.split(scored_counts.tolist()), scored_scores.split(scored_counts.tolist())):
        sorter = scores.sort(descending=True)
        ranked, values = pids[sorter.indices].tolist()[:k], sorter.values.tolist()[:k]
        pids_out.append(torch.tensor(ranked + [-1] * (k - len(ranked)), dtype=torch.int64))
        scores_out.append(torch.tensor(values + [float("nan")] * (k - len(values)), dtype=torch.float32))
    return torch.stack(pids_out), torch.stack(scores_out)  # (nq, k) each
