"""What a stage may read besides artifacts: the one table of resources, and the object that builds them.

A stage's parameter that names an artifact is fed from the run; one that names a key of `RESOURCES` is
handed over by the engine: the collection, the model, colbert-ai's config, this run's typed index config
and perturb knobs, the device, the chunk a per-chunk node works on, the node's random generators, and a
progress callback. Everything is built on first use, so a replay downstream of the centroids never loads
the model.

    resources = Resources(cfg, store, run_dir)
    RESOURCES["index_config"](resources, node, rng, bar)   # -> IndexConfig(nbits=2, ...)
"""

from __future__ import annotations

import importlib.util
from contextlib import contextmanager
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Callable

from omegaconf import OmegaConf

from colbert_swap.colbert import infra
from colbert_swap.colbert import tokenizer_pool
from colbert_swap.colbert.extensions import share_builds
from colbert_swap.config import IndexConfig, PerturbConfig, SearchConfig
from colbert_swap.colbert.corpus import Corpus, load_corpus
from colbert_swap.colbert.models import checkpoint_path, content_digest
from colbert_swap.colbert.retrieval import query_set
from colbert_swap.core.code import CodeScope
from colbert_swap.core.dag import declare
from colbert_swap.core.rng import RngStream


class Resources:
    """Non-artifact inputs of one run, built on first use."""

    def __init__(self, cfg, store, run_dir: Path, progress: Callable[[str], None] = lambda m: None):
        self.cfg, self.store, self.run_dir = cfg, store, run_dir
        self.log = run_dir / "capture.log"
        self.progress = progress  # the engine's, once an engine runs with these resources

    def check(self, nodes) -> None:
        """Refuse (a UserError), before any of `nodes` computes, what this machine cannot compute: flash-kmeans's
        `prenorm_centroids` without a CUDA GPU, flash-kmeans or its triton kernels (colbert/kmeans.py)."""
        if self.cfg.index.kmeans_backend == "flash" and any("prenorm_centroids" in n.outputs for n in nodes):
            from colbert_swap.colbert.kmeans import flash_kernels

            flash_kernels()

    @cached_property
    def index(self) -> IndexConfig:
        return _typed(IndexConfig, self.cfg.index)

    @cached_property
    def perturb(self) -> PerturbConfig:
        return _typed(PerturbConfig, self.cfg.perturb)

    @cached_property
    def search(self) -> SearchConfig:
        return _typed(SearchConfig, self.cfg.search)

    @cached_property
    def queries(self):
        """The queries a search of this run answers (search.queries, or seeded windows of the collection)."""
        return query_set(self.search, self.corpus, self.cfg.seed)

    @cached_property
    def search_config(self):
        """The ColBERTConfig colbert-ai's Searcher builds: the checkpoint's, then the index's, then the run's."""
        from colbert.infra import ColBERTConfig, Run, RunConfig

        with infra.quiet(self.log), Run().context(RunConfig(nranks=1, experiment="search")):
            config = ColBERTConfig.from_existing(ColBERTConfig.load_from_checkpoint(self.checkpoint_path),
                                                 self.colbert_config, Run().config)
            config.configure(checkpoint=self.checkpoint_path, collection=self.corpus.path)
        return config

    @cached_property
    def device(self) -> str:
        return infra.resolve_device(self.index.device)

    @cached_property
    def corpus(self) -> Corpus:
        return load_corpus(self.cfg.collection, self.store.root / "collections")

    @cached_property
    def checkpoint_path(self) -> str:
        with infra.quiet(self.log):
            return checkpoint_path(self.cfg.model, self.store.root / "models", self.progress)

    def input_digests(self) -> dict[str, str]:
        """The content of the checkpoint (every file of its folder) and of the collection file, as xxh3-128 digests:
        what a run reads besides its config (models.py builds the seeded checkpoints to the same bits everywhere)."""
        return {"checkpoint": content_digest(Path(self.checkpoint_path)), "collection": content_digest(Path(self.corpus.path))}

    @cached_property
    def colbert_config(self):
        with infra.quiet(self.log):
            return infra.colbert_config(self.checkpoint_path, self.index, self.corpus.path,
                                              str(self.run_dir.resolve()), self.perturb.index_bsize)

    @cached_property
    def _model(self):
        amp = self.index.amp if self.perturb.autocast is None else self.perturb.autocast
        share_builds(self.log, self.progress,
                     searching=self.device == "cpu" and bool(self.search.capture or self.search.queries))
        self.progress("building the model (colbert-ai's Checkpoint)")
        return infra.load_checkpoint(self.checkpoint_path, self.colbert_config, amp,
                                           self.cfg.seed, self.device, self.log, self.perturb)

    @property
    def checkpoint(self):
        return self._model[0]

    def initial_rng(self) -> RngStream:
        """The generators as colbert-ai's worker has them after building its model."""
        return self._model[1]

    # what the engine asks (colbert_swap/core/engine.py, `Resources`) ----------------------------------------
    def provide(self, name: str, node, rng, bar):
        return RESOURCES[name](self, node, rng, bar)

    @contextmanager
    def computing(self):
        """colbert-ai's prints to the run's log; the perturb switches and thread counts (infra.perturbed)."""
        with infra.quiet(self.log), infra.perturbed(self.perturb):
            yield

    def computed(self, node, result):
        return infra.noise(self.perturb, node.stage.name, result)  # perturb.noise=STAGE

    def may_run_ahead(self) -> bool:
        return bool(self.index.pipeline) and "_model" in vars(self)  # the worker must not build the model

    def close(self) -> None:
        tokenizer_pool.close_pools()

    @staticmethod
    def code_scope() -> CodeScope:
        """What of the code counts for a stage's code hash (colbert_swap/core/code.py): the mirror's modules and
        the random generators' that its stage imports, and colbert-ai's installed package, edited in place."""
        return _code_scope()


@lru_cache(maxsize=1)
def _code_scope() -> CodeScope:
    spec = importlib.util.find_spec("colbert")  # colbert-ai's package, found without importing it
    trees = tuple(Path(p) for p in (spec.submodule_search_locations or ())) if spec else ()
    return CodeScope(follow=(__name__.rpartition(".")[0], RngStream.__module__), trees=trees)


def _typed(schema, node) -> Any:
    """A config group as its dataclass (attribute access, types checked), whatever it was handed as."""
    if isinstance(node, schema):
        return node
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), node))


# name -> the config keys (or whole groups) it is built from: a stage that reads the resource reads them, so
# a difference at a stage on equal inputs is the config's, not the environment's, where one of them differs
# (tasks/compare.py). The progress callback and the chunk number read none.
CONFIG_READ: dict[str, tuple[str, ...]] = {
    "corpus": ("collection",),
    "checkpoint": ("model", "index.amp", "index.device", "perturb", "seed"),
    "colbert_config": ("model", "collection", "index", "perturb.index_bsize"),
    "index_config": ("index",),
    "perturb": ("perturb",),
    "device": ("index.device",),
    "search": ("search",),
    "queries": ("search", "collection", "seed"),
    "search_config": ("model", "collection", "index", "search"),
    "rng": ("seed",),
}


# Keys the engine applies around every stage, whatever the stage reads (infra.perturbed).
EVERY_STAGE_READS = ("perturb.threads",)


def config_read(resources: tuple[str, ...]) -> tuple[str, ...]:
    """The config keys (prefixes) a stage with these resource parameters reads.

    >>> config_read(("index_config", "rng"))
    ('index', 'seed', 'perturb.threads')
    """
    return tuple(dict.fromkeys([*(k for r in resources for k in CONFIG_READ.get(r, ())), *EVERY_STAGE_READS]))


# name -> how the engine provides it to a stage: (resources, node, rng, progress bar) -> value
RESOURCES: dict[str, Callable[..., Any]] = {
    "corpus": lambda r, node, rng, bar: r.corpus,
    "checkpoint": lambda r, node, rng, bar: r.checkpoint,
    "colbert_config": lambda r, node, rng, bar: r.colbert_config,
    "index_config": lambda r, node, rng, bar: r.index,
    "perturb": lambda r, node, rng, bar: r.perturb,
    "device": lambda r, node, rng, bar: r.device,
    "search": lambda r, node, rng, bar: r.search,
    "queries": lambda r, node, rng, bar: r.queries,
    "search_config": lambda r, node, rng, bar: r.search_config,
    "chunk": lambda r, node, rng, bar: node.chunk,
    "rng": lambda r, node, rng, bar: rng,
    "progress": lambda r, node, rng, bar: bar.update,
}


# `@stage(phase, ...)`: a stage of the colbert-ai mirror, whose parameters are artifacts or the names above
stage = declare(RESOURCES)
