"""Stable-rank optax monitor and gradient norms vs NumPy float64."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxspectra.monitors import grad_norms as gn
from jaxspectra.monitors import stable_rank as sr


def _np_srank(w):
    w = np.asarray(w, np.float64)
    s = np.linalg.svd(w, compute_uv=False)
    return (s**2).sum(-1) / s[..., 0] ** 2


def _params():
    k = jax.random.split(jax.random.PRNGKey(0), 3)
    return {"block_0": {"attn": {"o": {"kernel": jax.random.normal(k[0], (16, 8))}},
                        "mlp": {"fc": {"bias": jnp.ones(8)}}},
            "block_1": {"moe": {"up": {"kernel": jax.random.normal(k[1], (2, 8, 12))}}},
            "ln_f": {"scale": jnp.full((8,), 2.0)},
            "head": {"kernel": jax.random.normal(k[2], (8, 5))}}


@pytest.mark.parametrize("method,rtol", [("exact", 1e-5), ("power", 2e-2)])
def test_stable_rank_monitor_records_every_k(method, rtol):
    p = _params()
    tx = optax.chain(optax.sgd(0.1), sr.stable_rank_monitor(every=3, method=method, iters=60))
    s = tx.init(p)
    upd = jax.jit(tx.update)
    g = jax.tree.map(lambda x: 0.3 * jnp.sin(3.0 * x + 1.0), p)
    history = []
    for _ in range(4):
        got = optax.tree.get(s, "stable_rank")
        u, s = upd(g, s, p)
        history.append((int(optax.tree.get(s, "step")), p))
        p = optax.apply_updates(p, u)
    # records at counts 0 and 3; at counts 1, 2 the state keeps count 0's values
    assert [h[0] for h in history] == [0, 0, 0, 3]
    got = optax.tree.get(s, "stable_rank")
    rec = history[3][1]
    np.testing.assert_allclose(got["block_0"]["attn"]["o"]["kernel"],
                               _np_srank(rec["block_0"]["attn"]["o"]["kernel"]), rtol=rtol)
    np.testing.assert_allclose(got["block_1"]["moe"]["up"]["kernel"],
                               _np_srank(rec["block_1"]["moe"]["up"]["kernel"]), rtol=rtol)
    assert got["ln_f"]["scale"] is None and got["block_0"]["mlp"]["fc"]["bias"] is None


def test_stable_rank_monitor_bad_input():
    with pytest.raises(ValueError, match="method"):
        sr.stable_rank_monitor(method="svd")
    with pytest.raises(ValueError, match="every"):
        sr.stable_rank_monitor(every=0)


def test_grad_norms_vs_numpy():
    g = _params()
    m = jax.jit(gn.grad_norm_metrics)(g)
    leaves = {jax.tree_util.keystr(k): np.asarray(v, np.float64)
              for k, v in jax.tree_util.tree_flatten_with_path(g)[0]}
    sq = {k: (v * v).sum() for k, v in leaves.items()}
    np.testing.assert_allclose(m["grad_norm/global"], np.sqrt(sum(sq.values())), rtol=1e-6)
    want = {
        "attention": sq["['block_0']['attn']['o']['kernel']"],
        "mlp": sq["['block_1']['moe']['up']['kernel']"],
        "other_1d": sq["['block_0']['mlp']['fc']['bias']"],
        "norm": sq["['ln_f']['scale']"],
        "head": sq["['head']['kernel']"],
        "block_0": sq["['block_0']['attn']['o']['kernel']"] + sq["['block_0']['mlp']['fc']['bias']"],
        "block_1": sq["['block_1']['moe']['up']['kernel']"],
    }
    for k, v in want.items():
        np.testing.assert_allclose(m[f"grad_norm/{k}"], np.sqrt(v), rtol=1e-6, err_msg=k)
    # the optax form records the raw gradients it sees
    tx = optax.chain(gn.grad_norm_monitor(), optax.sgd(1.0))
    s = tx.init(g)
    _, s = tx.update(g, s, g)
    np.testing.assert_allclose(optax.tree.get(s, "norms")["grad_norm/global"],
                               m["grad_norm/global"], rtol=1e-6)


def test_grad_norm_step_hook_reads_the_steps_gradients():
    """Inside the trainer's step the hook sees that step's gradients (no second backward)."""
    from jaxspectra.train.state import Optimizer, TrainState
    from jaxspectra.train.step import make_train_step

    w = {"block_0": {"mlp": {"fc": {"kernel": jnp.arange(6.0).reshape(2, 3) / 10}}}}

    def loss_fn(params, x, y, rng):
        return jnp.mean((x @ params["block_0"]["mlp"]["fc"]["kernel"] - y) ** 2)

    x, y = jnp.ones((4, 2)), jnp.zeros((4, 3))
    mon = gn.GradNormMonitor(every=2)
    assert mon.due(4) and not mon.due(3)
    tx = optax.sgd(0.1)
    opt = Optimizer(tx, lambda s, t: jnp.float32(0.1), ())
    step = make_train_step(loss_fn, opt, hooks=(mon,))
    state = TrainState(jnp.zeros((), jnp.int32), w, tx.init(w), jax.random.PRNGKey(0))
    _, metrics, m, _ = jax.jit(step)(state, (x, y), (mon.init(w),))
    g = jax.grad(loss_fn)(w, x, y, None)["block_0"]["mlp"]["fc"]["kernel"]
    np.testing.assert_allclose(m["grad_norm/mlp"], np.linalg.norm(np.asarray(g)), rtol=1e-6)
    np.testing.assert_allclose(m["grad_norm/global"], metrics["grad_norm"], rtol=1e-6)
