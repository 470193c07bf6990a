"""The summary of a Hydra multirun sweep: one row per injection point, one column per artifact.

Registered as a Hydra callback in conf/config.yaml; it runs when the sweep ends and reads the
`report.json` every job wrote into its own folder of the sweep directory.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from colbert_swap.proof.compare.comparators import SAME, Status
from colbert_swap.proof.report.report import Report
from colbert_swap.proof.report.tables import table
from colbert_swap.core.store.blobs import atomic_write

# per status (report.json holds the plain words, equal to the Status members), and the inject task's own mark
COLORS = {Status.EQUAL: "#b7e1b0", Status.ORDER_ONLY: "#d9f0a3", Status.ALLCLOSE: "#fee391",
          Status.DIVERGED: "#f4a582", Status.UNREAD: "#fee0b6", Status.MISSING: "#dddddd", "injected": "#92c5de", "": "#ffffff"}


def read_report(path: Path) -> Report:
    """One job's report.json, checked for the fields the summary reads; ValueError says what is wrong."""
    report = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(report, dict):
        raise ValueError("not a JSON object")
    for key in ("injected", "injected_artifacts", "downstream"):
        names = report.get(key, [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{key!r} is not a list of artifact names")
    whole = report.get("whole_run", {})
    if not isinstance(whole, dict) or not isinstance(whole.get("differing", []), list):
        raise ValueError("'whole_run' is not an object with a list 'differing'")
    for key in ("task", "source", "target", "title"):
        if not isinstance(report.get(key, ""), str):
            raise ValueError(f"{key!r} is not text")
    figures = report.get("figures", [])
    if not isinstance(figures, list) or not all(isinstance(f, str) for f in figures):
        raise ValueError("'figures' is not a list of file names")
    if not isinstance(report.get("verdict", ""), str):
        raise ValueError("'verdict' is not text")
    for key in ("before", "artifacts"):
        section = report.get(key, {})
        if not isinstance(section, dict):
            raise ValueError(f"{key!r} is not an object")
        for name, entry in section.items():
            if not isinstance(entry, dict) or entry.get("status") not in COLORS or not entry.get("status"):
                raise ValueError(f"{key}.{name} has no valid status")
    return Report.from_json(report)


def collect(sweep_dir: Path) -> tuple[list[Report], list[str]]:
    """The jobs' reports, and one line per job folder whose report is missing or unreadable (a job that
    crashed or was killed, a file edited by hand): the summary lists them instead of failing."""
    reports, problems = [], []
    jobs = sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    for job in jobs:
        path = job / "report.json"
        if not path.exists():
            problems.append(f"job {job.name}: no report.json (the job failed or was stopped; see its log)")
            continue
        try:
            report = read_report(path)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            problems.append(f"job {job.name}: {path} cannot be read ({exc})")
            continue
        report.data["job"] = job.name
        reports.append(report)
    return reports, problems


INJECT_LEGEND = ("Each cell: the artifact of the replayed run against the source run's. `injected`: taken from "
                 "the source; a status with `*`: not recomputed (upstream of or beside the injection: the target's "
                 "own, as it is); a plain status: recomputed by the replay.")


def summarize(sweep_dir: Path) -> Path | None:
    reports, problems = collect(sweep_dir)
    if not reports:  # not a sweep of tasks that write reports (e.g. -m model=tiny,base captures)
        return None
    tasks = sorted({r.task for r in reports})
    inject = tasks == ["inject"]
    columns: list[str] = []
    for r in reports:
        for name in [*r.data.get("before", {}), *r.data.get("artifacts", {})]:
            if name not in columns:
                columns.append(name)
    labels = [_label(r, inject) for r in reports]
    from colbert_swap.proof.report.plots import sweep_heatmap

    heatmap = sweep_heatmap([(label, [_status(r, c) for c in columns]) for label, r in zip(labels, reports)],
                            columns, sweep_dir / "heatmap.png",
                            "injection point" if inject else "job") if columns else None
    what = f"{len(reports)} injection experiments" if inject else f"{len(reports)} {' and '.join(tasks)} jobs"
    legend = INJECT_LEGEND if inject else ("Each cell: the artifact of the job's source against its target; `-`: "
                                           "not in that job's report.")
    jobs = table(["job", "injected" if inject else "source vs target", "downstream same", "whole run", "index files",
                  "verdict"], [[r.data["job"], label, _same_count(r), _whole(r), _index(r), r.verdict]
                               for label, r in zip(labels, reports)])
    md = "\n\n".join(x for x in [
        f"# sweep: {what}", legend, f"![heatmap]({heatmap.name})" if heatmap else "",
        "## Jobs without a report\n\n" + "\n".join(f"- {p}" for p in problems) if problems else "",
        jobs, table(["injected" if inject else "job", *columns],
                    [[label, *[_cell(r, c) for c in columns]] for label, r in zip(labels, reports)]), ""] if x != "")
    atomic_write(sweep_dir / "summary.md", md.encode())
    atomic_write(sweep_dir / "summary.json", json.dumps({"tasks": tasks, "jobs": [r.to_json() for r in reports], "columns": columns,
                                                         "problems": problems, "legend": legend}, indent=1).encode())
    atomic_write(sweep_dir / "summary.html", _html(reports, columns, labels, legend).encode())
    return sweep_dir / "summary.md"


def _label(report: Report, inject: bool) -> str:
    if inject:
        return ", ".join(report.data.get("injected", [])) or "-"
    return f"{report.data.get('source', '?')} vs {report.data.get('target', '?')}"


def _status(report: Report, name: str) -> str:
    if name in report.data.get("injected_artifacts", []):
        return "injected"
    return report.data.get("artifacts", {}).get(name, {}).get("status", "")


def _cell(report: Report, name: str) -> str:
    status = _status(report, name)
    if not status:
        return "-"
    recomputed = report.task != "inject" or status == "injected" or name in report.data.get("downstream", [])
    return status if recomputed else f"{status}*"


def _same_count(report: Report) -> str:
    arts = {n: a for n, a in report.data.get("artifacts", {}).items() if n in report.data.get("downstream", report.data.get("artifacts", {}))}
    same = sum(1 for a in arts.values() if a["status"] in SAME)
    return f"{same}/{len(arts)}"


def _whole(report: Report) -> str:
    whole = report.data.get("whole_run")
    if not isinstance(whole, dict):
        return ""
    differing = whole.get("differing") or []
    return "identical" if not differing else f"{len(differing)} differ"


def _index(report: Report) -> str:
    whole = report.data.get("whole_run")
    if not isinstance(whole, dict) or whole.get("index_files_identical") is None:
        return ""
    return "identical" if whole["index_files_identical"] else "differ"


def _html(reports: list[Report], columns: list[str], labels: list[str], legend_text: str) -> str:
    head = "".join(f"<th><div>{html.escape(c)}</div></th>" for c in columns)
    body = []
    for label, r in zip(labels, reports):
        cells = "".join(f'<td style="background:{COLORS.get(_status(r, c), "#fff")}" title="{html.escape(c)}: '
                        f'{html.escape(_cell(r, c))}">{html.escape(_cell(r, c)[:1])}</td>' for c in columns)
        body.append(f"<tr><th>{html.escape(label)}</th>{cells}</tr>")
    legend = " ".join(f'<span style="background:{v};padding:2px 6px">{k}</span>' for k, v in COLORS.items() if k)
    return f"""<!doctype html><meta charset="utf-8"><title>colbert_swap sweep</title>
<style>body{{font-family:sans-serif}} td{{width:1.4em;text-align:center;font-size:11px}}
th div{{writing-mode:vertical-rl;transform:rotate(180deg);font-weight:normal;font-size:11px}}</style>
<h1>Job &times; artifact</h1><p>{html.escape(legend_text)}</p><p>{legend}</p>
<table><tr><th></th>{head}</tr>{''.join(body)}</table>
"""


class SweepSummary(Callback):
    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        path = summarize(Path(config.hydra.sweep.dir))
        if path:
            print(f"sweep summary: {path} (and summary.html, summary.json)")
