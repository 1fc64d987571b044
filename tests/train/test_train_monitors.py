"""Monitor hooks: device monitors run (in the separately compiled hooked step) only on their
steps (``every`` or ``active(t)``) and are written on every step they ran; the optax spectral
monitor of ``monitors.spectral_every`` is read out of the optimiser state; host monitors get
host copies of the params one step late, without the trainer waiting on them.

Ground truths: the params the trainer actually had at each step, captured exactly by a device
monitor that returns them as arrays (``arrays/step_<t>.npz`` = params after ``t`` updates), and a
float64 NumPy SVD for the spectral statistics."""

from __future__ import annotations

import concurrent.futures as cf

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _train_standins import ToyLM, base_config

from jaxspectra.monitors.base import DeviceMonitor, HostMonitor
from jaxspectra.monitors.spectral import distribution, matrix_entries
from jaxspectra.train.config import ConfigError, from_dict, load_config
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


class PairMonitor:
    """Runs at t and t + 1 through ``active`` (its ``every`` alone would never run it)."""

    name = "pair"
    every = 0

    def active(self, t):
        return t in (4, 5)

    def init(self, params):
        return jnp.zeros((), jnp.int32)

    def __call__(self, params, batch, state):
        return {"pair/calls": state + 1}, state + 1


class ParamsMonitor:
    """Every step: the step's (pre-update) params as arrays, i.e. the params after t updates."""

    name = "params"
    every = 1

    def init(self, params):
        return ()

    def __call__(self, params, batch, state):
        leaves = jax.tree.leaves(params)
        return {f"p/{i}": x for i, x in enumerate(leaves)}, state


class ProgressLM(ToyLM):
    """ToyLM remembering the last training step whose batch the trainer asked for."""

    def __init__(self):
        super().__init__()
        self.requested = -1

    def batch(self, seed, step, batch_size, seq_len):
        self.requested = max(self.requested, step)
        return super().batch(seed, step, batch_size, seq_len)


class NormMonitor:
    name = "norm"

    def __init__(self, data: ProgressLM):
        self.data = data
        self.pool = cf.ThreadPoolExecutor(1)
        self.futures = []
        self.seen = {}
        self.requested_at_submit = {}

    def wants(self, step):
        return step in (2, STEPS - 1)

    def submit(self, step, params):
        assert all(isinstance(x, np.ndarray) for x in jax.tree.leaves(params))
        self.requested_at_submit[step] = self.data.requested
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


def _by_step(recs):
    out: dict[int, dict] = {}
    for r in recs:
        out.setdefault(r["step"], {}).update(r)
    return out


def test_device_host_and_optax_monitors(tmp_path):
    data = ProgressLM()
    dev, pair, host = CountingMonitor(), PairMonitor(), NormMonitor(data)
    assert isinstance(dev, DeviceMonitor) and isinstance(host, HostMonitor)
    cfg = from_dict(base_config(tmp_path / "r", steps=STEPS, run={"num_devices": 1},
                                data={"eval_batches": 0}, train={"log_every": 2},
                                monitors={"spectral_every": 2}))
    res = train(cfg, dataset=data, eval_dataset=ToyLM(),
                monitors=[ParamsMonitor(), dev, pair], host_monitors=[host])
    run = tmp_path / "r"
    recs = read_jsonl(run / "metrics.jsonl")
    by = _by_step(recs)
    # device monitors: on their steps only, written also off the log_every=2 grid (3, 5)
    calls = {r["step"]: r["count/calls"] for r in recs if "count/calls" in r}
    assert calls == {0: 1, 3: 2, 6: 3}  # state counts executions
    assert {r["step"]: r["pair/calls"] for r in recs if "pair/calls" in r} == {4: 1, 5: 2}
    assert dev.traces == 1  # traced once, into the hooked step; the plain step never sees it
    assert sorted(r["step"] for r in recs if "loss" in r) == [0, 2, 4, 6]  # log_every as before
    np.testing.assert_array_equal(np.load(run / "arrays" / "step_3.npz")["count__spectrum"],
                                  [0.0, 1.0, 2.0])
    # the exact params after t updates, t = 0..STEPS (the last from the final state)
    params = [[np.load(run / "arrays" / f"step_{t}.npz")[f"p__{i}"]
               for i in range(len(jax.tree.leaves(res.state.params)))] for t in range(STEPS)]
    params.append([np.asarray(x) for x in jax.tree.leaves(res.state.params)])
    sq = lambda leaves: sum(float(np.sum(np.asarray(x, np.float64) ** 2)) for x in leaves)
    for t in (0, 3, 6):
        assert by[t]["count/param_sq"] == pytest.approx(sq(params[t]), rel=1e-5)

    # host: the params after step t (= after t + 1 updates), handed over once step t + 1 had
    # been dispatched (its batch requested) — the last one after the loop
    assert host.requested_at_submit == {2: 3, STEPS - 1: STEPS - 1}
    for t in (2, STEPS - 1):
        for a, b in zip(jax.tree.leaves(host.seen[t]), params[t + 1]):
            np.testing.assert_array_equal(a, b)
        assert by[t]["norm/param_sq"] == pytest.approx(sq(params[t + 1]), rel=1e-5)

    # optax spectral_monitor (last in the chain): at t = 0, 2, 4, 6 the stats of the params
    # after t updates and the one-step ΔΣ to the next params, vs a float64 SVD
    treedef = jax.tree.structure(res.state.params)
    tree = lambda t: jax.tree.unflatten(treedef, params[t])
    rec_steps = sorted(r["step"] for r in recs if "spectral_optax/step" in r)
    assert rec_steps == [0, 2, 4, 6]
    n_checked = 0
    for t in rec_steps:
        assert by[t]["spectral_optax/step"] == t
        now = {p: np.asarray(x, np.float64) for p, _, x in matrix_entries(tree(t))}
        nxt = {p: np.asarray(x, np.float64) for p, _, x in matrix_entries(tree(t + 1))}
        for p, w in now.items():
            sv, sv1 = (np.linalg.svd(m, compute_uv=False) for m in (w, nxt[p]))
            assert by[t][f"{p}/sigma_max"] == pytest.approx(sv[0], rel=1e-5)
            assert by[t][f"{p}/stable_rank"] == pytest.approx(np.sum(sv ** 2) / sv[0] ** 2,
                                                              rel=1e-4)
            want = np.linalg.norm(distribution(sv1) - distribution(sv))
            assert by[t][f"{p}/delta_sigma"] == pytest.approx(want, abs=1e-5)
            n_checked += 1
    assert n_checked >= 4 * 4 and any(by[t][f"{p}/delta_sigma"] > 1e-3 for p in now)


def test_bad_monitor_config_fails_before_compute(tmp_path):
    base = base_config(tmp_path / "r", steps=5, run={"num_devices": 1})
    cases = [
        ({"spectrum": {"every": 5}}, r"unknown key.*monitors\.spectrum.*known keys.*attention"),
        ({"attention": {"every": 5, "probe": 2}},
         r"monitors\.attention\.probe.*known keys of \[monitors\.attention\].*probe_batch"),
        ({"attention": {"probe_batch": 2}}, r"not 'every'.*monitors\.attention\.every"),
        ({"jacobian": {"every": "often"}}, r"monitors\.jacobian\.every' expects int"),
        ({"spectral": {"every": 5, "arrays": 1}}, r"monitors\.spectral\.arrays' expects bool"),
        ({"spectral_every": 5, "spectral": {"every": 5}}, r"same spectral/\.\.\. keys"),
        ({"spectral_every": -1}, r"spectral_every'? must be ≥ 0"),
    ]
    for mon, match in cases:
        with pytest.raises(ConfigError, match=match):
            from_dict({**base, "monitors": mon})
    with pytest.raises(ConfigError, match=r"unknown key 'attn'.*known keys of \[monitors\]"):
        load_config(None, {"monitors.attn.every": "5"})
    # valid keys whose values only the monitors or the batch can judge: ConfigError from train()
    # before anything runs (no metrics file, no compiled step)
    for mon, match in [({"attention": {"every": 5, "probe_batch": 9}},
                        r"probe_batch=9 must be in 1\.\.data\.batch_size=8"),
                       ({"spectral": {"every": 1}}, r"\[monitors\].*every must be ≥ 2"),
                       ({"spectral": {"every": 5, "where": "gpu"}}, r"'host', 'device' or 'rotating'")]:
        cfg = from_dict({**base, "monitors": mon})
        with pytest.raises(ConfigError, match=match):
            train(cfg, dataset=ToyLM())
        assert not (tmp_path / "r" / "metrics.jsonl").exists()


def test_monitors_section_roundtrip_and_set():
    cfg = load_config(None, {"monitors.attention.every": "10",
                             "monitors.attention.probe_batch": "2",
                             "monitors.spectral_every": "5"})
    assert cfg.monitors.enabled() == {"attention": {"every": 10, "probe_batch": 2}}
    assert cfg.monitors.spectral_every == 5
    off = load_config(None, {"monitors.attention.every": "0"})
    assert off.monitors.enabled() == {}  # every = 0: off
    from jaxspectra.monitors.registry import OPTIONS
    from jaxspectra.train.config import MonitorsSection, dump_toml

    names = {f for f in MonitorsSection.__dataclass_fields__} - {"spectral_every"}
    assert names == set(OPTIONS)  # the section offers exactly the registry's monitors
    import tomllib

    assert from_dict(tomllib.loads(dump_toml(cfg))) == cfg
