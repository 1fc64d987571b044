"""Monitor hooks: device monitors run (in the separately compiled hooked step) only on their
steps; host monitors get host copies of the params after the steps they want."""

from __future__ import annotations

import concurrent.futures as cf

import jax
import jax.numpy as jnp
import numpy as np
from _train_standins import ToyLM, base_config

from jaxspectra.monitors.base import DeviceMonitor, HostMonitor
from jaxspectra.train.config import from_dict
from jaxspectra.train.loop import train
from jaxspectra.train.metrics import read_jsonl

STEPS = 7


class CountingMonitor:
    name = "count"
    every = 3

    def __init__(self):
        self.traces = 0

    def init(self, params):
        return jnp.zeros((), jnp.int32)

    def __call__(self, params, batch, state):
        self.traces += 1
        sq = sum(jnp.sum(x.astype(jnp.float32) ** 2) for x in jax.tree.leaves(params))
        return {"count/calls": state + 1, "count/param_sq": sq,
                "count/spectrum": jnp.arange(3.0)}, state + 1


class NormMonitor:
    name = "norm"

    def __init__(self):
        self.pool = cf.ThreadPoolExecutor(1)
        self.futures = []
        self.seen = {}

    def wants(self, step):
        return step in (2, STEPS - 1)

    def submit(self, step, params):
        assert all(isinstance(x, np.ndarray) for x in jax.tree.leaves(params))
        self.seen[step] = params
        f = self.pool.submit(lambda: sum(float(np.sum(x ** 2)) for x in jax.tree.leaves(params)))
        self.futures.append((step, f))

    def poll(self):
        done = [(s, {"norm/param_sq": f.result()}) for s, f in self.futures if f.done()]
        self.futures = [(s, f) for s, f in self.futures if not f.done()]
        return done

    def close(self):
        out = [(s, {"norm/param_sq": f.result()}) for s, f in self.futures]
        self.futures = []
        self.pool.shutdown()
        return out


def test_device_and_host_monitors(tmp_path):
    dev, host = CountingMonitor(), NormMonitor()
    assert isinstance(dev, DeviceMonitor) and isinstance(host, HostMonitor)
    cfg = from_dict(base_config(tmp_path / "r", steps=STEPS, run={"num_devices": 1},
                                data={"eval_batches": 0}))
    res = train(cfg, dataset=ToyLM(), eval_dataset=ToyLM(), monitors=[dev],
                host_monitors=[host])
    recs = read_jsonl(tmp_path / "r" / "metrics.jsonl")
    calls = {r["step"]: r["count/calls"] for r in recs if "count/calls" in r}
    assert calls == {0: 1, 3: 2, 6: 3}  # ran on steps 0, 3, 6 only (state counts executions)
    assert dev.traces == 1  # traced once, into the hooked step; the plain step never sees it
    spectra = np.load(tmp_path / "r" / "arrays" / "step_3.npz")
    np.testing.assert_array_equal(spectra["count__spectrum"], [0.0, 1.0, 2.0])
    host_recs = {r["step"]: r["norm/param_sq"] for r in recs if "norm/param_sq" in r}
    assert sorted(host_recs) == [2, STEPS - 1]
    # the copy handed over after the last step is the final params
    final = sum(float(np.sum(np.asarray(x, np.float64) ** 2))
                for x in jax.tree.leaves(res.state.params))
    np.testing.assert_allclose(host_recs[STEPS - 1], final, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(host.seen[STEPS - 1]), jax.tree.leaves(res.state.params)):
        np.testing.assert_array_equal(a, np.asarray(b))
