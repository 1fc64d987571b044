"""Fixtures of the trainer tests: a stand-in optimiser registry until ``jaxspectra.optim.registry``
exists (the trainer imports it lazily), tiny configs."""

from __future__ import annotations

import importlib.util
import sys
import types

import optax
import pytest

if importlib.util.find_spec("jaxspectra.optim.registry") is None:  # pragma: no cover - stand-in
    _reg = types.ModuleType("jaxspectra.optim.registry")

    def build_optimizer(name, learning_rate, *, params=None, total_steps=None, msign=None, **kw):
        makers = {"adamw": optax.adamw, "sgd": optax.sgd, "adam": optax.adam}
        if name not in makers:
            raise ValueError(f"unknown optimizer {name!r}; known: {sorted(makers)}")
        return makers[name](learning_rate, **kw)

    def prepare_params(name, params):
        return params

    _reg.build_optimizer = build_optimizer
    _reg.prepare_params = prepare_params
    sys.modules["jaxspectra.optim.registry"] = _reg


@pytest.fixture
def tiny():
    from _train_standins import ToyLM, tiny_model

    return tiny_model(), ToyLM()
