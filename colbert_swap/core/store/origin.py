"""Where a run comes from, typed: one dataclass per kind of run, stored in its manifest as a dict with
`kind`. Readers use attributes (`replay.origin.injected`), never string keys.

    >>> Origin.from_json({"kind": "isolate", "source": "2.0.1", "stage": "embs"})
    Isolate(source='2.0.1', stage='embs')
    >>> Replay("b", "a", ("embs",), ("embs.0",)).to_json()["kind"]
    'replay'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import ClassVar


@dataclass(frozen=True)
class Origin:
    kind: ClassVar[str] = "?"

    def to_json(self) -> dict:
        return {"kind": self.kind, **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}}

    @staticmethod
    def from_json(d: dict) -> "Origin":
        cls = KINDS.get(d.get("kind")) if isinstance(d, dict) else None
        if cls is None:
            return Unknown(dict(d) if isinstance(d, dict) else {})
        names = {f.name for f in fields(cls)}
        try:
            return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in names})
        except TypeError:  # fields missing: written by another version
            return Unknown(dict(d))


@dataclass(frozen=True)
class Capture(Origin):
    """The whole DAG, run here (task=capture, task=env_capture)."""

    kind: ClassVar[str] = "capture"


@dataclass(frozen=True)
class Replay(Origin):
    """`target` with `injected` taken from `source`, and what is downstream recomputed here."""

    kind: ClassVar[str] = "replay"
    target: str
    source: str
    names: tuple[str, ...]  # as written (`embs` for every chunk)
    injected: tuple[str, ...]  # every artifact (`embs.0`, `embs.1`)
    target_created: str = ""
    source_created: str = ""
    reuse: bool = True
    env: str = ""  # the environment the replay computed in


@dataclass(frozen=True)
class Isolate(Origin):
    """One stage of `source`, run here on `source`'s own inputs."""

    kind: ClassVar[str] = "isolate"
    source: str
    stage: str


@dataclass(frozen=True)
class Drill(Origin):
    """Every module's output of `run`'s model on probe passages."""

    kind: ClassVar[str] = "drill"
    run: str
    probes: int
    bsizes: tuple[int, ...]
    env: str = ""  # the environment it was recorded in (provenance.env_id); "" in recordings made before it was kept


@dataclass(frozen=True)
class Ops(Origin):
    """The aten operations inside one module of `run`'s model, on the drill's probe batches."""

    kind: ClassVar[str] = "ops"
    run: str
    module: str
    probes: int
    bsizes: tuple[int, ...]
    context: dict = field(default_factory=dict, compare=False, hash=False)  # the kernel context it ran with
    env: str = ""  # the environment it was recorded in (provenance.env_id); "" in recordings made before it was kept


@dataclass(frozen=True)
class Search(Origin):
    """colbert-ai's Searcher on `index`'s index: every intermediate of `queries` at depth `k`."""

    kind: ClassVar[str] = "search"
    index: str
    k: int
    queries: tuple[str, ...]
    Q_from: str | None = None  # the run whose query embeddings were injected


@dataclass(frozen=True)
class Repair(Origin):
    """A scratch run (task=repair) in which stages of `source` are computed again to refill its lost files."""

    kind: ClassVar[str] = "repair"
    source: str


@dataclass(frozen=True)
class Unknown(Origin):
    """A manifest written by another version: kept as it was read."""

    raw: dict = field(default_factory=dict, hash=False)

    @property
    def kind(self) -> str:  # type: ignore[override]
        return str(self.raw.get("kind", "?"))

    def to_json(self) -> dict:
        return dict(self.raw)


KINDS = {cls.kind: cls for cls in (Capture, Replay, Isolate, Drill, Ops, Search, Repair)}
