"""The step's arithmetic against hand-written updates: SGD, clipping, accumulation, μP scales,
per-step keys."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspectra.train.config import ConfigError, OptimSection
from jaxspectra.train.state import TrainState, optimizer_from_section
from jaxspectra.train.step import make_train_step

RNG = np.random.default_rng(0)
X = jnp.asarray(RNG.standard_normal((8, 5)), jnp.float32)
Y = jnp.asarray(RNG.standard_normal((8, 3)), jnp.float32)
P = {"params": {"block_0": {"mlp": {"fc": {"kernel": jnp.asarray(
    RNG.standard_normal((5, 3)), jnp.float32)}}}, "embed": {"embedding": jnp.ones((3, 3), jnp.float32)}}}


def loss_fn(params, x, y, rng):
    w = params["params"]["block_0"]["mlp"]["fc"]["kernel"]
    e = params["params"]["embed"]["embedding"]
    return jnp.mean((x @ w @ e - y) ** 2)


def _step(clip=0.0, accum=1, mults=None, lr=0.1):
    cfg = OptimSection(name="sgd", learning_rate=lr, clip_norm=clip,
                       options={"momentum": 0.0})
    opt = optimizer_from_section(cfg, 10, P, mults)
    state = TrainState(jnp.int32(0), P, opt.tx.init(P), jax.random.PRNGKey(0))
    step = jax.jit(make_train_step(loss_fn, opt, accum))
    new, metrics, _, _ = step(state, (X, Y))
    return new, metrics


def _sub(a, b, s=1.0):
    return jax.tree.map(lambda x, y: x - s * y, a, b)


def test_sgd_update_is_minus_lr_grad():
    new, m = _step()
    g = jax.grad(loss_fn)(P, X, Y, None)
    expect = _sub(P, g, 0.1)
    for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(expect)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(m["loss"], loss_fn(P, X, Y, None), rtol=1e-6)
    gn = np.sqrt(sum(float(jnp.sum(x ** 2)) for x in jax.tree.leaves(g)))
    np.testing.assert_allclose(m["grad_norm"], gn, rtol=1e-5)
    assert int(new.step) == 1


def test_global_norm_clipping():
    new, m = _step(clip=0.01)
    upd = jax.tree.leaves(_sub(P, new.params))
    norm = np.sqrt(sum(float(jnp.sum(u ** 2)) for u in upd))
    assert float(m["grad_norm"]) > 0.01
    np.testing.assert_allclose(norm, 0.1 * 0.01, rtol=1e-4)


def test_accumulation_equals_full_batch():
    a, ma = _step(accum=1)
    b, mb = _step(accum=4)
    np.testing.assert_allclose(ma["loss"], mb["loss"], rtol=1e-6)
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


def test_lr_multipliers_scale_updates():
    mults = jax.tree.map(lambda _: 1.0, P)
    mults["params"]["block_0"]["mlp"]["fc"]["kernel"] = 16.0
    new, _ = _step(mults=mults)
    g = jax.grad(loss_fn)(P, X, Y, None)
    np.testing.assert_allclose(
        new.params["params"]["block_0"]["mlp"]["fc"]["kernel"],
        P["params"]["block_0"]["mlp"]["fc"]["kernel"]
        - 1.6 * g["params"]["block_0"]["mlp"]["fc"]["kernel"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new.params["params"]["embed"]["embedding"],
                               P["params"]["embed"]["embedding"]
                               - 0.1 * g["params"]["embed"]["embedding"], rtol=1e-5, atol=1e-6)


def test_lr_groups_split_head_and_body_and_compose_with_mup():
    """optim.lr_groups (paper 002's LR_head vs LR_body): the embedding moves at 5× the base LR,
    the body at 1× — against the plain SGD step by hand; μP multipliers multiply in."""
    g = jax.grad(loss_fn)(P, X, Y, None)
    for mup, body in ((None, 1.0), (16.0, 16.0)):
        mults = None
        if mup is not None:
            mults = jax.tree.map(lambda _: 1.0, P)
            mults["params"]["block_0"]["mlp"]["fc"]["kernel"] = mup
        cfg = OptimSection(name="sgd", learning_rate=0.1, clip_norm=0.0,
                           options={"momentum": 0.0}, lr_groups={"embedding": 5.0})
        opt = optimizer_from_section(cfg, 10, P, mults)
        state = TrainState(jnp.int32(0), P, opt.tx.init(P), jax.random.PRNGKey(0))
        new = jax.jit(make_train_step(loss_fn, opt))(state, (X, Y))[0]
        np.testing.assert_allclose(new.params["params"]["embed"]["embedding"],
                                   P["params"]["embed"]["embedding"]
                                   - 0.5 * g["params"]["embed"]["embedding"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(new.params["params"]["block_0"]["mlp"]["fc"]["kernel"],
                                   P["params"]["block_0"]["mlp"]["fc"]["kernel"]
                                   - 0.1 * body * g["params"]["block_0"]["mlp"]["fc"]["kernel"],
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("groups, match", [({"heads": 2.0}, "unknown group"),
                                           ({"head": 0.0}, "finite number > 0"),
                                           ({"head": float("nan")}, "finite number > 0"),
                                           ({"head": True}, "finite number > 0")])
def test_lr_groups_bad_input_names_the_fix(groups, match):
    cfg = OptimSection(name="sgd", learning_rate=0.1, lr_groups=groups)
    with pytest.raises(ConfigError, match=match):
        optimizer_from_section(cfg, 10, P, None)


def test_per_step_key_is_fold_in_of_step():
    cfg = OptimSection(name="sgd", learning_rate=0.1, clip_norm=0.0, options={"momentum": 0.0})
    opt = optimizer_from_section(cfg, 10, P, None)
    key = jax.random.PRNGKey(7)
    state = TrainState(jnp.int32(5), P, opt.tx.init(P), key)
    out = jax.jit(make_train_step(
        lambda p, x, y, r: loss_fn(p, x, y, r) * 0 + jax.random.uniform(r), opt))(
        state, (X, Y))[1]["loss"]
    np.testing.assert_allclose(out, jax.random.uniform(jax.random.fold_in(key, 5)))


def test_logged_lr_is_the_applied_one():
    """The LR in the metrics is read from the optimiser state: peak × schedule at this step."""
    cfg = OptimSection(name="sgd", learning_rate=0.5, clip_norm=0.0, schedule="cosine",
                       warmup_steps=4, options={"momentum": 0.0})
    opt = optimizer_from_section(cfg, 10, P, None)
    state = TrainState(jnp.int32(0), P, opt.tx.init(P), jax.random.PRNGKey(0))
    step = jax.jit(make_train_step(loss_fn, opt))
    g = jax.grad(loss_fn)(P, X, Y, None)
    for t in range(3):
        new, m, _, _ = step(state, (X, Y))
        applied = (state.params["params"]["embed"]["embedding"]
                   - new.params["params"]["embed"]["embedding"])
        g = jax.grad(loss_fn)(state.params, X, Y, None)["params"]["embed"]["embedding"]
        np.testing.assert_allclose(float(m["lr"]), 0.5 * t / 4, rtol=1e-6)
        np.testing.assert_allclose(applied, float(m["lr"]) * g, rtol=1e-5, atol=1e-7)
        state = new
