"""The indexing DAG: stages are plain functions, and their signatures *are* the graph.

A stage is a function named after the artifact it produces; its parameters name what it reads.
Parameters that are not artifacts are *resources* the engine hands over (the collection, the model,
the colbert-ai config, the random generators). Per-chunk stages (`embs.N`, `codes.N`, ...) are templates
that `Dag.nodes(num_chunks)` expands; a parameter mapped to `NAME.*` receives every chunk, in order.

    >>> from colbert_swap.colbert.stages import DAG
    >>> [node.name for node in DAG.nodes(num_chunks=1)][:3]
    ['num_passages', 'num_chunks', 'sample_pids']
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

PHASES = ("setup", "train", "index", "finalize", "search")
INDEXING = ("setup", "train", "index", "finalize")  # what a capture always runs; "search" when it searches


RUN_LENGTHS = ("hidden", "dim", "cluster", "numel")  # the lengths of a `Reduction` known only with a run in hand


@dataclass(frozen=True)
class Reduction:
    """The reduction behind one element of an artifact: what it is, and its length n, from which the rounding
    bound of the artifact's differences follows (proof/analysis/magnitude.py: 1 + n * u(float32) / u(dtype) ULP).

    `length` is a number, or a length that only a run knows, resolved by `resolve`:

    - 'hidden': the checkpoint's hidden size (a dot product of a linear layer over the hidden states); the
      artifact's last dimension when the hidden size is not known;
    - 'dim': the artifact's last dimension (a norm over the embedding dimension);
    - 'cluster': the mean cluster size, the rows clustered over the artifact's rows (one row per cluster);
    - 'numel': every element of the input it reduces (a mean over all of them); the artifact's own number of
      elements when that input's is not known.

    Anything else is refused where the stage declares it, not where a bound is computed:

    >>> Reduction.hidden("a dot product").resolve((5, 32), hidden=768)
    768
    >>> Reduction.hidden("a dot product").resolve((5, 32))  # no checkpoint at hand: the last dimension
    32
    >>> Reduction.dim("a norm").resolve((5, 32), hidden=768)
    32
    >>> Reduction.cluster("a mean over a cluster's members").resolve((4, 32), clustered=100)
    25
    >>> Reduction.numel("a mean over every element").resolve((), reduced=64 * 32)
    2048
    >>> Reduction.over(1, "a cast").resolve((5, 32), hidden=768)
    1
    >>> Reduction("a dot product", "hiden")
    Traceback (most recent call last):
    ...
    ValueError: reduction 'a dot product': length 'hiden' is neither a positive int nor one of ('hidden', ...)
    """

    what: str  # what the reduction is, in words: "the norm over the embedding dimension"
    length: int | str  # a positive number, or one of RUN_LENGTHS
    of: str | None = None  # 'cluster', 'numel': the input artifact whose rows are clustered / elements reduced

    def __post_init__(self) -> None:
        if not isinstance(self.what, str) or not self.what:
            raise ValueError(f"reduction {self.what!r}: say what it is, in words")
        number = isinstance(self.length, int) and not isinstance(self.length, bool) and self.length >= 1
        if not number and self.length not in RUN_LENGTHS:
            raise ValueError(f"reduction {self.what!r}: length {self.length!r} is neither a positive int nor one "
                             f"of {RUN_LENGTHS}")

    @classmethod
    def over(cls, n: int, what: str) -> Reduction:
        """A reduction of a fixed length `n` (1: a cast, a subtraction: only the final rounding)."""
        return cls(what, n)

    @classmethod
    def hidden(cls, what: str) -> Reduction:
        """Over the checkpoint's hidden size: a linear layer's dot products."""
        return cls(what, "hidden")

    @classmethod
    def dim(cls, what: str) -> Reduction:
        """Over the artifact's last dimension: a norm over the embedding dimension."""
        return cls(what, "dim")

    @classmethod
    def cluster(cls, what: str, of: str | None = None) -> Reduction:
        """Over a cluster's members: the rows of input `of` clustered over the artifact's rows (one per cluster)."""
        return cls(what, "cluster", of)

    @classmethod
    def numel(cls, what: str, of: str | None = None) -> Reduction:
        """Over every element of input `of`: a mean of a whole tensor."""
        return cls(what, "numel", of)

    def resolve(self, shape: Sequence[int], hidden: int | None = None, clustered: int | None = None,
                reduced: int | None = None) -> int:
        """The length, for an artifact of `shape`: `hidden` is the checkpoint's hidden size, `clustered` the
        number of rows clustered, `reduced` the number of elements of the reduced input; each is read only by
        the length that needs it, and a length whose number is not given falls back as the class says."""
        shape = tuple(int(d) for d in shape)
        last = shape[-1] if shape else 1
        if self.length == "hidden":
            return int(hidden or last)
        if self.length == "dim":
            return last
        if self.length == "cluster":
            return max(1, int(clustered or 0) // max(1, shape[0] if shape else 1))
        if self.length == "numel":
            return int(reduced) if reduced is not None else math.prod(shape)
        return int(self.length)


@dataclass(frozen=True)
class Facts:
    """What is true of an artifact, declared on the stage that makes it (`@stage(..., facts=Facts(...))`):
    every comparison, explanation and report reads it from there."""

    order_free: str | None = None  # order within the segments this artifact's lengths give carries no meaning
    reduction: Reduction | None = None  # the reduction behind one element, and its length: the rounding bound
    tolerance: tuple[float, float] | None = None  # (rtol, atol) behind `allclose`, instead of the table's pair
    centroid_set: bool = False  # a set of centroids: compared one to one after a label-invariant matching
    label_level: bool = False  # indexed by centroid labels: compared modulo the centroid matching
    together: bool = False  # one value with the other outputs of its stage (a tokenizer's ids, masks and
    # order): injected together, and of any width (another tokenizer pads to another length)

    def __post_init__(self) -> None:
        if self.reduction is not None and not isinstance(self.reduction, Reduction):
            raise TypeError(f"Facts(reduction={self.reduction!r}): declare a Reduction (Reduction.hidden(what), "
                            "Reduction.over(n, what), ...)")


@dataclass(frozen=True)
class Stage:
    fn: Callable
    phase: str
    outputs: tuple[str, ...]  # artifact names; per-chunk ones end in '.N'
    inputs: tuple[tuple[str, str], ...]  # (parameter, artifact name: 'x', 'x.N' or 'x.*')
    resources: tuple[str, ...]
    per_chunk: bool
    facts: tuple[tuple[str, Facts], ...] = ()  # output template -> its facts
    background: bool = False  # CPU-only and thread-safe: the engine may run it ahead, beside an `overlap` stage
    overlap: bool = False  # spends its time without Python's lock (C++ or the GPU): background stages run beside it
    option: str | None = None  # in the DAG only of runs captured with capture.<option>=true (`sample_batches`)

    @property
    def name(self) -> str:
        return self.fn.__name__

    def __call__(self, *args, **kwargs):
        """A stage is still the plain function it wraps: `sample(local_sample_embs=x, rng=r)`."""
        return self.fn(*args, **kwargs)


@dataclass(frozen=True)
class Node:
    """One stage bound to one chunk (or to none)."""

    stage: Stage
    chunk: int | None
    outputs: tuple[str, ...]
    inputs: tuple[tuple[str, tuple[str, ...] | str], ...]  # parameter -> artifact, or all chunks' artifacts

    @property
    def name(self) -> str:
        return self.stage.name if self.chunk is None else f"{self.stage.name}.{self.chunk}"

    def input_names(self) -> list[str]:
        names: list[str] = []
        for _, source in self.inputs:
            names.extend(source if isinstance(source, tuple) else [source])
        return names


def declare(resources: Iterable[str]) -> Callable[..., Callable[[Callable], Stage]]:
    """The `@stage` decorator of a DAG whose stages may read `resources`, names the engine hands over (the
    colbert-ai mirror's: `colbert_swap.colbert.resources.stage`); every other parameter names an artifact."""
    names = frozenset(resources)

    def stage(phase: str, outputs: Sequence[str] | None = None, per_chunk: bool = False,
              inputs: dict[str, str] | None = None, facts: Facts | dict[str, Facts] | None = None,
              background: bool = False, overlap: bool = False, option: str | None = None) -> Callable[[Callable], Stage]:
        return _stage(names, phase, outputs, per_chunk, inputs, facts, background, overlap, option)

    stage.__doc__ = _stage.__doc__
    return stage


def _stage(resources: frozenset[str], phase: str, outputs: Sequence[str] | None, per_chunk: bool,
           inputs: dict[str, str] | None, facts: Facts | dict[str, Facts] | None, background: bool, overlap: bool,
           option: str | None) -> Callable[[Callable], Stage]:
    """Declare a stage. Outputs default to the function's name; parameters default to artifacts of the
    same name (`x.N` inside a per-chunk stage when `x` is a per-chunk artifact: say so in `inputs`), except
    the names of the DAG's resources (colbert_swap/colbert/resources.py: `RESOURCES`), which the engine hands over. `facts`: one Facts
    for a single output, or output -> Facts. `background`: the stage only reads the CPU and its inputs, so the
    engine may run it in a thread ahead of its turn, beside a stage declared `overlap` (one that computes in C++
    or on the GPU without holding Python's lock: k-means); its outputs are the same. Beside a Python-heavy stage a
    thread only takes turns with it (measured on the H200: tokenizing beside the encoder slowed both)."""
    assert phase in PHASES, phase

    def wrap(fn: Callable) -> Stage:
        params = list(inspect.signature(fn).parameters)
        mapping = dict(inputs or {})
        art = tuple((p, mapping.get(p, p)) for p in params if p not in resources)
        res = tuple(p for p in params if p in resources)
        outs = tuple(outputs or (fn.__name__ + (".N" if per_chunk else ""),))
        declared = facts if isinstance(facts, dict) else {outs[0]: facts} if facts else {}
        assert set(declared) <= set(outs), f"{fn.__name__}: facts for {set(declared) - set(outs)}, not its outputs"
        return Stage(fn=fn, phase=phase, outputs=outs, inputs=art, resources=res, per_chunk=per_chunk,
                     facts=tuple(declared.items()), background=background, overlap=overlap, option=option)

    return wrap


@dataclass
class Dag:
    stages: list[Stage]
    _producer: dict[str, Stage] = field(init=False)

    def __post_init__(self) -> None:
        self._producer = {}
        for s in self.stages:
            for out in s.outputs:
                assert out not in self._producer, f"artifact {out} produced twice"
                self._producer[out] = s
        for s in self.stages:  # a reduction of an input reads an input of its stage
            for out, f in s.facts:
                of = f.reduction.of if f.reduction is not None else None
                assert of is None or of in {a for _, a in s.inputs}, f"{s.name}: {out}'s reduction is of {of}, not an input"
        for s in self.stages:  # every input is produced upstream: the list order is a topological order
            seen = {o for t in self.stages[: self.stages.index(s)] for o in t.outputs}
            for param, name in s.inputs:
                assert template(name) in seen, f"{s.name} reads {name} before it is produced"
                optional = self._producer[template(name)].option
                assert not optional or optional == s.option or \
                    inspect.signature(s.fn).parameters[param].default is None, \
                    f"{s.name} reads {name}, made only with capture.{optional}=true: give {param} a default None"

    def artifact_templates(self) -> list[str]:
        return [o for s in self.stages for o in s.outputs]

    def read_by(self, phase: str) -> list[str]:
        """The artifact templates the stages of `phase` read that other phases make (a search: the index's)."""
        stages = [s for s in self.stages if s.phase == phase]
        made = {o for s in stages for o in s.outputs}
        return sorted({name for s in stages for _, source in s.inputs
                       for name in (source if isinstance(source, tuple) else (source,)) if name not in made})

    def producer(self, artifact: str) -> Stage:
        return self._producer[template(artifact)]

    def facts(self, artifact: str) -> Facts:
        """The facts declared for `artifact` (any chunk of a per-chunk one), or none (Facts())."""
        name = template(artifact)
        stage = self._producer.get(name)
        return dict(stage.facts).get(name, Facts()) if stage is not None else Facts()

    def together(self, artifact: str) -> list[str]:
        """`artifact` and, when its facts say `together`, the other outputs of the same node (same chunk)."""
        if not self.facts(artifact).together:
            return [artifact]
        return [_same_chunk(o, artifact) for o in self.producer(artifact).outputs]

    def together_inputs(self, artifact: str) -> list[str]:
        """The `together` artifacts the stage making `artifact` reads, in its chunk: `sample_tokens`, its masks
        and order for `local_sample_embs`; `tokens.3` ... for `embs.3`; none for most artifacts."""
        stage = self._producer.get(template(artifact))
        if stage is None:
            return []
        return [_same_chunk(source, artifact) for _, source in stage.inputs if self.facts(source).together]

    def declared(self) -> dict[str, Facts]:
        """Every artifact template with facts, and its facts."""
        return {name: f for s in self.stages for name, f in s.facts}

    def tolerances(self) -> dict[str, tuple[float, float]]:
        """The per-artifact (rtol, atol) pairs the stages declare (compare.per_artifact overrides them)."""
        return {name.removesuffix(".N"): f.tolerance for name, f in self.declared().items() if f.tolerance}

    def nodes(self, num_chunks: int, phases: Iterable[str] = PHASES, options: Iterable[str] = ()) -> list[Node]:
        """Concrete nodes in execution order: colbert-ai's order (setup, train, then chunk by chunk,
        finalize, search), of the given phases, with the optional stages of `options` (a run's
        `capture_options`: 'batches' for capture.batches=true)."""
        nodes: list[Node] = []
        pending_chunk: list[Stage] = []
        wanted, chosen = set(phases), set(options)
        stages = [t for t in self.stages if t.phase in wanted and (t.option is None or t.option in chosen)]
        absent = {o for t in self.stages if t.option is not None and t.option not in chosen for o in t.outputs}
        for s in stages + [None]:  # type: ignore[list-item]
            if s is not None and s.per_chunk:
                pending_chunk.append(s)
                continue
            for chunk in range(num_chunks):  # flush a run of per-chunk stages, chunk-major
                nodes.extend(_bind(t, chunk, num_chunks, absent) for t in pending_chunk)
            pending_chunk = []
            if s is not None:
                nodes.append(_bind(s, None, num_chunks, absent))
        return nodes

    def artifacts(self, num_chunks: int, phases: Iterable[str] = PHASES, options: Iterable[str] = ()) -> list[str]:
        return [o for n in self.nodes(num_chunks, phases, options) for o in n.outputs]

    def optional(self, artifact: str) -> str | None:
        """The option that makes `artifact` ('batches' for `sample_batches`), or None: every run has it."""
        stage = self._producer.get(template(artifact))
        return stage.option if stage is not None else None

    def phase_of(self, artifact: str) -> str:
        return self.producer(artifact).phase

    def downstream_of(self, injected: Iterable[str], num_chunks: int, phases: Iterable[str] = PHASES,
                      options: Iterable[str] = ()) -> list[Node]:
        """The nodes that must be re-run when `injected` artifacts are replaced, in execution order (of the
        given phases: a run without search artifacts has no search to replay; with its options)."""
        dirty = set(injected)
        out = []
        for node in self.nodes(num_chunks, phases, options):
            if any(name in dirty for name in node.input_names()):
                out.append(node)
                dirty.update(node.outputs)
        return out

    def upstream_of(self, names: Iterable[str], num_chunks: int, options: Iterable[str] = ()) -> set[str]:
        """Every artifact that `names` are computed from (the names included)."""
        needed = set(names)
        for node in reversed(self.nodes(num_chunks, options=options)):
            if needed & set(node.outputs):
                needed |= set(node.input_names())
        return needed

    def expand(self, names: Iterable[str], num_chunks: int, options: Iterable[str] = ()) -> list[str]:
        """'codes' means the concatenated artifact when it exists, else every chunk's `codes.N`."""
        known = self.artifacts(num_chunks, options=options)
        out: list[str] = []
        for name in names:
            if name in known:
                out.append(name)
            elif f"{name}.N" in self.artifact_templates():
                out.extend(f"{name}.{c}" for c in range(num_chunks))
            else:
                raise KeyError(name)
        return out


def _same_chunk(name: str, like: str) -> str:
    """`name` ('x' or 'x.N') in the chunk of `like` ('embs.3' -> 'x.3'; no chunk: 'x')."""
    chunk = like.rpartition(".")[2] if template(like).endswith(".N") else None
    return name.replace(".N", f".{chunk}") if chunk is not None and name.endswith(".N") else name


def template(name: str) -> str:
    """The per-chunk template of a name: embs.3, embs.N and embs.* are all embs.N; others are themselves."""
    head, _, tail = name.rpartition(".")
    return f"{head}.N" if head and (tail.isdigit() or tail in ("N", "*")) else name


def _bind(s: Stage, chunk: int | None, num_chunks: int, absent: set[str] = frozenset()) -> Node:
    """`s` for one chunk; its inputs that optional stages not in this run would make (`absent`) are left out."""
    def concrete(name: str) -> tuple[str, ...] | str:
        if name.endswith(".*"):
            return tuple(f"{name[:-2]}.{c}" for c in range(num_chunks))
        if name.endswith(".N"):
            assert chunk is not None, f"{s.name} reads {name} outside a per-chunk stage"
            return f"{name[:-2]}.{chunk}"
        return name

    outputs = tuple(str(concrete(o)) for o in s.outputs)
    inputs = tuple((p, concrete(a)) for p, a in s.inputs if template(a) not in absent)
    return Node(stage=s, chunk=chunk, outputs=outputs, inputs=inputs)
