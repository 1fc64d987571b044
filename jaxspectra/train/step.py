"""The train and eval steps (pure functions; :mod:`jaxspectra.train.engine` compiles them).

A step: per-step key ``fold_in(state.rng, state.step)``; gradient accumulation over ``A``
micro-batches by ``lax.scan`` (micro-batch ``i`` is rows ``i, i+A, …`` so every device keeps its
rows local); loss in float32; the ``optax`` update (the optimiser is built once and owns every
hyper-parameter, :mod:`jaxspectra.train.state`); ``lr`` in the metrics is what the update applied.

**In-step hooks** (:class:`StepHook`) run inside the compiled step on the steps they are due and
see that step's :class:`StepContext` — params before the update, the batch, the gradients, the
updates and the loss — so a gradient-norm or update-spectrum monitor costs no second backward
pass. The engine compiles the step once without hooks and once per set of hooks due together,
so a step with no hook due runs the plain program.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import optax

from jaxspectra.train.state import Optimizer, TrainState


class StepContext(NamedTuple):
    """What an in-step hook sees (all device arrays, inside the jitted step): the params before
    the update, the batch, the gradients (before clipping), the updates, the loss and the
    optimiser state after the update."""

    params: Any  # before the update
    batch: Any
    grads: Any
    updates: Any
    loss: jax.Array
    opt_state: Any  # after the update


@runtime_checkable
class StepHook(Protocol):
    """A hook compiled into the step: ``init(params) -> state``,
    ``__call__(ctx, state) -> (metrics, state)``, ``due(step) -> bool`` (host side)."""

    name: str

    def due(self, step: int) -> bool: ...

    def init(self, params: Any) -> Any: ...

    def __call__(self, ctx: StepContext, state: Any) -> tuple[dict[str, Any], Any]: ...


def lm_loss(apply_fn: Callable, params: Any, inputs: jax.Array, targets: jax.Array, rng, *,
            loss_chunk: int = 0) -> jax.Array:
    """Mean next-token cross-entropy (float32) of ``apply_fn(params, inputs) -> logits``.

    ``loss_chunk > 0`` (a GPT model's ``config.loss_chunk``, passed by the engine) calls the
    model's own ``loss`` method instead, which never materialises the ``[B, T, V]`` float32
    logits (:func:`jaxspectra.models.losses.chunked_lm_loss`).
    """
    if loss_chunk:
        loss = apply_fn(params, inputs, targets, rngs={"dropout": rng}, method="loss")
        return loss.astype(jnp.float32)
    logits = apply_fn(params, inputs, rngs={"dropout": rng})
    if isinstance(logits, tuple):
        logits = logits[0]
    logits = logits.astype(jnp.float32)
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()


def _micro(x: jax.Array, a: int) -> jax.Array:
    b = x.shape[0]
    return x.reshape(b // a, a, *x.shape[1:]).swapaxes(0, 1)


def make_grad_fn(loss_fn: Callable, grad_accum: int = 1) -> Callable:
    """``(params, batch, rng) -> (loss, grads)``, accumulated over ``grad_accum`` micro-batches."""
    grad_fn = jax.value_and_grad(loss_fn)
    if grad_accum == 1:
        return lambda params, batch, rng: grad_fn(params, *batch, rng)

    def accumulated(params, batch, rng):
        inputs, targets = batch
        keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(jnp.arange(grad_accum))
        zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)

        def body(carry, mb):
            tot, acc = carry
            x, y, k = mb
            loss, g = grad_fn(params, x, y, k)
            acc = jax.tree.map(lambda a, gi: a + gi.astype(jnp.float32), acc, g)
            return (tot + loss.astype(jnp.float32), acc), None

        (loss, grads), _ = jax.lax.scan(
            body, (jnp.zeros((), jnp.float32), zeros),
            (_micro(inputs, grad_accum), _micro(targets, grad_accum), keys))
        grads = jax.tree.map(lambda g, p: (g / grad_accum).astype(p.dtype), grads, params)
        return loss / grad_accum, grads

    return accumulated


def make_train_step(loss_fn: Callable, opt: Optimizer, grad_accum: int = 1,
                    hooks: Sequence[StepHook] = ()) -> Callable:
    """``step(state, batch, hook_states) -> (state, metrics, hook_metrics, hook_states)``.

    ``loss_fn(params, inputs, targets, rng) -> scalar``; ``batch = (inputs, targets)`` with a
    leading global-batch axis; ``hook_states`` a tuple matching ``hooks`` (``()`` without).
    """
    grads_of = make_grad_fn(loss_fn, grad_accum)

    def step(state: TrainState, batch, hook_states=()):
        rng = jax.random.fold_in(state.rng, state.step)
        loss, grads = grads_of(state.params, batch, rng)
        updates, opt_state = opt.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads),
                   "lr": opt.lr(opt_state, state.step)}
        ctx = StepContext(state.params, batch, grads, updates, loss, opt_state)
        hook_metrics: dict[str, Any] = {}
        new_states = []
        for hook, hs in zip(hooks, hook_states):
            m, hs = hook(ctx, hs)
            hook_metrics.update(m)
            new_states.append(hs)
        new = TrainState(state.step + 1, params, opt_state, state.rng)
        return new, metrics, hook_metrics, tuple(new_states)

    return step


def make_eval_step(loss_fn: Callable) -> Callable:
    """``eval_step(params, batch) -> loss`` (deterministic: a fixed key)."""

    def eval_step(params, batch):
        inputs, targets = batch
        return loss_fn(params, inputs, targets, jax.random.PRNGKey(0))

    return eval_step
