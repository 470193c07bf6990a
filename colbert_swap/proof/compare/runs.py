"""Compare two stored runs artifact by artifact, in pipeline order.

    comparison = compare_runs(store, store.load("2.0.1"), store.load("2.1.0"))
    comparison.first_diverged()   # ['local_sample_embs', 'sample_doclens'] or []

Each artifact is compared by the comparator its facts choose (`comparator(DAG.facts(name))`, compare/
comparators.py), with the other artifacts it `reads` loaded from both runs; two runs holding the same blob are
`equal` unread, whatever the comparator. A new comparator is added in comparators.py alone (its docstring
says how); nothing here changes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from colbert_swap.proof.compare.comparators import Comparison, Context, Status, comparator
from colbert_swap.proof.compare.tolerances import Tolerance
from colbert_swap.config import HOW, capture_options
from colbert_swap.errors import UserError
from colbert_swap.colbert.stages import DAG
from colbert_swap.core.store import BlobRef, RunManifest, Store
from colbert_swap.colbert.plan import plan

# Config groups that may differ between compared runs: they are the cause under study, not the question.
CAUSES = ("perturb",)


@dataclass(frozen=True)
class RunComparison:
    a: str
    b: str
    results: tuple[Comparison, ...]
    tolerance: Tolerance = Tolerance()
    # every config difference of the two runs, perturb knobs included, keys of how a run is computed (HOW)
    # left out: "index.kmeans_backend: 'faiss' vs 'torch'"; a stage that reads one is told apart from the env
    config_diffs: tuple[str, ...] = ()

    def __getitem__(self, name: str) -> Comparison:
        return next(r for r in self.results if r.name == name)

    def diverged(self) -> list[str]:
        return [r.name for r in self.results if not r.same]

    def first_diverged(self, among: set[str] | None = None) -> list[str]:
        """The earliest diverging artifacts (of `among`, when given), with every other output of the same
        stage template."""
        names = [n for n in self.diverged() if among is None or n in among]
        if not names:
            return []
        stage = DAG.producer(names[0])
        return [n for n in names if DAG.producer(n) is stage]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.results:
            out[r.status] = out.get(r.status, 0) + 1
        return out

    def order_only(self) -> list[Comparison]:
        return [r for r in self.results if r.status == Status.ORDER_ONLY]


@dataclass(frozen=True)
class WholeRun:
    """What two runs differ in as wholes: every artifact, and colbert-ai's own index files.

    A verdict about a subset ("the downstream artifacts are equal") is only half the answer; this is the
    other half: what still differs anywhere, and whether the files a user searches are the same."""

    a: str
    b: str
    artifacts: int
    differing: tuple[str, ...]  # artifacts not equal (nor equal up to a meaningless order)
    order_only: tuple[str, ...]
    index: dict[str, str] | None  # index file -> how it differs; None when a run has no index to compare
    alone: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (run, what only it keeps and was not compared: the
    # search of a run searched alone, the batches of a run captured alone with capture.batches)

    @property
    def identical(self) -> bool:
        return not self.differing and not self.index

    @property
    def index_data(self) -> dict[str, str] | None:
        """The index files whose data differ (not only the ColBERTConfig they record)."""
        from colbert_swap.colbert.index_files import data_differences

        return None if self.index is None else data_differences(self.index)

    def to_json(self) -> dict:
        return {"a": self.a, "b": self.b, "artifacts": self.artifacts, "differing": list(self.differing),
                "order_only": list(self.order_only), "identical": self.identical,
                "index_files_identical": None if self.index is None else not self.index,
                "index_files_differing": self.index, "index_data_differing": self.index_data,
                "kept_by_one_run_not_compared": {run: list(names) for run, names in self.alone}}


def whole_run(store: Store, comparison: RunComparison, a: RunManifest, b: RunManifest) -> WholeRun:
    """`comparison` must cover every artifact of `a` and `b` (compare_runs without `names`)."""
    from colbert_swap.colbert.index_files import run_index_differences

    compared = {r.name for r in comparison.results}
    alone = tuple((m.label, names) for m, other in ((a, b), (b, a))
                  if (names := tuple(n for n in m.artifacts if n not in compared and n not in other.artifacts)))
    return WholeRun(a.label, b.label, len(comparison.results), tuple(comparison.diverged()),
                    tuple(r.name for r in comparison.order_only()), run_index_differences(store, a, b), alone)


def config_differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(a) | set(b))
    out = []
    for k in keys:
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            out += config_differences(x, y, f"{prefix}{k}.")
        elif x != y:
            out.append(f"{prefix}{k}: {x!r} vs {y!r}")
    return out


def check_comparable(a: RunManifest, b: RunManifest, force: bool) -> list[str]:
    """Runs of different models, collections or index settings, or of one config that read different checkpoint or
    collection files (two machines' own copies), are refused unless forced."""
    diffs = config_differences(_what(a.config), _what(b.config))
    if diffs and not force:
        raise UserError(f"runs {a.label!r} and {b.label!r} were made from different configs "
                        f"({'; '.join(diffs[:6])}); their artifacts answer different questions. "
                        "Pass force=true to compare them anyway")
    inputs = input_differences(a, b)
    if inputs and not force:
        raise UserError(f"runs {a.label!r} and {b.label!r} read different files under one config: "
                        f"{'; '.join(inputs)}; every difference of their artifacts may come from that. Give both the "
                        "same files (a checkpoint of model.kind=path copied from one machine to the other), or pass "
                        "force=true to compare them anyway")
    return diffs


def input_differences(a: RunManifest, b: RunManifest) -> list[str]:
    """'the checkpoint's content (digest 24ee7fb2d1a0 vs 5c1d...)' for each input the two runs recorded with other
    content (RunManifest.inputs); none where a run recorded none (written before it was kept)."""
    if not a.inputs or not b.inputs:
        return []
    return [f"the {key}'s content (digest {a.inputs[key][:12]} vs {b.inputs[key][:12]})"
            for key in sorted(set(a.inputs) & set(b.inputs)) if a.inputs[key] != b.inputs[key]]


def inputs_sentence(a: RunManifest, b: RunManifest) -> str:
    """A verdict's first sentence where the runs read different files (compared with force=true), else ''."""
    inputs = input_differences(a, b)
    return (f"Runs {a.label} and {b.label} read different files: {'; '.join(inputs)}: any difference below may come "
            "from them. " if inputs else "")


def _what(config: dict) -> dict:
    """A run's config without the causes under test (perturb) and the keys of how it was computed (HOW)."""
    return _how_free({k: v for k, v in config.items() if k not in CAUSES})


def _how_free(config: dict) -> dict:
    """A run's config without the keys of how it was computed (HOW): they change no number."""
    out = dict(config)
    for key, names in HOW.items():
        rest = {k: v for k, v in (out.pop(key, None) or {}).items() if k not in names}
        if rest:
            out[key] = rest
    return out


def shared_artifacts(store: Store, a: RunManifest, b: RunManifest) -> list[str]:
    """The artifacts to compare, in pipeline order: every indexing artifact either run holds (one missing on a
    side is a difference); the search artifacts when both runs were searched (a run that was not searched
    is not different for it), and those of an optional stage (capture.batches) when both runs have it."""
    both_searched = "query_texts" in a.artifacts and "query_texts" in b.artifacts
    both = capture_options(a.config) & capture_options(b.config)
    return [n for n in artifact_order(store, a, b) if (n in a.artifacts or n in b.artifacts)
            and (both_searched or DAG.phase_of(n) != "search") and DAG.optional(n) in (None, *both)]


def artifact_order(store: Store, *manifests: RunManifest) -> list[str]:
    chunks = max(plan(store, m).num_chunks for m in manifests if m.plan or "num_chunks" in m.artifacts)
    return DAG.artifacts(chunks, options=set().union(*(capture_options(m.config) for m in manifests)))


def same_blob(name: str, ref: BlobRef, stage: str) -> Comparison:
    """Both runs point at one blob (hash over dtype, shape and bytes): bitwise equal without reading it."""
    if ref.kind != "tensor":
        return Comparison(name=name, status=Status.EQUAL, stage=stage, dtype="json", numel=1)
    numel = 1
    for n in ref.shape or ():
        numel *= n
    floats = ref.dtype in ("float16", "bfloat16", "float32", "float64")
    return Comparison(name=name, status=Status.EQUAL, stage=stage, dtype=ref.dtype,
                      shape="x".join(map(str, ref.shape or ())) or "scalar", numel=numel, mismatches=0, max_abs=0.0,
                      mad=0.0, max_ulp=0 if floats else None,
                      allclose={"torch": True, "bnb": True, "assert_close": True})


PROGRESS_EVERY = 5.0  # seconds: a comparison that takes longer says how far it is, this often


def compare_runs(store: Store, a: RunManifest, b: RunManifest, names: list[str] | None = None,
                 force: bool = False, memo: dict | None = None, tol: Tolerance | None = None,
                 progress: Callable[[str], None] | None = None) -> RunComparison:
    """`memo`: a dict shared by several calls (locate's rounds) so that a pair of blobs is read and compared
    once; keyed by content addresses (and the tolerance), symmetric in a and b. `tol`: what `allclose` means.
    `progress(line)`: told how far the comparison is every PROGRESS_EVERY seconds (a 100,000-passage run's
    embeddings take minutes to read)."""
    tol = tol or Tolerance()
    check_comparable(a, b, force)
    names = names if names is not None else shared_artifacts(store, a, b)
    results = []
    said = time.perf_counter()
    absent = {run.label: store.absent_by_choice(run) for run in (a, b)}  # bytes left out of a bundle, or hash only
    for i, name in enumerate(names):
        if progress is not None and time.perf_counter() - said >= PROGRESS_EVERY:
            progress(f"comparing {a.label!r} with {b.label!r}: {i}/{len(names)} artifacts, now {name}")
            said = time.perf_counter()
        stage = (a.artifacts.get(name) or b.artifacts.get(name)).stage if (name in a.artifacts or name in b.artifacts) else ""
        ra, rb = a.artifacts.get(name), b.artifacts.get(name)
        if ra is not None and rb is not None and ra.ref == rb.ref:  # same content address: equal, unread
            results.append(same_blob(name, ra.ref, stage))
            continue
        facts = DAG.facts(name)
        chosen = comparator(facts)
        reads = chosen.reads(facts)
        unreadable = [f"{run.label}'s `{n}` ({why_absent(run, n)})" for run in (a, b)
                      for n in sorted(absent[run.label] & {name, *reads})]
        if unreadable and ra is not None and rb is not None:
            results.append(unread(name, ra.ref, rb.ref, stage, unreadable))
            continue
        key = (*_memo_key(name, stage, ra, rb, a, b, reads), tol.key()) if memo is not None and ra and rb else None
        if key is not None and key in memo:
            results.append(memo[key])
            continue
        va = store.get(a, name) if name in a.artifacts else None
        vb = store.get(b, name) if name in b.artifacts else None
        ctx = Context(stage=stage, tol=tol, facts=facts, a=_load(store, a, reads), b=_load(store, b, reads))
        results.append(chosen.compare(name, va, vb, ctx))
        if key is not None:
            memo[key] = results[-1]
    return RunComparison(a.label, b.label, tuple(results), tol,
                         tuple(config_differences(_how_free(a.config), _how_free(b.config))))


def why_absent(run: RunManifest, name: str) -> str:
    """Why an artifact absent by choice (Store.absent_by_choice) is: a capture that kept its hash, or a bundle."""
    return "its capture kept only the hash" if name in run.hash_only else "left out of the bundle it was imported from"


def unread(name: str, a: BlobRef, b: BlobRef, stage: str, absent: list[str]) -> Comparison:
    """Two blobs of other hashes (not bitwise equal) whose values are not all in this store: not compared."""
    shape = "x".join(map(str, a.shape or ())) if a.shape == b.shape else \
        f"{'x'.join(map(str, a.shape or ()))} vs {'x'.join(map(str, b.shape or ()))}"
    numel = 1
    for n in a.shape or ():
        numel *= n
    return Comparison(name=name, status=Status.UNREAD, stage=stage,
                      dtype=(a.dtype or "json") if a.dtype == b.dtype else f"{a.dtype} vs {b.dtype}", shape=shape,
                      numel=numel if a.kind == "tensor" else 1,
                      note=f"not compared: the bytes of {', '.join(absent)} are not in this store; the hashes "
                           "differ, so they are not bitwise equal")


def _load(store: Store, run: RunManifest, names: tuple[str, ...]) -> dict:
    return {n: store.get(run, n) for n in names if n in run.artifacts}


def _memo_key(name: str, stage: str, ra, rb, a: RunManifest, b: RunManifest, reads: tuple[str, ...]) -> tuple:
    """Symmetric in a and b: the two blobs, and those of the artifacts the comparator reads besides."""
    read = tuple(tuple(sorted(str(m.artifacts[n].ref) for m in (a, b) if n in m.artifacts)) for n in reads)
    return (name, stage, *sorted((str(ra.ref), str(rb.ref))), read)
