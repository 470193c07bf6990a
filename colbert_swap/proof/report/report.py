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
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from colbert_swap.core.store import RunManifest
from colbert_swap.proof.report.reproduce import reproduce, section

ATTACH = "report.zip"  # beside report.md: report.md, report.json, report.html and the figures, to attach to an issue
FIGURE = re.compile(r"!\[[^\]]*\]\(([^)/\s]+\.png)\)")  # a figure beside report.md


def pasteable(markdown: str) -> str:
    """report.md as it can be pasted into a GitHub issue: a figure is named, not embedded by a relative path that
    breaks there (report.html inlines it; report.zip holds it)."""
    return FIGURE.sub(lambda m: f"*Figure `{m.group(1)}`: inlined in report.html, attached in {ATTACH}.*", markdown)


def _zip(folder: Path, names: list[str]) -> None:
    import os
    import tempfile
    import zipfile

    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".zip.tmp")
    os.close(fd)
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for name in names:
            z.write(folder / name, name)
    os.replace(tmp, folder / ATTACH)

RESERVED = ("task", "title", "verdict", "figures", "environments", "reproduce", "attach")


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
    invocation: list[str] | None = None  # the command line's overrides (None: a Python call): `## Reproduce`

    def to_json(self) -> dict:
        data = self.data.to_json() if isinstance(self.data, ReportData) else self.data
        clash = set(data) & set(RESERVED)
        assert not clash, f"report data may not use {clash}"
        out = {"task": self.task, "title": self.title, "verdict": self.verdict, **data, "figures": self.figures}
        if self.runs:
            out["environments"] = {r.label: {"env_id": r.env, **r.provenance} for r in self.runs}
        out["reproduce"] = reproduce(self.invocation, self.runs)
        out["attach"] = ATTACH
        return out

    def to_markdown(self) -> str:
        return "\n\n".join([f"# {self.title}", self.verdict, *[f"![{Path(f).stem}]({f})" for f in self.figures],
                            *[s for s in self.sections if s], section(reproduce(self.invocation, self.runs)), ""])

    def write(self, folder: Path) -> Path:
        from colbert_swap.proof.report.proof import html_page
        from colbert_swap.core.store.blobs import atomic_write

        folder = Path(folder)
        atomic_write(folder / "report.json", (json.dumps(self.to_json(), indent=1, default=str) + "\n").encode())
        markdown = self.to_markdown()
        page = html_page(markdown, folder)  # figures inlined
        if page is not None:
            atomic_write(folder / "report.html", page.encode())
        atomic_write(folder / "report.md", pasteable(markdown).encode())
        figures = sorted(set(FIGURE.findall(markdown)))
        _zip(folder, ["report.md", "report.json", *(["report.html"] if page is not None else []),
                      *(f for f in figures if (folder / f).is_file())])
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
