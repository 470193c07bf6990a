"""Environment specs: loading, validation, the cache key, and the overrides that carry the shared config."""

from __future__ import annotations

import os

import pytest

from colbert_swap.api import compose
from colbert_swap.env.venvs import available, load_spec
from colbert_swap.errors import UserError
from colbert_swap.study.matrix import config_overrides


def test_every_shipped_spec_loads():
    names = available()
    assert {"here", "here-eager", "torch-2.0.1", "torch-2.1.0"} <= set(names)
    for name in names:
        spec = load_spec(name)
        assert spec.name == name and len(spec.digest) == 12


def test_unknown_spec_suggests_close_names():
    with pytest.raises(UserError, match=r"'torch-2.0.2' not found.*Did you mean [^?]*'torch-2.0.1'"):
        load_spec("torch-2.0.2")


def test_a_spec_with_a_wrong_type_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nrequirements: torch==2.0.1\n")  # a string, not a list
    with pytest.raises(UserError, match=r"bad.yaml"):
        load_spec(str(path))


def test_the_cache_key_follows_requirements_not_env_vars(tmp_path):
    base = "name: x\npython: python3.11\nrequirements: [torch==2.0.1]\n"
    (tmp_path / "a.yaml").write_text(base)
    (tmp_path / "b.yaml").write_text(base + "env: {ATEN_CPU_CAPABILITY: avx2}\n")
    (tmp_path / "c.yaml").write_text(base.replace("2.0.1", "2.1.0"))
    a, b, c = (load_spec(str(tmp_path / f"{n}.yaml")) for n in "abc")
    assert a.digest == b.digest != c.digest


def test_config_overrides_rebuild_the_same_config(tmp_path):
    cfg = compose("collection=tsv", f"collection.path='{tmp_path}/it\\'s a [file].tsv'", "index.nbits=4", "seed=7")
    assert cfg.collection.path.endswith("it's a [file].tsv")
    again = compose(*config_overrides(cfg))
    for group in ("model", "collection", "index"):
        assert again[group] == cfg[group]
    assert again.seed == 7


# --- installers, extension folders, freezes ---------------------------------------------------------------

import doctest  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from colbert_swap.env import specs as env_specs
from colbert_swap.env import venvs as environments  # noqa: E402
from colbert_swap.env.venvs import (EnvSpec, build_env, build_steps, command_env, extensions_dir,  # noqa: E402
                                       frozen, installer_for, package_differences, parse_freeze, venv_dir)


def test_the_docstring_examples_run():
    for module in (environments, env_specs):
        assert doctest.testmod(module).failed == 0


def test_the_installer_follows_the_spec_then_the_variable_then_what_is_installed(monkeypatch):
    monkeypatch.delenv("COLBERT_SWAP_INSTALLER", raising=False)
    monkeypatch.setattr(environments, "uv_binary", lambda: "/bin/uv")
    assert installer_for(EnvSpec()) == "uv" and installer_for(EnvSpec(installer="pip")) == "pip"
    monkeypatch.setenv("COLBERT_SWAP_INSTALLER", "pip")
    assert installer_for(EnvSpec()) == "pip" and installer_for(EnvSpec(installer="uv")) == "uv"
    monkeypatch.delenv("COLBERT_SWAP_INSTALLER")
    monkeypatch.setattr(environments, "uv_binary", lambda: None)
    assert installer_for(EnvSpec()) == "pip"
    with pytest.raises(UserError, match=r"'x' asks for uv, which is not installed"):
        installer_for(EnvSpec(name="x", installer="uv"))
    monkeypatch.setenv("COLBERT_SWAP_INSTALLER", "conda")
    with pytest.raises(UserError, match=r"COLBERT_SWAP_INSTALLER='conda'"):
        installer_for(EnvSpec())


def test_a_bad_installer_in_a_spec_names_the_file(tmp_path):
    (tmp_path / "x.yaml").write_text("python: python3.11\ninstaller: conda\n")
    with pytest.raises(UserError, match=r"x.yaml: installer 'conda'"):
        load_spec(str(tmp_path / "x.yaml"))


def test_uv_and_pip_venvs_live_apart_and_uv_sees_pips_local_wheels(tmp_path, monkeypatch):
    monkeypatch.setattr(environments, "uv_binary", lambda: "/bin/uv")
    monkeypatch.setattr(environments, "local_index_args", lambda: ["--find-links", "/opt/wheels"])
    spec = EnvSpec(name="t", python=sys.executable, requirements=["torch==2.13.0"])
    uv, pip = EnvSpec(**{**spec.__dict__, "installer": "uv"}), EnvSpec(**{**spec.__dict__, "installer": "pip"})
    assert venv_dir(uv, tmp_path).name == f"t-{spec.digest}-uv" and venv_dir(pip, tmp_path).name == f"t-{spec.digest}"
    steps = [args for args, _ in build_steps(uv, tmp_path / "v", "uv")]
    assert steps[0][:2] == ["/bin/uv", "venv"]
    assert steps[1][:3] == ["/bin/uv", "pip", "install"] and "/opt/wheels" in steps[1]
    assert steps[1].index("torch==2.13.0") < steps[1].index("colbert-ai==0.2.22")  # the spec's pins first
    steps = [args for args, _ in build_steps(pip, tmp_path / "v", "pip")]
    assert steps[0][1:3] == ["-m", "venv"] and steps[1][1:4] == ["-m", "pip", "install"]
    assert "/opt/wheels" not in steps[1]  # pip reads its own config


def test_builds_lift_the_machines_pip_constraint_and_keep_uvs_cache_beside_the_venvs(tmp_path, monkeypatch):
    monkeypatch.delenv("UV_CACHE_DIR", raising=False)
    env = build_env(tmp_path)
    assert env["PIP_CONSTRAINT"] == os.devnull and env["UV_CACHE_DIR"] == str(tmp_path.resolve() / "uv-cache")
    assert "PYTHONPATH" not in env


def _fake_venv(cache: Path, name: str, torch: str | None, python: str = "3.11.7") -> str:
    folder = cache / name
    (folder / "bin").mkdir(parents=True)
    (folder / "pyvenv.cfg").write_text(f"home = /usr/bin\nversion_info = {python}\n")
    if torch:
        (folder / "lib" / "python3.11" / "site-packages" / f"torch-{torch}.dist-info").mkdir(parents=True)
    return str(folder / "bin" / "python")


def test_each_environment_gets_its_own_extension_folder(tmp_path):
    spec = EnvSpec(name="v", python="python3.11")
    a = _fake_venv(tmp_path, "a", "2.1.0+cu121")
    b = _fake_venv(tmp_path, "b", "2.13.0+cpu")
    c = _fake_venv(tmp_path, "c", "2.1.0+cu121", python="3.12.1")
    d = _fake_venv(tmp_path, "d", "2.1.0+cu121")  # the same torch as a, another venv (its own include paths)
    assert extensions_dir(spec, a) == tmp_path / "torch_extensions" / "torch-2.1.0+cu121-py3.11" / "a"
    assert len({extensions_dir(spec, p) for p in (a, b, c, d)}) == 4
    assert extensions_dir(spec, a) == extensions_dir(spec, a)  # stable: built once, found again
    assert command_env(spec, a)["TORCH_EXTENSIONS_DIR"] == str(tmp_path / "torch_extensions/torch-2.1.0+cu121-py3.11/a")
    assert (tmp_path / "a" / "environment.json").exists()  # read from its files once, kept in the venv
    with_own = EnvSpec(name="w", python="python3.11", env={"TORCH_EXTENSIONS_DIR": "/mine"})
    assert command_env(with_own, a)["TORCH_EXTENSIONS_DIR"] == "/mine"  # a spec's own setting wins


def test_this_interpreter_is_keyed_by_its_own_torch_and_python(monkeypatch, tmp_path):
    import torch

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))  # the user's folder is the root of ours
    env = command_env(load_spec("here"))
    assert Path(env["TORCH_EXTENSIONS_DIR"]).parent == tmp_path
    folder = Path(env["TORCH_EXTENSIONS_DIR"])
    assert folder.name == f"torch-{torch.__version__}-py{sys.version_info.major}.{sys.version_info.minor}"
    assert command_env(load_spec("cpu-avx2"))["TORCH_EXTENSIONS_DIR"] == str(folder)  # same torch, same build


def test_freezes_are_normalized_and_compared(tmp_path, monkeypatch):
    spec = EnvSpec(name="f", python="python3.11", installer="pip")
    folder = venv_dir(spec, tmp_path)
    folder.mkdir(parents=True)
    (folder / "freeze.txt").write_text("Faiss_CPU==1.7.4\nnumpy==1.26.4\ntorch==2.0.1\n"
                                       "-e /work/wt19\ncolbert-swap==0.1.0\nruamel.yaml==0.18.6\n")
    old = frozen(spec, tmp_path)
    assert old == {"faiss-cpu": "1.7.4", "numpy": "1.26.4", "ruamel-yaml": "0.18.6", "torch": "2.0.1"}
    new = parse_freeze(["faiss-cpu==1.7.4", "NumPy==1.26.4", "torch==2.1.0", "triton==2.1.0", "ruamel_yaml==0.18.6"])
    assert package_differences(old, new) == [("torch", "2.0.1", "2.1.0"), ("triton", None, "2.1.0")]
    assert package_differences(new, new) == []
    with pytest.raises(UserError, match=r"'g' has no freeze.txt"):
        frozen(EnvSpec(name="g", python="python3.11", installer="pip"), tmp_path)


def test_this_interpreters_freeze_lists_its_torch():
    import torch

    assert frozen(load_spec("here"), Path("/nonexistent"))["torch"] == torch.__version__


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_a_build_that_fails_names_the_spec_and_quotes_the_resolver(tmp_path, installer):
    if installer == "uv" and not environments.uv_binary():
        pytest.skip("uv is not installed")
    spec = EnvSpec(name="broken", python=sys.executable, installer=installer, pip_args=["--no-index"],
                   requirements=["colbert-swap-no-such-package==9.9"])
    with pytest.raises(UserError) as caught:
        environments.ensure(spec, tmp_path)
    message = str(caught.value)
    assert message.startswith("environment 'broken': installing its requirements failed: ")
    assert caught.value.failure.kind == "install" and caught.value.failure.exit_code != 0
    assert "fix its requirements" in message
    assert "colbert-swap-no-such-package" in message  # the resolver's own words, quoted from the log
    assert not (venv_dir(spec, tmp_path) / ".ready").exists()


def test_excluded_packages_are_overridden_away_by_uv_and_removed_by_pip(tmp_path, monkeypatch):
    monkeypatch.setattr(environments, "uv_binary", lambda: "/bin/uv")
    monkeypatch.setattr(environments, "local_index_args", lambda: [])
    spec = EnvSpec(name="t", python=sys.executable, requirements=["torch==2.5.1"], exclude=["triton"])
    assert spec.digest != EnvSpec(name="t", python=sys.executable, requirements=["torch==2.5.1"]).digest
    folder = tmp_path / "t-uv"
    install = build_steps(spec, folder, "uv")[1][0]
    assert install[install.index("--overrides") + 1] == str(environments.excluded(folder))
    steps = build_steps(spec, tmp_path / "t", "pip")
    assert [what for _, what in steps][2] == "removing what it excludes" and steps[2][0][-2:] == ["-y", "triton"]
    assert "--overrides" not in build_steps(EnvSpec(name="u", python=sys.executable), folder, "uv")[1][0]
    assert load_spec("torch-2.5.1").exclude == ["triton"]  # the study's table leaves triton out (CPU only)


def test_processes_that_need_one_venv_build_it_once(tmp_path, monkeypatch):
    import threading
    import time

    builds = []

    def slow_build(spec, folder, cache, progress):
        builds.append(folder)
        time.sleep(0.5)
        folder.mkdir(parents=True)
        (folder / ".ready").write_text("{}")

    monkeypatch.setattr(environments, "_build", slow_build)
    spec = EnvSpec(name="once", python=sys.executable, installer="pip")
    pythons = []
    threads = [threading.Thread(target=lambda: pythons.append(environments.ensure(spec, tmp_path))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(builds) == 1 and pythons == [str(venv_dir(spec, tmp_path) / "bin" / "python")] * 3


def test_a_spec_that_pins_colbert_ai_wins_over_the_runtime_pin_and_others_keep_their_digest(tmp_path, monkeypatch):
    monkeypatch.setattr(environments, "uv_binary", lambda: "/bin/uv")
    monkeypatch.setattr(environments, "local_index_args", lambda: [])
    old = EnvSpec(name="t", python="python3.11", requirements=["torch==2.13.0", "scipy==1.13.1", "safetensors==0.4.2"])
    # the digest the spec had before runtime_for: every RUNTIME entry, as it was always hashed
    import hashlib
    import json

    keyed = {"python": old.python, "requirements": old.requirements, "pip_args": old.pip_args}
    before = hashlib.sha256(json.dumps([keyed, environments.RUNTIME, environments.NO_DEPS], sort_keys=True)
                            .encode()).hexdigest()[:12]
    assert old.digest == before and environments.runtime_for(old) == environments.RUNTIME
    pinned = EnvSpec(name="c", python="python3.11", requirements=["torch==2.13.0", "colbert-ai==0.2.20"])
    install = build_steps(pinned, tmp_path / "c", "uv")[1][0]
    assert "colbert-ai==0.2.20" in install and "colbert-ai==0.2.22" not in install
    assert "hydra-core>=1.3" in install and pinned.digest != EnvSpec(**{**pinned.__dict__, "requirements": ["torch==2.13.0"]}).digest
    assert load_spec("colbert-ai-0.2.21").requirements.count("colbert-ai==0.2.21") == 1


def test_a_pyenv_shim_that_does_not_run_gives_way_to_pyenvs_own_binary(tmp_path, monkeypatch):
    shim, real = tmp_path / "shims" / "python3.42", tmp_path / "pyenv" / "versions" / "3.42.1" / "bin" / "python3.42"
    for path, body in ((shim, "#!/bin/sh\necho 'pyenv: python3.42: command not found' >&2\nexit 127\n"),
                       (real, f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")):
        path.parent.mkdir(parents=True)
        path.write_text(body)
        path.chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "pyenv"))
    spec = EnvSpec(name="p", python="python3.42")
    assert environments.interpreters("python3.42") == [str(shim), str(real)]
    assert environments._interpreter(spec) == str(real)
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "none"))
    with pytest.raises(UserError, match=r"interpreter 'python3.42' not found"):
        environments._interpreter(spec)


def test_the_capture_refuses_a_colbert_release_whose_indexing_code_was_not_diffed(monkeypatch):
    import types

    from colbert_swap.colbert import infra

    assert infra.colbert_release() in infra.MIRRORED  # the installed one (0.2.22) captures as before
    monkeypatch.setattr(infra, "colbert_release", lambda: "0.2.19")
    with pytest.raises(UserError, match=r"colbert-ai 0.2.19 is installed.*mirrors colbert-ai 0.2.22.*MIRRORED"):
        infra.check_release(types.SimpleNamespace(pool_factor=1))
    monkeypatch.setattr(infra, "colbert_release", lambda: None)
    with pytest.raises(UserError, match=r"no version"):
        infra.check_release()
    monkeypatch.setattr(infra, "colbert_release", lambda: "0.2.21")
    assert infra.check_release(types.SimpleNamespace(pool_factor=1)) == []
    with pytest.raises(UserError, match=r"colbert-ai 0.2.21 differs.*pool_embeddings_hierarchical.*showprogress"):
        infra.check_release(types.SimpleNamespace(pool_factor=2))
    monkeypatch.setattr(infra, "colbert_release", lambda: "0.2.20")
    with pytest.warns(UserWarning, match=r"DocTokenizer.tensorize"):
        followed = infra.check_release(types.SimpleNamespace(pool_factor=1))
    assert len(followed) == 1 and "tokens are 0.2.20's" in followed[0]


def test_colbert_config_runs_the_release_check(monkeypatch, tmp_path):
    from colbert_swap.colbert import infra

    monkeypatch.setattr(infra, "colbert_release", lambda: "9.9.9")
    cfg = compose(f"store.root={tmp_path}")
    with pytest.raises(UserError, match=r"colbert-ai 9.9.9 is installed"):
        infra.colbert_config(str(tmp_path / "no-checkpoint"), cfg.index, str(tmp_path / "c.tsv"), str(tmp_path))
