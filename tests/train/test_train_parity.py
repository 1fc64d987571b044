"""1 device vs 8 simulated CPU devices: same losses for data-parallel and FSDP."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from _train_standins import ToyLM, base_config

from jaxspectra.train.config import from_dict
from jaxspectra.train.loop import train

STEPS = 6


def _run(tmp_path, n, mode, accum=1):
    d = base_config(tmp_path / f"{mode}_{n}_{accum}", steps=STEPS, run={"num_devices": n},
                    train={"sharding": mode, "fsdp_min_size": 64, "grad_accum": accum},
                    data={"batch_size": 16, "eval_batches": 0})
    return train(from_dict(d), dataset=ToyLM(), eval_dataset=ToyLM(offset=77))


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("single"), 1, "replicated")


@pytest.mark.parametrize("mode, accum", [("replicated", 1), ("fsdp", 2)])
def test_eight_devices_match_one(single, tmp_path, n_devices, mode, accum):
    if n_devices < 8:
        pytest.skip("needs the 8 simulated devices of tests/conftest.py")
    multi = _run(tmp_path, 8, mode, accum)
    l1 = np.array([x for _, x in single.losses])
    l8 = np.array([x for _, x in multi.losses])
    # the same maths; only the reduction order of the batch mean differs across devices
    np.testing.assert_allclose(l8, l1, rtol=2e-5, atol=2e-6)
    for a, b in zip(jax.tree.leaves(single.state.params), jax.tree.leaves(multi.state.params)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-5)
    specs = [x.sharding.spec for x in jax.tree.leaves(multi.state.params)]
    if mode == "fsdp":  # really sharded: some leaf is split over the data axis
        assert any("data" in tuple(s) for s in specs)
        mu = [x.sharding.spec for x in jax.tree.leaves(multi.state.opt_state) if x.ndim >= 2]
        assert any("data" in tuple(s) for s in mu)
    else:
        assert all(tuple(s) == () or all(p is None for p in s) for s in specs)
