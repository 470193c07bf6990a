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

A run is searched as it was made: with its own `perturb` knobs (attention, autocast, TF32, ...) and in
its own environment. `search_run` refuses (`ElsewhereError`) to encode queries of a run that was
computed in another environment; `tasks/search.py` then runs the search there when the run names its
environment spec.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from colbert_swap import colbert_env
from colbert_swap.colbert_env import quiet
from colbert_swap.errors import UserError
from colbert_swap.provenance import describe_changes, env_id, environment
from colbert_swap.store import RunManifest, Store, check_label
from colbert_swap.store.origin import Search
from colbert_swap.store.run import open_run

SEARCH_ARTIFACTS = ("Q", "centroid_scores", "candidate_pids", "candidate_counts", "scored_pids", "scored_scores",
                    "scored_counts", "ranked_pids", "ranked_scores")


def search_label(index_label: str, queries: list[str], k: int, injected_from: str | None) -> str:
    digest = hashlib.sha256(json.dumps([queries, k, injected_from]).encode()).hexdigest()[:10]
    return check_label(f"{index_label}.search-{digest}")


class ElsewhereError(UserError):
    """The run's queries must be encoded in the environment the run was computed in, not here."""


def searcher(run_dir: Path, log: Path, config: dict | None = None):
    """colbert-ai's Searcher on the run's index (`runs/<label>/index`), as a user would open it, with the
    run's own knobs (`config`: the run's manifest config) on its query encoder."""
    from colbert import Searcher
    from colbert.infra import Run, RunConfig

    with Run().context(RunConfig(nranks=1, experiment="search", root=str(run_dir))), quiet(log):
        s = Searcher(index="index", index_root=str(run_dir), verbose=0)
        perturb = (config or {}).get("perturb") or {}
        amp = perturb.get("autocast")
        amp = ((config or {}).get("index") or {}).get("amp", True) if amp is None else amp
        colbert_env.apply_model_knobs(s.checkpoint, perturb, bool(amp))
    return s


def check_environment(index_run: RunManifest) -> None:
    here = environment()
    if env_id(here) != index_run.env:
        spec = index_run.provenance.get("environment")
        raise ElsewhereError(f"run {index_run.label!r} was computed in another environment "
                             f"({describe_changes(index_run.provenance, here)}); its queries must be encoded there: "
                             + (f"environment spec {spec!r}" if spec else
                                f"run `python -m colbert_swap task=search run={index_run.label}` in its environment, "
                                "then compare here"))


def search_run(store: Store, index_run: RunManifest, queries: list[str], k: int, Q: torch.Tensor | None = None,
               injected_from: str | None = None, progress=lambda message: None) -> RunManifest:
    """Search `index_run`'s index with `queries` (or an injected `Q`) and store every intermediate."""
    label = search_label(index_run.label, queries, k, injected_from)
    origin = Search(index_run.label, k, tuple(queries), injected_from)
    if store.has_run(label) and store.load(label).complete and store.load(label).origin == origin:
        return store.load(label)  # searched already, here or in the run's own environment
    check_environment(index_run)
    with open_run(store, label, origin, index_run.config, index_run.config_hash, resume=False) as run:
        if run.done:
            return run.manifest
        run_dir = store.run_dir(index_run.label)
        log = run_dir / "search.log"
        progress(f"searching run {index_run.label!r} with {len(queries)} queries (k={k}) into {label!r} (log: {log})")
        colbert_env.announce_extensions("search", "cuda" if torch.cuda.is_available() else "cpu", log, progress)
        s = searcher(run_dir, log, index_run.config)
        with quiet(log), torch.inference_mode(), colbert_env.perturbed(index_run.config.get("perturb") or {}):
            values = _search(s, queries, k, Q)
        for name in SEARCH_ARTIFACTS:
            run.put(name, values[name], stage=f"inject:{injected_from}" if name == "Q" and injected_from else name)
        return run.finish()


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
