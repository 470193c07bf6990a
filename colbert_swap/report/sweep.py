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

from colbert_swap.report.tables import table
from colbert_swap.store.blobs import atomic_write

COLORS = {"equal": "#b7e1b0", "order_only": "#d9f0a3", "allclose": "#fee391", "diverged": "#f4a582",
          "missing": "#dddddd", "": "#ffffff"}


def read_report(path: Path) -> dict:
    """One job's report.json, checked for the fields the summary reads; ValueError says what is wrong."""
    report = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(report, dict):
        raise ValueError("not a JSON object")
    injected = report.get("injected", [])
    if not isinstance(injected, list) or not all(isinstance(n, str) for n in injected):
        raise ValueError("'injected' is not a list of artifact names")
    if not isinstance(report.get("verdict", ""), str):
        raise ValueError("'verdict' is not text")
    for key in ("before", "artifacts"):
        section = report.get(key, {})
        if not isinstance(section, dict):
            raise ValueError(f"{key!r} is not an object")
        for name, entry in section.items():
            if not isinstance(entry, dict) or entry.get("status") not in COLORS or not entry.get("status"):
                raise ValueError(f"{key}.{name} has no valid status")
    return report


def collect(sweep_dir: Path) -> tuple[list[dict], list[str]]:
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
        report["job"] = job.name
        reports.append(report)
    return reports, problems


def summarize(sweep_dir: Path) -> Path | None:
    reports, problems = collect(sweep_dir)
    if not reports:  # not a sweep of tasks that write reports (e.g. -m model=tiny,base captures)
        return None
    columns: list[str] = []
    for r in reports:
        for name in [*r.get("before", {}), *r.get("artifacts", {})]:
            if name not in columns:
                columns.append(name)
    rows = [_row(r, columns) for r in reports]
    from colbert_swap.report.plots import sweep_heatmap

    heatmap = sweep_heatmap([(", ".join(r.get("injected", [])), [_status(r, c) for c in columns]) for r in reports],
                            columns, sweep_dir / "heatmap.png") if reports else None
    md = "\n\n".join([
        f"# sweep: {len(reports)} injection experiments", "Status of every artifact after replay, "
        "compared with the source run (`-`: upstream of the injection, taken from the target as it is).",
        f"![heatmap]({heatmap.name})" if heatmap else "",
        "## Jobs without a report\n\n" + "\n".join(f"- {p}" for p in problems) if problems else "",
        table(["job", "injected", "downstream same", "verdict"],
              [[r["job"], ", ".join(r.get("injected", [])), _same_count(r), r.get("verdict", "")] for r in reports]),
        table(["injected", *columns], rows), ""])
    atomic_write(sweep_dir / "summary.md", md.encode())
    atomic_write(sweep_dir / "summary.json", json.dumps({"jobs": reports, "columns": columns, "problems": problems},
                                                        indent=1).encode())
    atomic_write(sweep_dir / "summary.html", _html(reports, columns).encode())
    return sweep_dir / "summary.md"


def _status(report: dict, name: str) -> str:
    return report.get("artifacts", {}).get(name, {}).get("status", "")


def _row(report: dict, columns: list[str]) -> list[str]:
    return [", ".join(report.get("injected", [])) or "-", *[_status(report, c) or "-" for c in columns]]


def _same_count(report: dict) -> str:
    arts = report.get("artifacts", {})
    same = sum(1 for a in arts.values() if a["status"] in ("equal", "order_only"))
    return f"{same}/{len(arts)}"


def _html(reports: list[dict], columns: list[str]) -> str:
    head = "".join(f"<th><div>{html.escape(c)}</div></th>" for c in columns)
    body = []
    for r in reports:
        cells = "".join(f'<td style="background:{COLORS.get(_status(r, c), "#fff")}" title="{html.escape(c)}: '
                        f'{_status(r, c) or "upstream"}">{_status(r, c)[:1]}</td>' for c in columns)
        body.append(f"<tr><th>{html.escape(', '.join(r.get('injected', [])))}</th>{cells}</tr>")
    legend = " ".join(f'<span style="background:{v};padding:2px 6px">{k}</span>' for k, v in COLORS.items() if k)
    return f"""<!doctype html><meta charset="utf-8"><title>colbert_swap sweep</title>
<style>body{{font-family:sans-serif}} td{{width:1.4em;text-align:center;font-size:11px}}
th div{{writing-mode:vertical-rl;transform:rotate(180deg);font-weight:normal;font-size:11px}}</style>
<h1>Injection point &times; artifact (status after replay vs the source run)</h1><p>{legend}</p>
<table><tr><th>injected</th>{head}</tr>{''.join(body)}</table>
"""


class SweepSummary(Callback):
    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        path = summarize(Path(config.hydra.sweep.dir))
        if path:
            print(f"sweep summary: {path} (and summary.html, summary.json)")
