"""Stable-rank monitor as an optax ``GradientTransformation`` (paper 003, Def. 3.1, Obs. 1).

:func:`stable_rank_monitor` passes the updates through unchanged and, every ``every`` steps
(under ``lax.cond``, so the other steps cost nothing), records srank(W) = ‖W‖_F²/‖W‖₂² of every
matrix leaf (≥ 2 dims; leading axes are a batch) of the *params* into its own state, in the
manner of ``optax.monitor``/``optax.snapshot``: read it with ``optax.tree.get(state,
"stable_rank")`` from anywhere in a chain. Non-matrix leaves hold ``None``.

``method="power"`` (default) takes ‖W‖₂ from :func:`jaxspectra.linalg.spectral_norm_power`
(matvecs only; an upper bound of srank converging at the rate (σ₂/σ₁)^(2·iters)); ``"exact"``
uses :func:`jaxspectra.linalg.stable_rank` (SVD).

Example:
  >>> import jax.numpy as jnp, optax
  >>> params = {"w": jnp.diag(jnp.array([2.0, 1.0, 1.0])), "b": jnp.zeros(3)}
  >>> tx = optax.chain(optax.adam(1e-3), stable_rank_monitor(every=10, method="exact"))
  >>> state = tx.init(params)
  >>> _, state = tx.update(jax.tree.map(jnp.zeros_like, params), state, params)
  >>> round(float(optax.tree.get(state, "stable_rank")["w"]), 4)  # (4 + 1 + 1) / 4
  1.5
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from jaxspectra import linalg

METHODS = ("power", "exact")


class StableRankMonitorState(NamedTuple):
    count: jax.Array  # updates seen
    step: jax.Array  # the count at the last record (−1 before the first)
    stable_rank: Any  # params-shaped: (leading axes) per matrix leaf, None elsewhere


def _srank(w: jax.Array, method: str, iters: int) -> jax.Array:
    if method == "exact":
        return linalg.stable_rank(w).astype(jnp.float32)
    return linalg.stable_rank_power(w, iters).astype(jnp.float32)


def stable_rank_monitor(every: int = 100, method: str = "power",
                        iters: int = 30) -> optax.GradientTransformation:
    """Identity transformation recording every matrix leaf's stable rank every ``every`` steps.

    Args:
      every: record when ``count % every == 0`` (count = updates seen before this one).
      method: ``"power"`` or ``"exact"`` (see the module docstring).
      iters: power-iteration steps.
    """
    if every < 1:
        raise ValueError(f"every must be ≥ 1, got {every}")
    if method not in METHODS:
        raise ValueError(f"unknown stable-rank method {method!r}; known: {list(METHODS)}")

    def is_mat(x):
        return x is not None and jnp.ndim(x) >= 2

    def init(params):
        sr = jax.tree.map(lambda x: jnp.zeros(jnp.shape(x)[:-2], jnp.float32) if is_mat(x)
                          else None, params)
        return StableRankMonitorState(jnp.zeros((), jnp.int32), -jnp.ones((), jnp.int32), sr)

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("stable_rank_monitor needs params: call update(updates, state, "
                             "params)")

        def record(_):
            return state.count, jax.tree.map(
                lambda x: _srank(x, method, iters) if is_mat(x) else None, params)

        def keep(_):
            return state.step, state.stable_rank

        step, sr = lax.cond(state.count % every == 0, record, keep, None)
        return updates, StableRankMonitorState(state.count + 1, step, sr)

    return optax.GradientTransformation(init, update)
