"""Search a run's index with colbert-ai's own `Searcher`, in-process, and keep its intermediates in the store.

    result = search_run(store, store.load("2.1.0"), queries, k=10)          # -> a RunManifest of search artifacts
    result = search_run(store, store.load("2.1.0"), queries, k=10, Q=store.get(other, "Q"))   # inject Q

The stages, each named after what it produces (colbert-ai 0.2.22, `colbert/searcher.py`, `search/index_storage.py`):

    Q                 [nq, query_maxlen, dim]  Searcher.encode (Checkpoint.queryFromText)
    centroid_scores   [nq, ncentroids, qlen]   IndexScorer.retrieve: centroids @ Q.T
    candidate_pids    [sum of counts]          IndexScorer.retrieve: pids of the top `ncells` centroids' lists
    candidate_counts  [nq]
    scored_pids, scored_scores, scored_counts  IndexScorer.score_pids: the candidates that survive pruning, scored
    ranked_pids       [nq, k]                  Searcher.dense_search (-1 where fewer than k were found)
    ranked_scores     [nq, k]                  (nan where fewer than k)

`ranked_*` are dense_search's own output, so they are what a user of `Searcher.search_all` gets; the
intermediates come from the same IndexScorer calls, made again with the config dense_search set for this k.

A search is a run of its own in the store, labelled `INDEXRUN.search-DIGEST` (digest of the queries, k and
an injected Q), so the index run's manifest keeps its meaning: exactly the artifacts of indexing.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from colbert_swap.colbert_env import quiet
from colbert_swap.provenance import environment
from colbert_swap.store import ArtifactRecord, RunManifest, Store, check_label

SEARCH_ARTIFACTS = ("Q", "centroid_scores", "candidate_pids", "candidate_counts", "scored_pids", "scored_scores",
                    "scored_counts", "ranked_pids", "ranked_scores")


def search_label(index_label: str, queries: list[str], k: int, injected_from: str | None) -> str:
    digest = hashlib.sha256(json.dumps([queries, k, injected_from]).encode()).hexdigest()[:10]
    return check_label(f"{index_label}.search-{digest}")


def searcher(run_dir: Path, log: Path):
    """colbert-ai's Searcher on the run's index (`runs/<label>/index`), as a user would open it."""
    from colbert import Searcher
    from colbert.infra import Run, RunConfig

    with Run().context(RunConfig(nranks=1, experiment="search", root=str(run_dir))), quiet(log):
        return Searcher(index="index", index_root=str(run_dir), verbose=0)


def search_run(store: Store, index_run: RunManifest, queries: list[str], k: int, Q: torch.Tensor | None = None,
               injected_from: str | None = None, progress=lambda message: None) -> RunManifest:
    """Search `index_run`'s index with `queries` (or an injected `Q`) and store every intermediate."""
    label = search_label(index_run.label, queries, k, injected_from)
    if store.has_run(label) and store.load(label).complete:
        return store.load(label)
    run_dir = store.run_dir(index_run.label)
    log = store.run_dir(label) / "search.log"
    progress(f"searching run {index_run.label!r} with {len(queries)} queries (k={k}) into {label!r}")
    s = searcher(run_dir, log)
    with quiet(log), torch.inference_mode():
        values = _search(s, queries, k, Q)
    manifest = RunManifest(label=label, config=index_run.config, config_hash=index_run.config_hash,
                           provenance=environment(), origin={"kind": "search", "index": index_run.label, "k": k,
                                                             "queries": queries, "Q_from": injected_from})
    for name in SEARCH_ARTIFACTS:
        stage = f"inject:{injected_from}" if name == "Q" and injected_from else name
        manifest.artifacts[name] = ArtifactRecord(ref=store.blobs.put(values[name]), stage=stage)
    manifest.complete = True
    store.save(manifest)
    return manifest


def _search(s, queries: list[str], k: int, Q: torch.Tensor | None) -> dict[str, torch.Tensor]:
    Q = s.encode(queries) if Q is None else Q  # [nq, query_maxlen, dim]
    out: dict[str, list] = {name: [] for name in SEARCH_ARTIFACTS if name != "Q"}
    for i in range(Q.size(0)):
        q = Q[i:i + 1]
        pids, _, scores = s.dense_search(q, k)  # configures ncells / threshold / ndocs for this k, as users get
        candidates, centroid_scores = s.ranker.retrieve(s.config, q)
        scored, scored_pids = s.ranker.score_pids(s.config, q, candidates, centroid_scores)
        out["centroid_scores"].append(centroid_scores.float().cpu())
        out["candidate_pids"].append(candidates.cpu().to(torch.int64))
        out["candidate_counts"].append(candidates.numel())
        out["scored_pids"].append(scored_pids.cpu().to(torch.int64))
        out["scored_scores"].append(scored.float().cpu())
        out["scored_counts"].append(scored_pids.numel())
        out["ranked_pids"].append(torch.tensor(pids + [-1] * (k - len(pids)), dtype=torch.int64))
        out["ranked_scores"].append(torch.tensor(scores + [float("nan")] * (k - len(scores)), dtype=torch.float32))
    return {"Q": Q.cpu().contiguous(),
            "centroid_scores": torch.stack(out["centroid_scores"]),
            "candidate_pids": torch.cat(out["candidate_pids"]), "candidate_counts": torch.tensor(out["candidate_counts"]),
            "scored_pids": torch.cat(out["scored_pids"]), "scored_scores": torch.cat(out["scored_scores"]),
            "scored_counts": torch.tensor(out["scored_counts"]),
            "ranked_pids": torch.stack(out["ranked_pids"]), "ranked_scores": torch.stack(out["ranked_scores"])}


def ranked_lists(store: Store, search: RunManifest) -> list[list[int]]:
    pids = store.get(search, "ranked_pids")
    return [[int(p) for p in row if p >= 0] for row in pids]
