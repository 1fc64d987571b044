"""The monitors' docstring examples run and hold."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize("name", ["spectral", "stable_rank", "heavy_tail", "grad_norms",
                                  "rotating"])
def test_docstring_examples(name):
    mod = importlib.import_module(f"jaxspectra.monitors.{name}")
    res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert res.attempted > 0 and res.failed == 0
