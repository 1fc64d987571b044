"""Muon: ``optax.contrib.muon`` (exposed, not rewritten) and paper 004's form from optax pieces.

``optax.contrib.muon`` (optax 0.2.8) differs from the Muon of paper 004's runs (the authors' code,
see ``../shared/papers/README.md``) in three ways:

1. **Shape scaling.** optax multiplies the orthogonalised update by ``√max(1, fan_out/fan_in)``
   (``scale_by_shape``, Keller Jordan's width rule); paper 004 applies none.
2. **EMA momentum.** optax keeps ``m ← β·m + (1−β)·g`` and orthogonalises the bias-corrected
   Nesterov mix ``β·m/(1−β^{t+1}) + (1−β)·g/(1−β^t)``; paper 004 uses the sum form
   ``buf ← μ·buf + g``, ``G = g + μ·buf`` (``optax.trace(decay=μ, nesterov=True)``). Up to the bias
   corrections the two differ by the factor (1−β) = 1/20, which the scale-free sign hides but the
   Manifold-Muon dual step does not; the bias corrections also re-weight g against the buffer in
   the first steps, so the directions differ there (``tests/optim/test_muon.py``).
3. **The sign.** optax runs 5 steps of the quintic (3.4445, −4.7750, 2.0315), whose singular values
   land in roughly [0.7, 1.2], not 1; paper 004 used Polar Express (10 steps, bf16).

Also, optax's ``muon``'s non-Muon leaves go to ``optax.adamw(..., nesterov=True)`` (NAdamW, b2
0.999 by default): use :func:`jaxspectra.optim.module_wise.module_wise` to put plain AdamW there.

**Inverted ``ns_coeffs`` row check (optax 0.2.8, ``scale_by_muon.init_fn``).** With a table of
coefficients (``ns_coeffs`` of shape ``(n, 3)``, e.g. the 5-row ``'dion'`` preset) the check reads
``if not n <= ns_steps: raise ValueError('Not enough coeffs ...')`` — the inequality is the wrong
way round. So ``ns_steps < n`` (enough rows) raises, and ``ns_steps > n`` (too few rows) passes
silently and runs only ``n`` steps (``ns_coeffs[-ns_steps:]`` keeps all ``n`` rows and the scan
runs over rows). Only ``ns_steps == n`` behaves as documented. Pinned by
``tests/optim/test_muon.py::test_optax_ns_coeffs_row_check_is_inverted``.

:func:`paper_muon` is paper 004's unconstrained Muon::

    buf ← μ·buf + g;  G = g + μ·buf                  (optax.trace(μ, nesterov=True))
    W   ← W·(1 − η·wd) − η·sign(G)                   (decoupled decay, no shape scaling)

Example:
  >>> import jax, jax.numpy as jnp
  >>> tx = paper_muon(0.02, sign_method=svd_sign)
  >>> params = {"w": jnp.eye(3)}
  >>> g = {"w": jnp.diag(jnp.array([3.0, 2.0, 1.0]))}
  >>> updates, _ = tx.update(g, tx.init(params), params)
  >>> # sign(G) = I; update = -η·(I + wd·W) = -0.02·1.1 on the diagonal
  >>> [round(float(x), 6) for x in jnp.diag(updates["w"])]
  [-0.022, -0.022, -0.022]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from optax.contrib import MuonDimensionNumbers, muon, scale_by_muon

from jaxspectra.groups import path_to_str
from jaxspectra.linalg import matrix_sign
from jaxspectra.optim.classic import check_range

__all__ = [
    "MuonDimensionNumbers",
    "batched_dimension_numbers",
    "muon",
    "optax_muon",
    "paper_muon",
    "scale_by_muon",
    "scale_by_sign",
    "svd_sign",
]

SignFn = Callable[[jax.Array], jax.Array]


def batched_dimension_numbers(params: Any) -> Any:
    """``MuonDimensionNumbers`` for ``optax.contrib.muon``: the last two axes of every leaf with
    ≥ 2 dims are (fan_in, fan_out), leading axes are batch axes (stacked layers, experts); ``None``
    (→ optax's Adam branch) for 0-/1-D leaves."""
    return jax.tree.map(
        lambda x: MuonDimensionNumbers(reduction_axis=-2, output_axis=-1)
        if jnp.ndim(x) >= 2
        else None,
        params,
    )


def optax_muon(learning_rate: optax.ScalarOrSchedule, **kwargs: Any) -> optax.GradientTransformation:
    """``optax.contrib.muon`` with :func:`batched_dimension_numbers` (so stacked ``(L, m, n)``
    kernels are orthogonalised per matrix rather than sent to Adam). ``kwargs`` go to optax."""
    kwargs.setdefault("muon_weight_dimension_numbers", batched_dimension_numbers)
    return muon(learning_rate, **kwargs)


def svd_sign(x: jax.Array, rtol: float | None = None) -> jax.Array:
    """Reference matrix sign ``U·1[σ > rtol·σ_max]·Vᵀ`` over the last two axes (batched).

    Singular values below ``rtol·σ_max`` (default ``max(m, n)·eps``) map to 0, so a zero matrix
    maps to zero and a rank-deficient one to a partial isometry. For production use
    :func:`jaxspectra.linalg.matrix_sign`; this is the exact reference the tests compare with.
    """
    u, s, vt = jnp.linalg.svd(x, full_matrices=False)
    if rtol is None:
        rtol = max(x.shape[-2:]) * float(jnp.finfo(x.dtype).eps)
    keep = s > rtol * jnp.max(s, axis=-1, keepdims=True)
    return jnp.einsum("...ik,...k,...kj->...ij", u, keep.astype(x.dtype), vt)


def _resolve_sign(method: str | SignFn | None, sign_kwargs: dict[str, Any]) -> SignFn:
    if callable(method):
        return lambda x: method(x, **sign_kwargs)

    def sign(x: jax.Array) -> jax.Array:

        kw = dict(sign_kwargs)
        if method is not None:
            kw["method"] = method
        out = matrix_sign(x, **kw)
        return out[0] if isinstance(out, tuple) else out

    return sign


class ScaleBySignState(NamedTuple):
    """Stateless."""


def scale_by_sign(
    method: str | SignFn | None = None, **sign_kwargs: Any
) -> optax.GradientTransformation:
    """Replace every update leaf by its matrix sign (polar factor) over the last two axes.

    Args:
      method: a :func:`jaxspectra.linalg.matrix_sign` method name (``None``: its default), or a
        callable ``x -> sign(x)`` batched over leading axes.
      **sign_kwargs: passed to the sign function.

    Raises:
      ValueError: (at ``update``) on a leaf with fewer than 2 dims, naming its path.
    """
    sign = _resolve_sign(method, sign_kwargs)

    def init_fn(params: Any) -> ScaleBySignState:
        del params
        return ScaleBySignState()

    def update_fn(updates: Any, state: ScaleBySignState, params: Any = None):
        del params

        def one(path, u):
            if jnp.ndim(u) < 2:
                raise ValueError(
                    f"scale_by_sign: parameter {path_to_str(path)!r} has shape {jnp.shape(u)}; "
                    "the matrix sign needs >= 2 dims (send 0-/1-D leaves to another optimiser)"
                )
            return sign(u).astype(u.dtype)

        return jax.tree_util.tree_map_with_path(one, updates), state

    return optax.GradientTransformation(init_fn, update_fn)


def paper_muon(
    learning_rate: optax.ScalarOrSchedule,
    momentum: float = 0.95,
    weight_decay: float = 0.1,
    sign_method: str | SignFn | None = "polar_express",
    weight_decay_mask: Any = None,
    **sign_kwargs: Any,
) -> optax.GradientTransformation:
    """Paper 004's unconstrained Muon: sum-form Nesterov, sign, decoupled decay, no shape scaling.

    ``buf ← μ·buf + g``; ``G = g + μ·buf``; ``W ← W·(1 − η·wd) − η·sign(G)``.

    Args:
      learning_rate: η (float or schedule; paper 004: 0.02 · lr_adamw(t)/6e-4).
      momentum: μ (0.95).
      weight_decay: wd (0.1), decoupled and multiplied by η as in the authors' code.
      sign_method: a :func:`jaxspectra.linalg.matrix_sign` method (the authors ran Polar
        Express), ``None`` for its default, or a callable.
      weight_decay_mask: optional mask of the leaves to decay (all by default).
      **sign_kwargs: passed to the sign function.

    Every leaf must have ≥ 2 dims (leading axes are batch axes); combine with AdamW through
    :func:`jaxspectra.optim.module_wise.module_wise`.
    """
    check_range("paper_muon", "momentum", momentum, 0.0, 1.0)
    check_range("paper_muon", "weight_decay", weight_decay, 0.0)
    return optax.chain(
        optax.trace(decay=momentum, nesterov=True),
        scale_by_sign(sign_method, **sign_kwargs),
        optax.add_decayed_weights(weight_decay, weight_decay_mask),
        optax.scale_by_learning_rate(learning_rate),
    )
