"""The train and eval steps (pure functions; the loop jit-compiles them with shardings).

A step: per-step key ``fold_in(state.rng, state.step)``; gradient accumulation over ``A``
micro-batches by ``lax.scan`` (micro-batch ``i`` is rows ``i, i+A, …`` so every device keeps its
rows local); loss in float32 from bf16/fp32 logits; ``optax`` update (clipping is the first link
of the chain). The *hooked* variant additionally runs the device monitors on the step's
pre-update params and batch; the loop compiles both and runs the hooked one only on monitor
steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxspectra.train.state import TrainState


def lm_loss(apply_fn: Callable, params: Any, inputs: jax.Array, targets: jax.Array, rng) -> jax.Array:
    """Mean next-token cross-entropy (float32) of ``apply_fn(params, inputs) -> logits``."""
    logits = apply_fn(params, inputs, rngs={"dropout": rng})
    if isinstance(logits, tuple):
        logits = logits[0]
    logits = logits.astype(jnp.float32)
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()


def _micro(x: jax.Array, a: int) -> jax.Array:
    b = x.shape[0]
    return x.reshape(b // a, a, *x.shape[1:]).swapaxes(0, 1)


def make_train_step(
    loss_fn: Callable,
    make_tx: Callable[[dict], optax.GradientTransformation],
    lr_fn: Callable[[dict, Any], Any],
    grad_accum: int = 1,
    monitors: Sequence[Any] = (),
) -> Callable:
    """``step(state, batch, hp[, mon_states]) -> (state, metrics[, mon_metrics, mon_states])``.

    ``loss_fn(params, inputs, targets, rng) -> scalar``; ``batch = (inputs, targets)`` with a
    leading global-batch axis; ``hp`` the swept hyper-parameters (see
    :func:`jaxspectra.train.state.make_tx_factory`). With ``monitors`` the returned step is the
    hooked variant.
    """
    grad_fn = jax.value_and_grad(loss_fn)

    def step(state: TrainState, batch, hp, mon_states=None):
        inputs, targets = batch
        rng = jax.random.fold_in(state.rng, state.step)
        if grad_accum == 1:
            loss, grads = grad_fn(state.params, inputs, targets, rng)
        else:
            keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(jnp.arange(grad_accum))
            zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state.params)

            def body(carry, mb):
                tot, acc = carry
                x, y, k = mb
                l, g = grad_fn(state.params, x, y, k)
                acc = jax.tree.map(lambda a, gi: a + gi.astype(jnp.float32), acc, g)
                return (tot + l.astype(jnp.float32), acc), None

            (loss, grads), _ = jax.lax.scan(
                body, (jnp.zeros((), jnp.float32), zeros),
                (_micro(inputs, grad_accum), _micro(targets, grad_accum), keys),
            )
            loss = loss / grad_accum
            grads = jax.tree.map(
                lambda g, p: (g / grad_accum).astype(p.dtype), grads, state.params
            )
        tx = make_tx(hp)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new = TrainState(state.step + 1, params, opt_state, state.rng)
        metrics = {"loss": loss, "grad_norm": grad_norm, "lr": lr_fn(hp, state.step)}
        if not monitors:
            return new, metrics
        mon_metrics, new_mon = {}, []
        for mon, ms in zip(monitors, mon_states):
            m, ms = mon(state.params, batch, ms)
            mon_metrics.update(m)
            new_mon.append(ms)
        return new, metrics, mon_metrics, tuple(new_mon)

    return step


def make_eval_step(loss_fn: Callable) -> Callable:
    """``eval_step(params, batch) -> loss`` (deterministic: a fixed key)."""

    def eval_step(params, batch):
        inputs, targets = batch
        return loss_fn(params, inputs, targets, jax.random.PRNGKey(0))

    return eval_step
