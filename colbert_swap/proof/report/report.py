"""The one report every task writes: report.json (machine), report.md (the seed posts' tables and a
verdict) and report.html (the same, figures inlined); and what a sweep or matrix summary reads back.

    report = Report("compare", f"compare: {a} vs {b}", verdict, sections=[...], data=CompareData(...), runs=[ra, rb])
    report.write(folder)                     # -> folder/report.md
    again = Report.read(folder / "report.json")   # the same task, title, verdict, data (read back: a dict)

A task's `data` is a ReportData, a dataclass defined next to the task's `run`: its fields, in order, are the
keys of report.json after task, title and verdict, and each field's docstring documents its key. To add a
section to a task's report: append its markdown (a `## heading` and a body) to `sections`, and what a machine
should read of it as a field of the task's ReportData.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

from colbert_swap.core.store import RunManifest

RESERVED = ("task", "title", "verdict", "figures", "environments")


@dataclass(frozen=True)
class ReportData:
    """What a machine reads of one task's report: subclassed by each task (`CompareData`, `LocateData`, ...) with
    its fields in the order of report.json's keys, each holding a value that is JSON-ready as it is."""

    def to_json(self) -> dict:
        """The fields, in order, as report.json's keys (after task, title and verdict)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class Report:
    task: str
    title: str
    verdict: str
    sections: list[str] = field(default_factory=list)  # markdown blocks, in order, each with its own heading
    data: ReportData | dict = field(default_factory=dict)  # everything a machine reads (source, target, ...); a
    # task's own ReportData, a dict when read back (from_json)
    runs: list[RunManifest] = field(default_factory=list)  # their environments go into report.json
    figures: list[str] = field(default_factory=list)  # PNG files beside report.md, shown under the verdict

    def to_json(self) -> dict:
        data = self.data.to_json() if isinstance(self.data, ReportData) else self.data
        clash = set(data) & set(RESERVED)
        assert not clash, f"report data may not use {clash}"
        out = {"task": self.task, "title": self.title, "verdict": self.verdict, **data, "figures": self.figures}
        if self.runs:
            out["environments"] = {r.label: {"env_id": r.env, **r.provenance} for r in self.runs}
        return out

    def to_markdown(self) -> str:
        return "\n\n".join([f"# {self.title}", self.verdict, *[f"![{Path(f).stem}]({f})" for f in self.figures],
                            *[s for s in self.sections if s], ""])

    def write(self, folder: Path) -> Path:
        from colbert_swap.proof.report.proof import html_page
        from colbert_swap.core.store.blobs import atomic_write

        folder = Path(folder)
        atomic_write(folder / "report.json", (json.dumps(self.to_json(), indent=1, default=str) + "\n").encode())
        markdown = self.to_markdown()
        atomic_write(folder / "report.md", markdown.encode())
        page = html_page(markdown, folder)
        if page is not None:
            atomic_write(folder / "report.html", page.encode())
        return folder / "report.md"

    @classmethod
    def from_json(cls, d: dict) -> "Report":
        """A report read back (no runs, no sections: its data, verdict and figures)."""
        return cls(task=str(d.get("task", "?")), title=str(d.get("title", "")), verdict=str(d.get("verdict", "")),
                   data={k: v for k, v in d.items() if k not in RESERVED},
                   figures=list(d.get("figures") or []))

    @classmethod
    def read(cls, path: Path) -> "Report":
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))
