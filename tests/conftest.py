"""Shared fixtures: one tiny store per test session (seeded tiny BERT + synthetic collection)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from colbert_swap.api import compose  # noqa: E402

# Small but real: several hundred k-means partitions, a real heldout split, every stage exercised.
TINY = ["collection.num_passages=120", "index.doc_maxlen=64", "index.index_bsize=16"]


def make_cfg(*overrides: str):
    return compose(*overrides)


@pytest.fixture(scope="session")
def store_root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="session")
def tiny_cfg(store_root):
    def build(*overrides: str):
        return make_cfg(f"store.root={store_root}", *TINY, *overrides)

    return build


def quiet_progress(_message: str) -> None:
    pass
