"""Hydra search-path plugin: makes the repository's `experiments/` folder a config group.

    python -m colbert_swap +experiments=base_5k
"""

from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

REPO = Path(__file__).resolve().parents[2]


class ColbertSwapSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        if (REPO / "experiments").is_dir():
            search_path.append(provider="colbert_swap", path=f"file://{REPO}")
