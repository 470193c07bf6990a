"""Why an environment of a study could not be captured: read from its log, told with advice that fits.

    failure = from_log("torch-2.0.1", Path("outputs/envs/logs/torch-2.0.1.log"), "capture", exit_code=1)
    failure.kind      # "colbert_swap"  (install | refused | colbert_swap | colbert-ai | library | killed | failed)
    failure.reason    # "AttributeError: 'Tensor' object has no attribute 'nbytes'"
    failure.where     # "colbert_swap/core/store/blobs.py:130 in put"
    failure.line()    # "colbert_swap crashed: AttributeError: ... (colbert_swap/core/store/blobs.py:130 in put)"
    failure.advice()  # "This is a bug in colbert_swap: ...; its log: ..."

The kind decides the advice: a spec that could not be installed is fixed in the spec; a capture that
colbert_swap refused (`error: ...`, exit 2) names what to fix; an exception raised inside colbert_swap is a bug
of ours and the same command fails the same way; one raised inside colbert-ai or another library is that
environment's incompatibility; a process killed by a signal (memory) may pass when run again.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from colbert_swap.errors import UserError

FRAME = re.compile(r'^\s*File "(?P<path>[^"]+)", line (?P<line>\d+), in (?P<func>\S+)')
EXCEPTION = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Za-z_]\w*(?:Error|Exception|Interrupt|Exit|Warning|Failure)\b.*")
INSTALL_ERROR = re.compile(r"^\s*(?:ERROR:|error:|×|╰─▶|Because )")
TAIL = 12  # the log lines a report shows under a failure


@dataclass(frozen=True)
class EnvFailure:
    env: str
    kind: str  # install | refused | colbert_swap | colbert-ai | library | killed | failed
    reason: str  # the exception line, the refusal or the installer's error
    step: str = "capture"  # what was running: "creating the venv", "installing its requirements", "capture", ...
    where: Optional[str] = None  # the innermost frame: "colbert_swap/core/store/blobs.py:130 in put"
    package: Optional[str] = None  # the package that raised (kind library / colbert-ai)
    log: Optional[str] = None
    exit_code: Optional[int] = None
    tail: str = ""  # the last lines of the log that explain it

    def line(self) -> str:
        """One line: what failed and the reason."""
        where = f" ({self.where})" if self.where else ""
        what = {"install": f"{self.step} failed", "refused": "colbert_swap refused the capture",
                "colbert_swap": "colbert_swap crashed", "colbert-ai": "colbert-ai failed",
                "library": f"{self.package or 'a library'} failed", "killed": "the capture was killed",
                }.get(self.kind, f"{self.step} failed (exit {self.exit_code})")
        return f"{what}: {self.reason}{where}"

    def advice(self) -> str:
        log = f" Its log: {self.log}." if self.log else ""
        return {
            "install": "The spec could not be installed: fix its requirements (or pip_args) and run the same command "
                       "again; runs already captured are kept.",
            "refused": "Fix what the error names and run the same command again.",
            "colbert_swap": "This is a bug in colbert_swap, not in the spec or the environment: the same command "
                            "fails the same way until it is fixed; please report it with the log.",
            "colbert-ai": "colbert-ai 0.2.22 does not run in this environment: an incompatibility of the environment, "
                          "not a difference in numbers.",
            "library": f"{self.package or 'A library'} raised inside this environment: an incompatibility of its "
                       "packages, not a difference in numbers.",
            "killed": "The process was killed (out of memory?): run the same command again; the capture resumes.",
        }.get(self.kind, "Read the log; run the same command again once the cause is fixed.") + log

    def text(self) -> str:
        """The line, the advice and the log's last lines (for a console or a UserError)."""
        return f"environment {self.env!r}: {self.line()}\n{self.advice()}" + (f"\n{self.tail}" if self.tail else "")

    def to_json(self) -> dict:
        return {**asdict(self), "line": self.line(), "advice": self.advice()}


class EnvironmentFailed(UserError):
    """A step in an environment failed; `.failure` says how."""

    def __init__(self, failure: EnvFailure):
        super().__init__(failure.text())
        self.failure = failure


def from_log(env: str, log: Path, step: str, exit_code: Optional[int], text: Optional[str] = None) -> EnvFailure:
    """The failure of `step` (exit `exit_code`) from the log it wrote (or `text`): its kind, the reason line,
    the innermost frame, and the last lines that explain it."""
    text = text if text is not None else _read(log)
    lines = [line.rstrip() for line in text.splitlines()]
    base = dict(env=env, step=step, log=str(log), exit_code=exit_code)
    if step != "capture":  # a venv step: the installer's own error
        errors = [line.strip() for line in lines if INSTALL_ERROR.match(line)]
        reason = (errors[0] if errors else _last(lines)) or f"exit {exit_code}"
        return EnvFailure(kind="install", reason=reason, tail=_tail(lines), **base)
    if exit_code is not None and exit_code < 0:
        return EnvFailure(kind="killed", reason=f"signal {-exit_code}", tail=_tail(lines), **base)
    refused = [line[len("error: "):] for line in lines if line.startswith("error: ")]
    start = max((i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")),
                default=None)
    if start is None:
        if refused:
            return EnvFailure(kind="refused", reason=refused[-1], tail=_tail(lines), **base)
        return EnvFailure(kind="failed", reason=_last(lines) or f"exit {exit_code}", tail=_tail(lines), **base)
    frames = [m for m in (FRAME.match(line) for line in lines[start:]) if m]
    after = lines[start + 1:]
    reason = next((line for line in after if EXCEPTION.match(line)), None) or _last(after) or f"exit {exit_code}"
    kind, package, where = "failed", None, None
    if frames:
        inner = frames[-1]
        package = owner(inner["path"])
        where = f"{_short(inner['path'])}:{inner['line']} in {inner['func']}"
        kind = {"colbert_swap": "colbert_swap", "colbert-ai": "colbert-ai"}.get(package or "", "library")
    explain = lines[start:][-TAIL:]
    return EnvFailure(kind=kind, reason=reason, where=where, package=package, tail="\n".join(explain), **base)


def owner(path: str) -> Optional[str]:
    """The package a source file belongs to: colbert_swap, colbert-ai, or the site-packages folder's name.

    >>> owner("/w/colbert_swap/core/store/blobs.py"), owner("/v/lib/python3.11/site-packages/colbert/indexer.py")
    ('colbert_swap', 'colbert-ai')
    >>> owner("/v/lib/python3.11/site-packages/torch/nn/modules/module.py"), owner("/usr/lib/python3.11/json.py")
    ('torch', None)
    """
    parts = Path(path).parts
    if "colbert_swap" in parts:
        return "colbert_swap"
    if "site-packages" in parts and parts.index("site-packages") + 1 < len(parts):
        top = parts[parts.index("site-packages") + 1].removesuffix(".py")
        return "colbert-ai" if top == "colbert" else top
    return None


def _short(path: str) -> str:
    parts = Path(path).parts
    for anchor in ("colbert_swap", "site-packages"):
        if anchor in parts:
            i = parts.index(anchor) + (1 if anchor == "site-packages" else 0)
            return "/".join(parts[i:])
    return path


def _read(log: Path) -> str:
    try:
        return Path(log).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _last(lines: list[str]) -> Optional[str]:
    useful = [line.strip() for line in lines if line.strip() and not line.startswith(("$ ", "Set the environment "))]
    return useful[-1] if useful else None


def _tail(lines: list[str]) -> str:
    return "\n".join([line for line in lines if line.strip() and not line.startswith("$ ")][-TAIL:])
