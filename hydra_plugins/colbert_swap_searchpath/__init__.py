"""Hydra search-path plugin: makes the repository's `experiments/` folder a config group.

    python -m colbert_swap +experiments=base_5k

The search path is `root/`, a folder that holds only a link to `experiments/`: adding the repository
itself would make every folder in it a config group (the store's `outputs/hydra/.../.hydra` folders too).
"""

from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

ROOT = Path(__file__).resolve().parent / "root"


class ColbertSwapSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        if (ROOT / "experiments").is_dir():
            search_path.append(provider="colbert_swap", path=f"file://{ROOT}")
