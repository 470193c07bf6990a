"""Thread counts are part of a run's environment: recorded, in the environment id, set on purpose with
perturb.threads, worded first in a report, and never inherited from a launcher by an environment's commands.
Nothing here depends on whether another thread count changes numbers on this CPU."""

from __future__ import annotations

import pytest
import torch

from colbert_swap.env import threads
from colbert_swap.colbert.infra import perturbed
from colbert_swap.api import compose
from colbert_swap.config import config_hash
from colbert_swap.env.venvs import EnvSpec, command_env
from colbert_swap.errors import UserError
from colbert_swap.env.provenance import (ENV_VARS, changed_keys, env_id, environment, environment_differences,
                                     fingerprint)

OTHER = 1 if torch.get_num_threads() > 1 else 2  # a thread count that is not this process's


def _faiss_threads():
    import faiss

    return faiss.omp_get_max_threads()


def test_environment_records_every_thread_count():
    here = environment()
    t = here["threads"]
    assert t["torch"] == here["torch_threads"] == torch.get_num_threads()
    assert t["torch_interop"] == torch.get_num_interop_threads()
    assert t["faiss"] == _faiss_threads()
    assert t["cpu_count"] == __import__("os").cpu_count() and 1 <= t["affinity"] <= t["cpu_count"]
    assert {"user_api", "internal_api", "version", "num_threads", "architecture", "library"} <= set(t["blas"][0])
    assert {lib["user_api"] for lib in t["blas"]} >= {"blas", "openmp"}  # numpy's and faiss's BLAS, the OpenMPs
    assert here["torch_parallel"].get("backend")  # ATen's parallel backend, from torch.__config__.parallel_info
    assert {"OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE", "FAISS_OPT_LEVEL", "OMP_PROC_BIND"} <= set(ENV_VARS)


def test_limited_sets_every_count_and_restores_them():
    before = environment()["threads"]
    with threads.limited(OTHER):
        inside = threads.facts()
        assert inside["torch"] == inside["faiss"] == OTHER
        assert {lib["num_threads"] for lib in inside["blas"]} == {OTHER}
    after = threads.facts()
    assert (after["torch"], after["faiss"], after["mkl"]) == (before["torch"], before["faiss"], before["mkl"])
    assert [lib["num_threads"] for lib in after["blas"]] == [lib["num_threads"] for lib in before["blas"]]
    with perturbed({"threads": OTHER}):  # the engine's switches around every stage
        assert torch.get_num_threads() == _faiss_threads() == OTHER
    assert torch.get_num_threads() == before["torch"]


def test_thread_counts_are_part_of_the_environment_id():
    here, other = environment(), environment(threads=OTHER)
    assert other["threads"]["torch"] == other["threads"]["faiss"] == other["torch_threads"] == OTHER
    assert env_id(here) != env_id(other) and env_id(here) == env_id(environment())
    assert {"threads.torch", "threads.faiss", "threads.blas"} <= set(changed_keys(other, here))
    assert fingerprint(here)["threads"] == threads.counts(here["threads"])  # counts, not library names
    # a run recorded before `threads` keeps its id, and is not held against the counts it did not record
    old = {k: v for k, v in here.items() if k not in ("threads", "torch_parallel")}
    old["env"] = {**here["env"], "OPENBLAS_CORETYPE": "Haswell"}  # a variable it could not have recorded
    assert "threads" not in fingerprint(old) and "OPENBLAS_CORETYPE" not in fingerprint(old)["env"]
    assert changed_keys(old, here) == []


def test_the_sentence_names_the_thread_counts_first():
    a = environment(threads=OTHER)
    b = environment()
    text = environment_differences(a, b, ("t1", "default"))
    assert text.startswith(f"Runs t1 and default differ in their environment: thread counts (faiss/OpenMP {OTHER} vs "
                           f"{b['threads']['faiss']}, torch {OTHER} vs {b['threads']['torch']}")
    assert environment_differences(b, environment()) == ""
    b = {**b, "env": {k: v for k, v in b["env"].items() if k != "OMP_NUM_THREADS"}}  # whatever this process has
    versions = environment_differences({**b, "torch": "2.1.0", "env": {**b["env"], "OMP_NUM_THREADS": "1"}}, b)
    assert versions == "The runs differ in their environment: torch 2.1.0 vs 2.13.0+cpu; OMP_NUM_THREADS=1 vs unset. " \
        .replace("2.13.0+cpu", b["torch"])


def test_the_perturb_knob_composes_and_is_validated():
    assert compose("perturb.threads=1").perturb.threads == 1
    assert compose("perturb=one_thread").perturb.threads == 1
    assert compose().perturb.threads is None
    with pytest.raises(UserError, match=r"perturb.threads=0 is not allowed; expected null or a number >= 1"):
        compose("perturb.threads=0")
    with pytest.raises(Exception, match=r"perturb.threads"):
        compose("perturb.threads=many")
    with pytest.raises(UserError, match=r"Did you mean 'perturb.threads'"):
        compose("perturb.thread=1")


def test_runs_captured_before_the_knob_keep_their_config_hash():
    from colbert_swap.config import result_config

    result = result_config(compose())
    assert result["perturb"]["threads"] is None  # recorded as null: a run's own null wins over a command line
    old = {**result, "perturb": {k: v for k, v in result["perturb"].items() if k != "threads"}}
    assert config_hash(result) == config_hash(old)
    assert config_hash(result_config(compose("perturb.threads=1"))) != config_hash(result)


def test_a_replay_of_a_run_recorded_before_the_knob_does_not_take_it_from_the_command_line():
    from types import SimpleNamespace

    from colbert_swap.runs.replay import run_config

    cfg = compose("perturb.threads=1")
    old = SimpleNamespace(config={"perturb": {"attn": None}, "seed": 12345})
    assert run_config(cfg, old).perturb.threads is None
    assert run_config(cfg, SimpleNamespace(config={"perturb": {"threads": 3}})).perturb.threads == 3


def test_an_environments_commands_do_not_inherit_a_launchers_thread_limits(monkeypatch):
    for name in threads.WORKER_VARS:  # what a joblib (loky) worker of a Hydra sweep runs with
        monkeypatch.setenv(name, "1")
    for spec in (EnvSpec(name="here"), EnvSpec(name="venv", python="python3.11")):
        env = command_env(spec)
        assert not set(threads.WORKER_VARS) & set(env), spec.python
    own = EnvSpec(name="own", env={"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "2"})
    env = command_env(own)
    assert (env["OMP_NUM_THREADS"], env["MKL_NUM_THREADS"]) == ("3", "2") and "OPENBLAS_NUM_THREADS" not in env


def test_joblibs_worker_variables_are_dropped():
    """The names joblib sets in its workers (read from the installed joblib) are all in WORKER_VARS."""
    joblib = pytest.importorskip("joblib._parallel_backends")
    backend = joblib.ParallelBackendBase
    assert set(backend.MAX_NUM_THREADS_VARS) <= set(threads.WORKER_VARS)
    assert getattr(backend, "TBB_ENABLE_IPC_VAR", "ENABLE_IPC") in threads.WORKER_VARS


def test_environments_that_differ_only_in_their_thread_counts_are_told_apart():
    from colbert_swap.env.provenance import differs_only_in_threads

    here, other = environment(), environment(threads=OTHER)
    assert differs_only_in_threads(other, here) and not differs_only_in_threads(here, environment())
    assert differs_only_in_threads({**here, "env": {**here["env"], "OMP_NUM_THREADS": "1"}}, here)
    assert not differs_only_in_threads({**other, "torch": "2.1.0"}, here)
