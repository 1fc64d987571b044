"""Gradient norms: global and per parameter group / per layer (:mod:`jaxspectra.groups`).

* :func:`grad_norm_metrics` — pure function of a gradient tree → ``grad_norm/global``,
  ``grad_norm/<group>`` and ``grad_norm/block_<i>`` (ℓ2 over all leaves of the group/layer).
* :func:`grad_norm_monitor` — identity optax transformation recording them into its state every
  step (cheap: one reduction per leaf); put it first in the chain to see the raw gradients
  (``optax.tree.get(state, "norms")``).
* :class:`GradNormMonitor` — an in-step hook for the trainer: it reads the step's own gradients
  (the trainer hands in-step hooks the gradients and updates of their step), so it costs one
  reduction per leaf and no extra backward pass.

Example:
  >>> import jax.numpy as jnp
  >>> g = {"block_0": {"mlp": {"fc": {"kernel": jnp.full((2, 2), 1.0)}}},
  ...      "ln_f": {"scale": jnp.full((4,), 1.0)}}
  >>> m = grad_norm_metrics(g)
  >>> float(m["grad_norm/global"]), float(m["grad_norm/mlp"]), float(m["grad_norm/norm"])
  (2.8284270763397217, 2.0, 2.0)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxspectra import groups as G


def grad_norm_metrics(grads: Any) -> dict[str, jax.Array]:
    """Global, per-group and per-layer ℓ2 norms (float32) of a gradient pytree."""
    sq_group: dict[str, jax.Array] = {}
    sq_layer: dict[str, jax.Array] = {}
    total = jnp.zeros((), jnp.float32)
    for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
        s = jnp.sum(jnp.square(jnp.asarray(g).astype(jnp.float32)))
        total = total + s
        grp = G.path_group(path, jnp.ndim(g))
        sq_group[grp] = sq_group.get(grp, 0.0) + s
        layer = G.layer_index(path)
        if layer is not None:
            sq_layer[f"block_{layer}"] = sq_layer.get(f"block_{layer}", 0.0) + s
    out = {"grad_norm/global": jnp.sqrt(total)}
    out.update({f"grad_norm/{k}": jnp.sqrt(v) for k, v in sq_group.items()})
    out.update({f"grad_norm/{k}": jnp.sqrt(v) for k, v in sq_layer.items()})
    return out


class GradNormMonitorState(NamedTuple):
    norms: dict[str, jax.Array]


def grad_norm_monitor() -> optax.GradientTransformation:
    """Identity transformation whose state holds :func:`grad_norm_metrics` of the last updates."""

    def init(params):
        return GradNormMonitorState(jax.tree.map(jnp.zeros_like, grad_norm_metrics(params)))

    def update(updates, state, params=None):
        del params
        return updates, GradNormMonitorState(grad_norm_metrics(updates))

    return optax.GradientTransformation(init, update)


class GradNormMonitor:
    """In-step hook (:class:`jaxspectra.train.step.StepHook`): :func:`grad_norm_metrics` of the
    step's own gradients (``ctx.grads``, before clipping) on every ``every``-th step — no second
    backward pass."""

    def __init__(self, every: int = 10, name: str = "grad_norms"):
        if every < 1:
            raise ValueError(f"every must be ≥ 1, got {every}")
        self.every, self.name = every, name

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def init(self, params: Any) -> Any:
        return ()

    def __call__(self, ctx: Any, state: Any):
        return grad_norm_metrics(ctx.grads), state
