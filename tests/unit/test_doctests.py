"""The examples in colbert_swap's docstrings run as doctests: an example that no longer holds fails here."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import colbert_swap

MODULES = sorted(m.name for m in pkgutil.walk_packages(colbert_swap.__path__, "colbert_swap.")
                 if not m.name.endswith("__main__"))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_hold(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} fail"


def test_there_are_examples_to_run():
    attempted = sum(doctest.testmod(importlib.import_module(n), verbose=False, report=False).attempted for n in MODULES)
    assert attempted >= 15
