"""Searching a run: the search stages of the DAG (colbert_swap/colbert/stages/search.py) run on the run's own
artifacts, and their outputs join the run.

    run = ensure_searched(cfg, store, store.load("2.1.0"), progress)   # the run, with its search artifacts
    ranked_lists(store, run)                                          # [[pid, ...], ...] per query

A run captured with `search.capture=true` (or with `search.queries=FILE`) has them from its capture; any
other run gains them the first time it is searched (or searched with other queries, k or settings, which
replace them). A run is searched as it was made: with its own `perturb` knobs, and in its own environment:
`ensure_searched` computes here only when the run was computed here, runs the search in the run's own
environment spec when it names one, and otherwise stops with `ElsewhereError`.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from colbert_swap.colbert.stages.search import searched
from colbert_swap.config import override_value
from colbert_swap.errors import UserError
from colbert_swap.env.provenance import describe_changes, env_id, run_environment
from colbert_swap.core.store import RunManifest, Store


def search_artifacts(num_chunks: int = 1) -> list[str]:
    from colbert_swap.colbert.stages import DAG

    return DAG.artifacts(num_chunks, ("search",))


class ElsewhereError(UserError):
    """The run's queries must be encoded in the environment the run was computed in, not here."""


def check_environment(run: RunManifest) -> None:
    here = run_environment(run.config)  # with the run's perturb.threads, as its search computes
    if env_id(here) != run.env:
        spec = run.provenance.get("environment")
        raise ElsewhereError(f"run {run.label!r} was computed in another environment "
                             f"({describe_changes(run.provenance, here)}); its queries must be encoded there: "
                             + (f"environment spec {spec!r}" if spec else
                                f"run `python -m colbert_swap task=search run={run.label}` in its environment, "
                                "then compare here"))


def ensure_searched(cfg, store: Store, run: RunManifest, progress=lambda message: None) -> RunManifest:
    """`run` with search artifacts for this invocation's search settings (computed as the run was made)."""
    from colbert_swap.runs.execute import run_config
    from colbert_swap.colbert.resources import Resources

    wanted = _query_texts(Resources(run_config(cfg, run), store, store.run_dir(run.label)))
    if searched(run):
        stored, k = _stored_queries(store, run), store.get(run, "search_settings")["k"]
        if stored == wanted and k == cfg.search.k:
            return run
        if cfg.search.queries is None and stored != wanted and not _synthetic(cfg, store, run, stored):
            # no queries named, and the run was searched with a file's: those are kept
            if k != cfg.search.k:
                raise UserError(f"run {run.label!r} was searched with {len(stored['texts'])} queries of its own at "
                                f"k={k}; to search them at k={cfg.search.k}, name them again: search.queries=FILE "
                                f"search.k={cfg.search.k} (without search.queries, {len(wanted['texts'])} synthetic "
                                "queries would replace them)")
            progress(f"run {run.label!r} keeps the queries it was searched with ({len(stored['texts'])}; "
                     "search.queries=FILE searches it with others)")
            return run
        progress(f"replacing run {run.label!r}'s search ({len(stored['texts'])} queries, k={k}) with "
                 f"{len(wanted['texts'])} queries, k={cfg.search.k}")
    try:
        check_environment(run)
    except ElsewhereError as exc:
        return _search_elsewhere(cfg, store, run, exc, progress)
    return search_here(cfg, store, run, progress)


def search_here(cfg, store: Store, run: RunManifest, progress) -> RunManifest:
    """Add the search artifacts to `run` (replacing others), computed here by the engine."""
    from colbert_swap.colbert.extensions import share_builds
    from colbert_swap.runs.execute import Policy, RunSpec, Write, execute, plan
    from colbert_swap.runs.execute import run_config

    def starting(resources) -> None:
        share_builds(resources.log, progress, searching=resources.device == "cpu")
        progress(f"searching run {run.label!r}: {len(resources.queries.texts)} queries, k={cfg.search.k} (log: "
                 f"{resources.log})")

    return execute(run_config(cfg, run), store, RunSpec(run.label, run.origin, run.config, run.config_hash),
                   targets=("search",), policy=Policy(write=Write.EXTEND, index=False,
                                                      replace=search_artifacts(plan(store, run).num_chunks)),
                   progress=progress, before=starting)


def _synthetic(cfg, store: Store, run: RunManifest, stored: dict) -> bool:
    """`stored` are the synthetic queries of this run's collection and seed (search.num_queries of them)."""
    from colbert_swap.colbert.resources import Resources
    from colbert_swap.runs.execute import run_config

    config = run_config(cfg, run)
    config.search.num_queries = len(stored["texts"])
    return _query_texts(Resources(config, store, store.run_dir(run.label))) == stored


def _query_texts(resources) -> dict:
    return {"qids": list(resources.queries.qids), "texts": list(resources.queries.texts)}


def _stored_queries(store: Store, run: RunManifest) -> dict | None:
    return store.get(run, "query_texts") if "query_texts" in run.artifacts else None


def _search_elsewhere(cfg, store: Store, run: RunManifest, exc: ElsewhereError, progress) -> RunManifest:
    """`task=search run=X` in X's own environment spec (a process of its own), then X as it is stored."""
    from colbert_swap.env.venvs import ensure, load_spec, run_in

    spec_name = run.provenance.get("environment")
    if not spec_name:
        raise exc
    spec = load_spec(spec_name)
    python = ensure(spec, Path(cfg.get("env_cache") or Path(cfg.store.root) / "envs"), progress)
    progress(f"{exc}: searching run {run.label!r} in environment {spec_name!r}")
    log = store.root / "envs" / "logs" / f"search-{run.label}.log"
    done = run_in(spec, python, ["task=search", f"run={run.label}", f"store.root={store.root}",
                                 *search_overrides(cfg)], log)
    again = store.load(run.label)
    if done.returncode or not searched(again):
        raise UserError(f"the search of run {run.label!r} in environment {spec_name!r} failed (exit "
                        f"{done.returncode}); see {log}") from exc
    return again


def retrieval_between(cfg, store: Store, a: RunManifest, b: RunManifest):
    """The retrieval verdict of b against a (colbert_swap.colbert.retrieval.RetrievalVerdict), when both runs were
    searched with the same queries at the same depth; None otherwise."""
    from colbert_swap.runs.execute import run_config
    from colbert_swap.colbert.resources import Resources
    from colbert_swap.colbert.retrieval import effectiveness, retrieval_verdict

    if not (searched(a) and searched(b)) or store.get(a, "query_texts") != store.get(b, "query_texts") \
            or store.get(a, "search_settings")["k"] != store.get(b, "search_settings")["k"]:
        return None
    texts, k = store.get(a, "query_texts"), store.get(a, "search_settings")["k"]
    qrels = Resources(run_config(cfg, a), store, store.run_dir(a.label)).queries.qrels
    la, lb = ranked_lists(store, a), ranked_lists(store, b)
    eff = (effectiveness(la, qrels, k, texts["qids"]), effectiveness(lb, qrels, k, texts["qids"])) if qrels else (None, None)
    return retrieval_verdict(la, lb, k, *eff, qids=texts["qids"])


def ranked_lists(store: Store, run: RunManifest) -> list[list[int]]:
    pids = store.get(run, "ranked_pids")
    return [[int(p) for p in row if p >= 0] for row in pids]


def searcher(run_dir: Path, log: Path, config: dict | None = None):
    """colbert-ai's own Searcher on the run's index folder, as a user opens it, with the run's model knobs
    (`config`: the run's manifest config): the reference the search stages are tested against."""
    from colbert_swap.colbert import infra  # first: it keeps colbert-ai's transformers offline

    from colbert import Searcher  # noqa: I001
    from colbert.infra import Run, RunConfig

    with Run().context(RunConfig(nranks=1, experiment="search", root=str(run_dir))), infra.quiet(log):
        s = Searcher(index="index", index_root=str(run_dir), verbose=0)
        perturb = (config or {}).get("perturb") or {}
        amp = perturb.get("autocast")
        amp = ((config or {}).get("index") or {}).get("amp", True) if amp is None else amp
        infra.apply_model_knobs(s.checkpoint, perturb, bool(amp))
    return s


def search_overrides(cfg) -> list[str]:
    """This invocation's search settings and seed as overrides, for a search in another environment."""
    values = OmegaConf.to_container(cfg.search, resolve=True)
    return [f"search.{k}={override_value(v)}" for k, v in values.items()] + [f"seed={cfg.seed}"]
