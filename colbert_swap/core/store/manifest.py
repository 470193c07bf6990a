"""Run manifests: one JSON file per run mapping each artifact to its blob, with where it came from."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from colbert_swap.core.store.blobs import BlobRef, atomic_write
from colbert_swap.core.store.origin import Origin


@dataclass
class ArtifactRecord:
    ref: BlobRef
    stage: str  # the node that produced it ("embs.0") or "inject:<run>" for an injected artifact
    inputs: dict[str, str] = field(default_factory=dict)  # input artifact -> blob hash
    seconds: float = 0.0
    env: str = ""  # the environment that computed it (provenance.env_id); "" in runs written before it was kept
    code: str | None = None  # the code hash of the stage that computed it (colbert_swap/core/code.py); None in runs
    # written before it was kept

    def to_json(self) -> dict:
        return {**self.ref.to_json(), "stage": self.stage, "inputs": self.inputs, "seconds": round(self.seconds, 4),
                "env": self.env, **({"code": self.code} if self.code is not None else {})}

    @classmethod
    def from_json(cls, d: dict) -> "ArtifactRecord":
        return cls(ref=BlobRef.from_json(d), stage=d["stage"], inputs=d.get("inputs", {}), seconds=d.get("seconds", 0.0),
                   env=d.get("env", ""), code=d.get("code"))


@dataclass
class RunManifest:
    label: str
    config: dict
    config_hash: str
    provenance: dict
    origin: Origin  # Capture(), Replay(target, source, ...), ...: colbert_swap/core/store/origin.py
    artifacts: dict[str, ArtifactRecord] = field(default_factory=dict)
    rng: dict[str, dict[str, str]] = field(default_factory=dict)  # node -> {"python": hash, "torch": hash}
    complete: bool = False
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    # env_id -> the provenance of every environment an artifact of this run was computed in
    environments: dict[str, dict] = field(default_factory=dict)
    # what the processes that computed this run had loaded at its end (colbert_swap/env/loaded.py snapshot():
    # packages, their shared libraries, cuda_initialized); None in runs written before it was kept
    loaded: dict | None = None
    # what the run computes: {"num_chunks": n, "phases": [...], "options": [...]} (colbert_swap/runs/execute.py
    # `Plan`), set once num_chunks is known; None in runs written before it was kept
    plan: dict | None = None
    # the content of what the run read besides its config: {"checkpoint": digest, "collection": digest}
    # (colbert_swap/colbert/resources.py `input_digests`): two runs of one config on two machines read the same
    # model only if these are equal; None in runs written before it was kept
    inputs: dict | None = None
    # the artifacts whose bytes the capture did not keep, only their hash (store.keep=index or a list): computed
    # again, and checked against the hash, when a comparison or replay reads them (colbert_swap/runs/recompute.py)
    hash_only: list[str] = field(default_factory=list)

    def __post_init__(self):
        if not isinstance(self.origin, Origin):  # as read from JSON
            self.origin = Origin.from_json(self.origin)

    def to_json(self, without: frozenset[str] = frozenset()) -> dict:
        return {
            "label": self.label, "created": self.created, "complete": self.complete,
            "config_hash": self.config_hash, "config": self.config, "provenance": self.provenance,
            "origin": self.origin.to_json(),
            "artifacts": {k: v.to_json() for k, v in self.artifacts.items() if k not in without},
            "rng": self.rng, "environments": self.environments,
            **({"loaded": self.loaded} if self.loaded is not None else {}),
            **({"plan": self.plan} if self.plan is not None else {}),
            **({"inputs": self.inputs} if self.inputs is not None else {}),
            **({"hash_only": sorted(set(self.hash_only) - without)} if set(self.hash_only) - without else {}),
        }

    @classmethod
    def from_json(cls, d: dict) -> "RunManifest":
        return cls(label=d["label"], config=d["config"], config_hash=d["config_hash"], provenance=d["provenance"],
                   origin=d["origin"], artifacts={k: ArtifactRecord.from_json(v) for k, v in d["artifacts"].items()},
                   rng=d.get("rng", {}), complete=d.get("complete", False), created=d.get("created", ""),
                   environments=d.get("environments", {}), loaded=d.get("loaded"), plan=d.get("plan"),
                   inputs=d.get("inputs"), hash_only=list(d.get("hash_only") or []))

    @property
    def env(self) -> str:
        """The environment this run's own stages ran in (its provenance)."""
        from colbert_swap.env.provenance import env_id

        return env_id(self.provenance)

    def computed_in(self, name: str) -> str:
        """The environment that computed artifact `name` (the run's own for records older than `env`)."""
        return self.artifacts[name].env or self.env

    def adopt(self, name: str, record: "ArtifactRecord", origin: "RunManifest") -> None:
        """Take `record` from run `origin` (reused or injected), keeping where it was computed and by what code."""
        env = record.env or origin.env
        self.artifacts[name] = ArtifactRecord(record.ref, record.stage, dict(record.inputs), record.seconds, env,
                                              record.code)
        if env not in self.environments:
            self.environments[env] = origin.environments.get(env, origin.provenance)
        if name in origin.hash_only and name not in self.hash_only:  # its bytes are where they were: nowhere
            self.hash_only.append(name)

    def code_hashes(self) -> dict[str, str]:
        """Node -> the code hash of the stage that computed its artifacts (colbert_swap/core/code.py), for the nodes
        whose records keep one (not those injected, nor those of runs written before it was kept)."""
        return {r.stage: r.code for r in self.artifacts.values() if r.code is not None and ":" not in r.stage}

    def save(self, path: Path, without: frozenset[str] = frozenset()) -> None:
        """Write the manifest, leaving out the artifacts `without` (those whose files are not written yet)."""
        content = self.to_json(without)
        atomic_write(path, (json.dumps({**content, "digest": digest(content)}, indent=1) + "\n").encode())

    @classmethod
    def load(cls, path: Path) -> "RunManifest":
        """Refuses a manifest whose content no longer matches the digest colbert_swap wrote beside it:
        one edited by hand (an artifact pointed at another blob, a config value changed) is not evidence."""
        content = json.loads(path.read_text())
        if not isinstance(content, dict):
            raise ValueError("not a JSON object")
        written = content.pop("digest", None)
        if written is None:
            raise ValueError("it has no digest (not written by colbert_swap)")
        if written != digest(content):
            raise ValueError("its content does not match the digest colbert_swap wrote: it was edited after the "
                             "run wrote it; recapture the run (or restore the file)")
        return cls.from_json(content)


def digest(content: dict) -> str:
    """SHA-256 over the canonical JSON of a manifest's content (key order and whitespace do not count)."""
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
