"""Monitors run unchanged under sharded params (8 simulated devices) and inside the trainer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxspectra.models import get_model
from jaxspectra.monitors import (
    AttentionMonitor,
    HostSpectralMonitor,
    SpectralMonitor,
    grad_norm_metrics,
    heavy_tail_metrics,
    spectral_metrics,
    stable_rank_monitor,
)
from jaxspectra.monitors.jacobian import jacobian_metrics
from jaxspectra.train.config import from_dict
from jaxspectra.train.loop import train
from jaxspectra.train.metrics import read_jsonl


def _shard(params, mesh):
    def put(x):
        axes = [i for i, n in enumerate(x.shape) if n % 8 == 0]
        spec = [None] * x.ndim
        if axes:
            spec[axes[0]] = "data"
        return jax.device_put(x, NamedSharding(mesh, PartitionSpec(*spec)))

    return jax.tree.map(put, params)


def test_monitors_under_sharded_params():
    if jax.device_count() < 8:
        pytest.skip("needs the 8 simulated devices of tests/conftest.py")
    mesh = Mesh(np.asarray(jax.devices()[:8]), ("data",))
    model, cfg = get_model("gpt-tiny")
    tokens = jax.random.randint(jax.random.PRNGKey(0), (8, 8), 0, cfg.vocab_size)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), tokens)
    sharded = _shard(params, mesh)
    assert any(len(x.sharding.device_set) == 8 and not x.sharding.is_fully_replicated
               for x in jax.tree.leaves(sharded))

    def all_metrics(p):
        m = dict(spectral_metrics(p, arrays=False))
        m.update(heavy_tail_metrics(p, min_tail=4))
        m.update(grad_norm_metrics(p))
        m.update(jacobian_metrics(model, p, tokens[:1, :4], cfg.n_layers, iters=3))
        m.update(AttentionMonitor(model, tokens, every=1)(p, None, ())[0])
        return m

    f = jax.jit(all_metrics)
    a, b = f(params), f(sharded)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(np.asarray(b[k]), np.asarray(a[k]), rtol=2e-4, atol=1e-6,
                                   err_msg=k)
    tx = optax.chain(optax.sgd(0.1), stable_rank_monitor(every=1, method="exact"))
    upd = jax.jit(tx.update)
    _, s1 = upd(params, tx.init(params), params)
    _, s2 = upd(sharded, tx.init(sharded), sharded)
    for x, y in zip(jax.tree.leaves(optax.tree.get(s1, "stable_rank")),
                    jax.tree.leaves(optax.tree.get(s2, "stable_rank"))):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-4)


def test_trainer_runs_device_and_host_monitors(tmp_path):
    """FSDP-sharded training on 8 devices with a device spectral + attention monitor and the
    host spectral monitor: records land in metrics.jsonl / arrays at the expected steps and the
    host ΔΣ is the one-step value between the copies it was handed."""
    if jax.device_count() < 8:
        pytest.skip("needs the 8 simulated devices of tests/conftest.py")
    model = get_model("gpt-tiny", n_layers=1, vocab_size=17, max_seq_len=8)
    cfg = from_dict({
        "run": {"dir": str(tmp_path / "run"), "seed": 0, "num_devices": 8},
        "model": {"name": "gpt-tiny"},
        "data": {"source": "synthetic", "batch_size": 8, "seq_len": 8, "eval_batches": 0},
        "optim": {"name": "adamw", "learning_rate": 1e-2},
        "train": {"steps": 6, "progress": False, "log_every": 1, "sharding": "fsdp",
                  "fsdp_min_size": 16},
        "checkpoint": {"every": 0, "keep": 0},
    })
    probe = jnp.zeros((1, 8), jnp.int32)
    seen = {}

    class Spy(HostSpectralMonitor):
        def submit(self, step, params):
            seen[step] = params
            super().submit(step, params)

    res = train(cfg, model=model,
                monitors=[SpectralMonitor(every=3), AttentionMonitor(model[0], probe, every=3)],
                host_monitors=[Spy(every=4)])
    recs = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    by_step: dict[int, dict] = {}
    for r in recs:
        by_step.setdefault(r["step"], {}).update(r)
    key = "spectral/attention/block_0/q/stable_rank"
    assert key in by_step[0] and key in by_step[3] and key not in by_step[1]
    assert "attention/log10_kappa" in by_step[3]
    assert sorted(seen) == [0, 1, 4, 5]
    from jaxspectra.monitors.spectral import delta_sigma, matrix_stats_np

    o = lambda p: np.asarray(p["params"]["block_0"]["attn"]["o"]["kernel"])
    want = delta_sigma(matrix_stats_np(o(seen[0]))["sv"].astype(np.float64),
                       matrix_stats_np(o(seen[1]))["sv"].astype(np.float64))
    assert by_step[0]["spectral/attention/block_0/o/delta_sigma"] == pytest.approx(float(want))
    assert "spectral/attention/block_0/o/delta_sigma" in by_step[4]
    arrays = np.load(tmp_path / "run" / "arrays" / "step_3.npz")
    assert "spectral__attention__block_0__q__sv" in arrays.files
    assert int(res.state.step) == 6
