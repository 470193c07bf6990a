"""Every invocation writes its report in a folder of its own, even two started in the same second."""

from __future__ import annotations

from omegaconf import OmegaConf

from colbert_swap.config import CONF
from colbert_swap.proof.report.proof import out_dir


def test_two_library_calls_in_one_second_get_two_folders(tmp_path):
    cfg = OmegaConf.create({"out_dir": None, "store": {"root": str(tmp_path)}})
    first, second = out_dir(cfg, "compare"), out_dir(cfg, "compare")
    assert first != second and first.is_dir() and second.is_dir()
    assert second.name == f"{first.name}-2"


def test_hydra_output_folders_are_unique_below_the_second():
    hydra = OmegaConf.to_container(OmegaConf.load(CONF / "config.yaml"), resolve=False)["hydra"]
    assert "%H-%M-%S-%f" in hydra["run"]["dir"] and "%H-%M-%S-%f" in hydra["sweep"]["dir"]  # microseconds
