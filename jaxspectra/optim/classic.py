"""Classic optimisers in PyTorch's conventions, built from optax pieces.

* :func:`adam_l2` — ``torch.optim.Adam(weight_decay=wd)``: *coupled* L2 (``g ← g + wd·W`` before
  the moments), unlike AdamW's decoupled decay. Paper 001's WikiText-2 baseline ("Adam with weight
  decay fixed to 1e-4", App. K) is this optimiser.
* :func:`sgd_momentum` — ``torch.optim.SGD(momentum=μ, weight_decay=wd, nesterov=...)`` with
  dampening 0: ``g ← g + wd·W; buf ← μ·buf + g; W ← W − η·buf`` (or ``η·(g + μ·buf)`` with
  Nesterov). Paper 001 uses momentum 0.9.
* :func:`adamw_2d` — ``optax.adamw`` with weight decay on leaves of two or more dimensions only
  (nanoGPT's and paper 004's convention: 2-D weights decayed, 1-D gains/biases not).

Example:
  >>> import jax.numpy as jnp
  >>> tx = adam_l2(1e-3, weight_decay=1e-4)
  >>> params = {"w": jnp.ones((2, 2))}
  >>> updates, state = tx.update({"w": jnp.ones((2, 2))}, tx.init(params), params)
  >>> round(float(updates["w"][0, 0]), 6)  # first Adam step is -lr·sign(g)
  -0.001
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax


def is_number(x: Any) -> bool:
    """True for a Python number (validated eagerly); traced or array hyper-parameters (vmapped
    sweeps) are left unchecked."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def check_range(who: str, name: str, x: Any, lo: float, hi: float | None = None) -> None:
    """Raise if the Python number ``x`` is outside ``[lo, hi)`` (``[lo, ∞)`` if ``hi`` is None)."""
    if is_number(x) and not (lo <= x and (hi is None or x < hi)):
        rng = f"[{lo}, {hi})" if hi is not None else f">= {lo}"
        raise ValueError(f"{who}: {name} must be {'in ' if hi is not None else ''}{rng}, got {x}")


def _check_lr(learning_rate: Any, who: str) -> None:
    if is_number(learning_rate) and not learning_rate >= 0:
        raise ValueError(f"{who}: learning_rate must be >= 0 (or a schedule), got {learning_rate}")


def adam_l2(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    mask: Any = None,
) -> optax.GradientTransformation:
    """``torch.optim.Adam`` with coupled L2 weight decay.

    Per step ``t`` (from 1): ``g ← g + wd·W``, ``m ← β₁m + (1−β₁)g``, ``v ← β₂v + (1−β₂)g²``,
    ``W ← W − η·(m/(1−β₁ᵗ)) / (√(v/(1−β₂ᵗ)) + ε)``.

    Args:
      learning_rate: η, a float or an optax schedule.
      b1, b2, eps: Adam's β₁, β₂, ε (torch's defaults).
      weight_decay: the L2 coefficient added to the gradient.
      mask: optional pytree/callable of booleans: which leaves get the L2 term (all by default,
        as in torch).
    """
    _check_lr(learning_rate, "adam_l2")
    check_range("adam_l2", "weight_decay", weight_decay, 0.0)
    return optax.chain(
        optax.add_decayed_weights(weight_decay, mask),
        optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
        optax.scale_by_learning_rate(learning_rate),
    )


def sgd_momentum(
    learning_rate: optax.ScalarOrSchedule,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    mask: Any = None,
) -> optax.GradientTransformation:
    """``torch.optim.SGD`` with momentum (dampening 0) and coupled L2 weight decay.

    ``optax.trace`` is torch's sum-form buffer (``buf ← μ·buf + g``, zero-initialised, so the first
    step's buffer is ``g`` as in torch).
    """
    _check_lr(learning_rate, "sgd")
    check_range("sgd", "momentum", momentum, 0.0, 1.0)
    check_range("sgd", "weight_decay", weight_decay, 0.0)
    return optax.chain(
        optax.add_decayed_weights(weight_decay, mask),
        optax.trace(decay=momentum, nesterov=nesterov),
        optax.scale_by_learning_rate(learning_rate),
    )


def ndim_at_least_2(params: Any) -> Any:
    """Mask: True on leaves with two or more dimensions (the weights that get weight decay)."""
    return jax.tree.map(lambda x: jnp.ndim(x) >= 2, params)


def adamw_2d(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.95,
    eps: float = 1e-8,
    weight_decay: float = 0.1,
) -> optax.GradientTransformation:
    """``optax.adamw`` decaying only leaves of ≥ 2 dims (defaults: paper 004's / nanoGPT's AdamW).

    Decoupled decay as in ``torch.optim.AdamW``: ``W ← W − η·(adam(g) + wd·W)``.
    """
    _check_lr(learning_rate, "adamw")
    check_range("adamw", "weight_decay", weight_decay, 0.0)
    return optax.adamw(
        learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=ndim_at_least_2
    )
