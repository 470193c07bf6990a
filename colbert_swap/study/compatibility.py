"""The compatibility verdict of a matrix: one row per environment against a reference, and a paragraph.

    changes = {"torch-2.1.0": Change("torch-2.0.1", "torch-2.1.0", artifacts_differ=True, index_changed=True,
                                     root_cause=("local_sample_embs", "embs"), drill=DrillFinding(...), ...)}
    v = verdict(["torch-1.13.1", "torch-2.0.1", "torch-2.1.0"], "torch-1.13.1", against, changes, failures={})
    v.table()     # environment | index vs the reference | retrieval | change from the one before | packages
    v.summary     # "torch-1.13.1 .. torch-2.0.1 give an identical index; torch-2.1.0 changes it (root cause ...)"

Pure functions over typed results: the matrix (colbert_swap/study/matrix.py) gathers the facts (colbert-ai's index
files against the reference's, each adjacent pair's locate, drill and package differences), this module
only decides and words them. "index identical" is decided from the data of colbert-ai's index files: files
that differ only in the ColBERTConfig they record (another index_bsize) do not make an index differ.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Mapping, Optional

from colbert_swap.env.venvs import normalize
from colbert_swap.colbert.index_files import data_differences
from colbert_swap.proof.report.tables import table

IDENTICAL, DIFFERS = "index identical", "index differs"
NOT_COMPARED, NOT_CAPTURED = "index not compared", "not captured"
NO_VERDICT = "no verdict"  # our capture is not colbert-ai's Indexer there (parity differs or failed): no claim
EQUAL_INPUTS = "equal inputs, different output"
OTHER_INPUTS = "same operation, different inputs"


def in_encoder(artifact: str) -> bool:
    """The encoder's outputs: `local_sample_embs` (the k-means sample) and `embs` / `embs.N` (every chunk)."""
    return artifact == "local_sample_embs" or re.fullmatch(r"embs(\.\d+)?", artifact) is not None


RAN, LOADED_NOT_USED, INSTALLED_ONLY = "ran", "loaded, not used", "installed only"  # as colbert_swap/env/loaded.py


@dataclass(frozen=True)
class PackageChange:
    name: str
    old: Optional[str]  # None: not installed in the earlier environment
    new: Optional[str]  # None: not installed in the later one
    # whether the captures' processes loaded it (loaded.classify): "ran" | "loaded, not used" (a GPU library on
    # runs that used no GPU) | "installed only" | "unknown" / None (a run recorded nothing: an older capture)
    use: Optional[str] = None

    def text(self) -> str:
        return f"{self.name} {self.old or '(none)'} -> {self.new or '(none)'}"

    @property
    def may_cause(self) -> bool:
        """Could it have changed a number? Not if no process loaded it, nor a GPU library on a CPU-only run."""
        return self.use not in (LOADED_NOT_USED, INSTALLED_ONLY)


@dataclass(frozen=True)
class FirstOp:
    """The first operation event of a module drill (report.json `first_op`)."""

    kind: str  # "equal inputs, different output" | "same operation, different inputs" | "different operations" | ...
    op: Optional[str]  # None when no operation differs on equal inputs; a computing op, never a view
    other_op: Optional[str] = None  # what the other side computes instead (already quoted), for "different operations"
    parameters: tuple[str, ...] = ()  # parameters that differ, for "same operation, different inputs"
    verdict: Optional[str] = None  # the op report's own: "the kernel differs" | "other inputs" | "another implementation"
    computing: tuple[str, ...] = ()  # this side's computing ops of the differing span ("different operations")

    @classmethod
    def from_report(cls, found: dict) -> "FirstOp":
        return cls(found.get("kind", "?"), found.get("op"), found.get("other_op") or None,
                   tuple(found.get("parameters_differing") or ()), found.get("verdict"),
                   tuple(found.get("computing") or ()))

    def text(self) -> str:
        """The op drill's finding in the op report's own words: its verdict in parentheses."""
        if self.op is None:
            return "no operation differs on equal inputs"
        if self.kind == EQUAL_INPUTS:
            return f"op `{self.op}` gets equal inputs and gives different outputs ({self.verdict or 'the kernel differs'})"
        if self.kind == OTHER_INPUTS:
            named = ", ".join(f"`{p}`" for p in self.parameters)
            why = f": {named} differ{'s' if len(self.parameters) == 1 else ''}" if self.parameters else ""
            return f"op `{self.op}` runs on different inputs{why} ({self.verdict or 'other inputs'})"
        ops = self.computing or (self.op,)
        named = ", ".join(f"`{o}`" for o in ops[:6]) + (" ..." if len(ops) > 6 else "")
        return (f"op{'s' if len(ops) > 1 else ''} {named} run{'s' if len(ops) == 1 else ''} where the other side runs "
                f"{self.other_op or 'nothing'} ({self.verdict or 'another implementation'})")

    @property
    def package(self) -> Optional[str]:
        """The package whose kernel an `aten.` op runs: torch."""
        return "torch" if self.op and self.op.startswith("aten.") else None


@dataclass(frozen=True)
class DrillFinding:
    """What the module drill and the op drill of a pair found (or why they could not)."""

    module: Optional[str] = None  # the first module whose output differs; None: none on the probe passages
    op: Optional[FirstOp] = None  # the first operation inside it (None: not drilled that far)
    error: Optional[str] = None  # "drill failed (exit 1) ...; see LOG"

    def text(self) -> str:
        if self.error:
            return self.error
        if self.module is None:
            return "every module output is equal on the probe passages"
        return f"module `{self.module}`" + (f"; {self.op.text()}" if self.op else "")


@dataclass(frozen=True)
class Change:
    """What made environment `b` differ from its predecessor `a` (an adjacent pair of the matrix)."""

    a: str
    b: str
    artifacts_differ: bool
    index_changed: bool  # the data of colbert-ai's index files (not only the config they record)
    index_compared: bool = True  # False: one of the runs has no index folder
    root_cause: Optional[tuple[str, ...]] = None  # locate's answer; None when not located
    locate_error: Optional[str] = None
    drill: Optional[DrillFinding] = None  # None: not drilled (root cause outside the encoder, or not located)
    packages: Optional[tuple[PackageChange, ...]] = None  # None: a freeze is missing
    intended: tuple[str, ...] = ()  # the packages b's spec means to change (a generated step's `changes`)
    retrieval: Optional[str] = None  # b's rankings against a's: "identical" | "same sets" | "changed (ΔnDCG ...)"
    noise: tuple[str, ...] = ()  # root-cause artifacts locate's noise check found not reproducible: not causes

    @property
    def encoder(self) -> bool:
        return any(in_encoder(n) for n in self.root_cause or ())

    @property
    def unintended(self) -> tuple[PackageChange, ...]:
        """Packages that moved besides the ones b's spec names and that could have changed a number (loaded by
        a capture; a GPU library only where a GPU computed); empty when the spec names none."""
        wanted = {normalize(n) for n in self.intended}
        return tuple(p for p in self.packages or () if wanted and normalize(p.name) not in wanted and p.may_cause)

    @property
    def kernel_explained(self) -> bool:
        """The op drill found a kernel giving other bits on equal inputs, and that kernel's package moved and was
        loaded: the change is pinned on it, whatever else moved."""
        op = self.drill.op if self.drill else None
        if op is None or op.kind != EQUAL_INPUTS or op.package is None:
            return False
        return any(normalize(p.name) == op.package and p.may_cause for p in self.packages or ())

    def cause_text(self) -> str:
        """'root cause `local_sample_embs`, `embs`; module `...`; op `...` gets equal inputs and ...'."""
        if self.locate_error:
            return f"not located: {self.locate_error}"
        if not self.root_cause:
            return "not located"
        causes = [n for n in self.root_cause if n not in self.noise]
        text = "root cause " + ", ".join(f"`{n}`" for n in causes) if causes else "no cause"
        if self.noise:
            text += "; noise, not a cause: " + ", ".join(f"`{n}`" for n in self.noise) + \
                " (not reproducible in this environment on equal inputs)"
        if self.drill is not None:
            text += "; " + self.drill.text()
        return text

    def unexplained(self) -> list[str]:
        """Why this change is not fully explained; empty when it is (or when nothing changed)."""
        if not self.artifacts_differ:
            return []
        why = []
        if self.locate_error or not self.root_cause:
            why.append(f"{self.a} -> {self.b} is not located ({self.locate_error or 'locate named no root cause'})")
        if self.noise:
            why.append(f"{self.a} -> {self.b}: {', '.join(self.noise)} did not reproduce on equal inputs (noise of the "
                       "environment, not evidence of a cause)")
        if self.drill is not None and self.drill.error:
            why.append(f"{self.a} -> {self.b}: the drill failed ({self.drill.error})")
        elif self.drill is not None and self.drill.module is None:
            why.append(f"{self.a} -> {self.b}: the encoder differs but no module output differs on the probes")
        elif self.drill is not None and (self.drill.op is None or self.drill.op.op is None):
            why.append(f"{self.a} -> {self.b}: inside `{self.drill.module}` no operation differs on equal inputs")
        if self.unintended and not self.kernel_explained:
            why.append(f"{self.a} -> {self.b} moves more than {', '.join(self.intended)}: "
                       f"{packages_text(self.unintended)}")
        if self.packages is None:
            why.append(f"{self.a} -> {self.b}: which packages differ is unknown (a freeze is missing)")
        return why


def packages_text(packages: Optional[tuple[PackageChange, ...]], limit: int = 4) -> str:
    """What moved, those that could have computed first; the rest named apart as installed only, or loaded and
    not used (a GPU library on runs that used no GPU)."""
    if packages is None:
        return "unknown"
    if not packages:
        return "none"

    def listed(group: list[PackageChange]) -> str:
        shown = ", ".join(p.text() for p in group[:limit])
        return shown + (f" and {len(group) - limit} more" if len(group) > limit else "")

    ran = [p for p in packages if p.may_cause]
    parts = [listed(ran)] if ran else []
    for use, words in ((LOADED_NOT_USED, "loaded, not used: no GPU computed"), (INSTALLED_ONLY, "installed only")):
        group = [p for p in packages if p.use == use]
        if group:
            parts.append(f"{words}: {listed(group)}")
    return "; ".join(parts)


@dataclass(frozen=True)
class Parity:
    """task=parity in one environment: our capture's index files against colbert-ai's own Indexer's there."""

    status: str  # "identical" | "differs" | "not compared" | "failed"
    detail: str = ""  # not compared: why; failed: the reason; differs: "`file` (how); ..."
    files: tuple[str, ...] = ()  # differs: the index files that differ

    @classmethod
    def from_report(cls, report: dict) -> "Parity":
        """From task=parity's report.json (tasks/parity.py ParityData)."""
        diffs = report.get("differences") or {}
        if report.get("status") == "differs":
            return cls("differs", "; ".join(f"`{n}` ({how})" for n, how in sorted(diffs.items())), tuple(sorted(diffs)))
        if report.get("status") == "identical":
            return cls("identical")
        if report.get("status") == "not compared":
            return cls("not compared", report.get("why") or "?")
        return cls("failed", f"report.json says status {report.get('status')!r}")

    @property
    def refuses(self) -> bool:
        """Our capture there is not shown to be colbert-ai's: the verdict does not speak for the environment."""
        return self.status in ("differs", "failed")

    def text(self) -> str:
        """The parity cell of a row: 'parity: identical', 'parity: differs: `centroids.pt` (...)', 'parity: not
        compared: why', 'parity: failed: reason'."""
        return f"parity: {self.status}" + (f": {self.detail}" if self.detail else "")

    def refusal(self) -> str:
        """Why no verdict speaks for the environment: 'our capture differs from colbert-ai's Indexer there
        (centroids.pt)'."""
        if self.status == "differs":
            return f"our capture differs from colbert-ai's Indexer there ({', '.join(self.files)})"
        return f"our capture could not be checked against colbert-ai's Indexer there (parity failed: {self.detail})"


@dataclass(frozen=True)
class Skipped:
    """An adjacent pair that was asked for and not compared, and why (never 'keeps' or 'identical')."""

    a: str
    b: str
    why: str  # "torch-2.0.1 was not captured (...)", "the comparison failed: ..."

    def text(self) -> str:
        return f"{self.a} -> {self.b} ({self.why})"


@dataclass(frozen=True)
class Row:
    """One environment against the reference."""

    env: str
    index: str  # IDENTICAL | DIFFERS | NOT_COMPARED | NOT_CAPTURED
    files: tuple[str, ...] = ()  # index files whose data differ from the reference's
    config_only: tuple[str, ...] = ()  # index files that differ only in the config they record
    retrieval: Optional[str] = None  # against the reference's rankings: "identical" | "same sets" | "changed (...)"
    change: Optional[Change] = None  # from the environment before it (None for the first, or not captured)
    failure: Optional[str] = None  # why it was not captured
    not_compared: Optional[str] = None  # captured, but compared with no environment before it: why
    parity: Optional[Parity] = None  # task=parity there (matrix.parity=true); None: not asked
    refused: Optional[str] = None  # why no verdict speaks for it (Parity.refusal); index is then NO_VERDICT


def index_row(env: str, diffs: Optional[dict[str, str]], change: Optional[Change] = None) -> Row:
    """A row from `run_index_differences(store, reference, env)` (None: a run has no index folder)."""
    if diffs is None:
        return Row(env, NOT_COMPARED, change=change)
    data = data_differences(diffs)
    return Row(env, DIFFERS if data else IDENTICAL, tuple(sorted(data)),
               tuple(sorted(n for n in diffs if n not in data)), change=change)


@dataclass(frozen=True)
class Verdict:
    reference: str  # the environment every row is compared with: the one asked for, or its stand-in
    rows: tuple[Row, ...]
    summary: str
    unexplained: tuple[str, ...]
    skipped: tuple[Skipped, ...] = ()  # adjacent pairs asked for and not compared
    asked: Optional[str] = None  # the reference asked for, when it was not captured and `reference` stands in

    @property
    def complete(self) -> bool:
        """Every environment captured, every pair asked for compared, and a verdict for each (no parity that
        differs or failed)."""
        return not self.skipped and all(r.index not in (NOT_CAPTURED, NO_VERDICT) for r in self.rows)

    def table(self) -> str:
        rows = []
        for r in self.rows:
            files = ", ".join(f"`{f}`" for f in r.files[:4]) + (" ..." if len(r.files) > 4 else "")
            note = f" (config only: {', '.join(r.config_only)})" if r.config_only and r.index == IDENTICAL else ""
            c = r.change
            before = ("-" if r.not_compared is None else f"not compared: {r.not_compared}") if c is None else \
                ("same artifacts" if not c.artifacts_differ else c.cause_text())
            mark = " (reference)" if r.env == self.reference and not self.asked else \
                " (stand-in reference)" if r.env == self.reference else \
                " (reference, not captured)" if r.env == self.asked else ""
            index = f"{NO_VERDICT} — {r.refused}" if r.refused else r.index + note + (f": {files}" if files else "")
            rows.append([f"`{r.env}`" + mark, index,
                         r.retrieval or "not measured", f"not captured: {r.failure}" if r.failure else before,
                         "-" if c is None else packages_text(c.packages)])
            if any(x.parity for x in self.rows):  # matrix.parity=true: every row says its parity
                rows[-1].append(r.parity.text() if r.parity else "parity: not checked (not captured)"
                                if r.index == NOT_CAPTURED else "parity: not checked")
        parity = ["our capture vs colbert-ai's Indexer"] if any(x.parity for x in self.rows) else []
        return table(["environment", f"against {self.reference}", "retrieval", "change from the one before",
                      "packages that differ from the one before", *parity], rows)

    def to_json(self) -> dict:
        return {"reference": self.reference, "reference_asked": self.asked or self.reference,
                "summary": self.summary, "unexplained": list(self.unexplained), "complete": self.complete,
                "not_compared": [asdict(p) for p in self.skipped], "rows": [asdict(r) for r in self.rows]}


def verdict(envs: list[str], reference: str, against: Mapping[str, Optional[dict[str, str]]],
            changes: Mapping[str, Change], failures: Mapping[str, object],
            retrieval: Mapping[str, Optional[str]] | None = None, skipped: tuple[Skipped, ...] = (),
            asked: Optional[str] = None, parity: Mapping[str, Parity] | None = None) -> Verdict:
    """`against`: env -> its index differences from the reference's (run_index_differences); `changes`:
    env -> the Change from the captured environment before it; `failures`: env -> why it was not captured (an
    EnvFailure, or its text); `retrieval`: env -> its rankings against the reference's (RetrievalVerdict.short()),
    when searched; `skipped`: the adjacent pairs asked for and not compared; `asked`: the reference asked for
    when it was not captured and `reference` is the environment standing in for it; `parity`: env -> task=parity
    there (matrix.parity=true): an environment whose parity differs or failed gets no verdict (NO_VERDICT), and
    while the reference's does, nothing is said against it."""
    from dataclasses import replace

    def failure(e: str) -> str:
        f = failures[e]
        return f.line() if hasattr(f, "line") else str(f).splitlines()[0]

    rows = tuple(Row(e, NOT_CAPTURED, failure=failure(e)) if e in failures else
                 index_row(e, against.get(e), changes.get(e)) if e in against else
                 Row(e, NOT_COMPARED, change=changes.get(e)) for e in envs)
    first = next((r.env for r in rows if r.index != NOT_CAPTURED), None)
    rows = tuple(replace(r, retrieval=(retrieval or {}).get(r.env),
                         not_compared=_why_alone(r.env, skipped) if r.index != NOT_CAPTURED and r.change is None
                         and r.env != first else None) for r in rows)
    checked = parity or {}
    rows = tuple(r if r.env not in checked or r.index == NOT_CAPTURED else
                 replace(r, parity=checked[r.env]) if not checked[r.env].refuses else
                 replace(r, index=NO_VERDICT, files=(), config_only=(), parity=checked[r.env],
                         refused=checked[r.env].refusal()) for r in rows)
    why = tuple(w for r in rows if r.change for w in r.change.unexplained())
    return Verdict(reference, rows, summary(rows, reference, why, skipped, asked), why, tuple(skipped), asked)


def _why_alone(env: str, skipped: tuple[Skipped, ...]) -> str:
    """Why a captured environment (not the first) was compared with none before it."""
    reasons = [p.why for p in skipped if p.b == env]
    return "; ".join(reasons) or "no pair with an environment before it was asked for"


def summary(rows: tuple[Row, ...], reference: str, unexplained: tuple[str, ...], skipped: tuple[Skipped, ...] = (),
            asked: Optional[str] = None) -> str:
    """One paragraph: where the index stays and where it changes (and why), against the reference, what was
    not captured or not compared, and what could not be explained. Every sentence is true of what it names."""
    captured = [r for r in rows if r.index != NOT_CAPTURED]
    if len(captured) < 2:
        text = "Fewer than two environments were captured: nothing to compare."
    else:
        text = _segments(captured) + " " + _against(rows, reference, asked)
        quiet = [r.change for r in captured if r.change and r.change.artifacts_differ and not r.change.index_changed]
        if quiet:
            text += " Changes that leave the index data as it was: " + "; ".join(
                f"{c.a} -> {c.b} ({c.cause_text()})" for c in quiet) + "."
    refused = [r for r in rows if r.refused]
    if refused:
        text += " " + "; ".join(f"{r.env}: no verdict — {r.refused}" for r in refused) + "."
    failed = [r for r in rows if r.index == NOT_CAPTURED]
    if failed:
        text += " Not captured: " + "; ".join(f"{r.env} ({r.failure or '?'})" for r in failed) + "."
    if skipped:
        text += " Not compared: " + "; ".join(p.text() for p in skipped) + "."
    if unexplained:
        text += " Not explained: " + "; ".join(unexplained) + "."
    elif any(r.change and r.change.artifacts_differ for r in captured):
        text += (" Every change between the pairs compared is located, and every encoder change drilled to its "
                 "module and operation.")
    if failed or skipped or refused:
        text += " The study is incomplete."
    return text + " " + _retrieval(rows, reference)


def _retrieval(rows: tuple[Row, ...], reference: str) -> str:
    measured = [r for r in rows if r.retrieval and r.env != reference]
    if not measured:
        return "Retrieval was not compared (the runs have no search artifacts: matrix.retrieval=false?)."
    groups: dict[str, list[str]] = {}
    for r in measured:
        groups.setdefault(r.retrieval.split(" (")[0], []).append(r.env + (f" {r.retrieval[len('changed '):]}"
                                                                          if r.retrieval.startswith("changed (") else ""))
    words = {"identical": "identical rankings", "same sets": "the same top-k sets in another order",
             "changed": "other passages"}
    return f"Retrieval against {reference}: " + "; ".join(f"{words.get(k, k)} in {', '.join(v)}"
                                                          for k, v in groups.items()) + "."


def _segments(rows: list[Row]) -> str:
    """'A .. C give an identical index; D changes it (root cause ...); E .. F keep D's'."""
    groups: list[list[Row]] = []
    for r in rows:  # a row joins the group before it only when it was compared with it and keeps its index
        if not groups or r.change is None or r.change.index_changed or not r.change.index_compared or r.refused \
                or groups[-1][0].refused:
            groups.append([r])
        else:
            groups[-1].append(r)
    parts = []
    for k, group in enumerate(groups):
        head, rest = group[0], group[1:]
        span = f"{rest[0].env}" + (f" .. {rest[-1].env}" if len(rest) > 1 else "") if rest else ""
        if head.refused:  # said once, in the summary's "no verdict" sentence
            parts.append(f"{head.env}: no verdict")
            continue
        if k and groups[k - 1][0].refused:  # nothing is claimed against an environment without a verdict
            parts.append(f"{head.env} is not weighed against {groups[k - 1][0].env} (no verdict there)" +
                         (f"; {span} keep{'s' if len(rest) == 1 else ''} {head.env}'s index" if rest else ""))
            continue
        if k == 0:
            parts.append(f"{head.env} .. {group[-1].env} give an identical index" if rest else
                         f"{head.env} gives the index")
            continue
        c = head.change
        keep = f", and {span} keep{'s' if len(rest) == 1 else ''} {head.env}'s" if rest else ""
        if c is None:  # compared with nothing before it: no claim about the index before it
            parts.append(f"{head.env} is not compared with the environment before it ({head.not_compared})"
                         + (f"; {span} keep{'s' if len(rest) == 1 else ''} {head.env}'s index" if rest else ""))
            continue
        what = "changes it" if c.index_compared else "cannot be compared (no index folder)"
        parts.append(f"{head.env} {what} ({c.cause_text()})" + keep)
    return "; ".join(parts) + "."


def _against(rows: tuple[Row, ...], reference: str, asked: Optional[str] = None) -> str:
    ref = next((r for r in rows if r.env == reference), None)
    if ref is not None and ref.refused:
        return f"No verdict against the reference {reference}: {ref.refused}."
    same = [r.env for r in rows if r.index == IDENTICAL and r.env != reference]
    other = [r.env for r in rows if r.index == DIFFERS]
    unknown = [r.env for r in rows if r.index == NOT_COMPARED and r.env != reference]
    which = (f"{reference} (standing in for the reference {asked}, which was not captured)" if asked else
             f"the reference {reference}")
    if not same and not other:
        return f"No environment's index could be compared with {reference}'s."
    return (f"Against {which}: the index is identical in {', '.join(same) or 'no other environment'} and differs "
            f"in {', '.join(other) or 'none'}" + (f"; not compared in {', '.join(unknown)}" if unknown else "") + ".")
