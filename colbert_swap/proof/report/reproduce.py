"""What a report needs to stand on its own when pasted into an issue: the command that made it, each run's full
config and the command that captures that run again, and where each was computed.

    reproduce(["task=compare", "source=a", "target=b"], [run_a, run_b])   # {"command": ..., "runs": {...}}
    section(data)                                                          # "## Reproduce" in markdown
"""

from __future__ import annotations

import shlex

from colbert_swap.config import run_overrides
from colbert_swap.core.store import RunManifest

PROGRAM = "python -m colbert_swap"


def command(overrides: list[str] | None) -> str | None:
    """The command line of these overrides, quoted for a POSIX shell; None when the report was made by a Python
    call (there is no command line)."""
    if overrides is None:
        return None
    return " ".join([PROGRAM, *(shlex.quote(o) for o in overrides)])


def run_command(run: RunManifest) -> str:
    """The command that captures `run` again with its full config (its own environment named where it has one)."""
    args = [f"run={run.label}", *run_overrides(run.config)]
    spec = run.provenance.get("environment")
    if spec:
        args = ["task=env_capture", f"environment={spec}", *args]
    return " ".join([PROGRAM, *(shlex.quote(a) for a in args)])


def reproduce(overrides: list[str] | None, runs: list[RunManifest]) -> dict:
    """report.json's `reproduce`: this invocation's command and, per run, its config, origin, environment and the
    command that captures it again (a capture; a replay, isolate or drill is made again by the invocation)."""
    out = {"command": command(overrides), "runs": {}}
    for run in runs:
        out["runs"][run.label] = {
            "origin": run.origin.to_json(), "config": run.config, "environment": run.env,
            "torch": run.provenance.get("torch"), "python": run.provenance.get("python"),
            "colbert-ai": run.provenance.get("colbert-ai"), "cpu": run.provenance.get("cpu"),
            "gpu": run.provenance.get("gpu"),
            "capture": run_command(run) if run.origin.kind == "capture" else None}
    return out


def section(data: dict) -> str:
    """`## Reproduce`: the command, then per run what it is and its config (folded: GitHub shows <details>)."""
    lines = ["## Reproduce", ""]
    lines += ([f"This report: `{data['command']}`", ""] if data.get("command") else
              ["This report was made by a Python call (colbert_swap's API); the runs below are captured by these "
               "commands.", ""])
    for label, run in data.get("runs", {}).items():
        where = ", ".join(f"{k} {run[k]}" for k in ("torch", "python", "colbert-ai", "cpu", "gpu") if run.get(k))
        kind = run["origin"].get("kind", "?")
        lines.append(f"- run `{label}` ({kind}; environment {run['environment']}: {where})")
        if run.get("capture"):
            lines.append(f"  captured again by: `{run['capture']}`")
    if data.get("runs"):
        rows = "\n".join(f"{label}:\n" + "\n".join(f"  {o}" for o in run_overrides(run["config"]))
                         for label, run in data["runs"].items())
        lines += ["", "<details><summary>Each run's full config</summary>", "", "```", rows, "```", "", "</details>"]
    return "\n".join(lines)
