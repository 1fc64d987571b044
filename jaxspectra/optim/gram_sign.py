"""Matrix sign of tall matrices through their n×n Gram: sign(M) = M·(MᵀM)^{-1/2}.

For a tall M (m ≥ n) with thin SVD U S Vᵀ, sign(M) = U Vᵀ = M·V S⁻¹ Vᵀ = M·(MᵀM)^{-1/2}. An odd
polynomial iteration X ← X·p(XᵀX) (Newton–Schulz, p(x) = (3 − x)/2; Polar Express, quintics
p(x) = a + b·x + c·x², Amsel et al. 2025 — paper 003, eq. 13) keeps X = M·Q with Q a polynomial
in MᵀM, so it can run entirely on the small side (the coupled Newton–Schulz iteration for the
inverse square root):

    G₀ = QᵀMᵀMQ (Q₀ = I/s, s = 1.01·‖M‖_F, or a warm start Q₀),
    P_k = p_k(G_k),  Q_{k+1} = Q_k·P_k,  G_{k+1} = P_k·G_k·P_k   (G_k = X_kᵀX_k, exact arithmetic),

and only the Gram MᵀM (2mn² FLOPs) and the final S = M·Q (2mn²) touch the tall matrix. A step
costs 4 n×n products (8n³ FLOPs) instead of 4mn² + 2n³ for X ← X·p(XᵀX) on the tall X, so it is
cheaper for m ≥ 2n (GPT-2's 3072×768: 18n³ → 8n³ per step). In exact arithmetic the result is
the tall iteration's, bit for bit in the polynomial; in floating point the Gram squares the
condition number (σ_i/σ_1 below ≈ √u of the Gram's precision are not resolved), so the iteration
runs in float32 (``precision`` of its matmuls: ``HIGHEST`` by default; ``DEFAULT`` is TF32 on
GPUs). G_k is also the iterate's own residual: ‖G_k − I‖ measures how far S is from an isometry
at no extra cost — the basis of the warm start (:func:`polish`) used by Manifold Muon's dual
ascent, whose consecutive signs differ little.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jaxspectra import linalg
  >>> m = jax.random.normal(jax.random.key(0), (2, 64, 16))
  >>> s, q, res = gram_sign(m, linalg.POLAR_EXPRESS_COEFFS + (linalg.POLAR_EXPRESS_COEFFS[-1],) * 2)
  >>> bool(jnp.allclose(s, linalg.matrix_sign(m, "svd"), atol=1e-4)), bool(res.max() < 1e-4)
  (True, True)
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxspectra.matrices import mT

__all__ = ["POLISH_COEFFS", "gram_sign", "gram_sign_flops", "polish", "residual"]

#: Polishing quintic (1.875, −1.25, 0.375): p(x) = (15 − 10x + 3x²)/8, the Newton–Schulz
#: quintic with a triple fixed point at 1 (Polar Express's last triple): an error
#: e = 1 − σ² becomes ≈ (5/2)e³... (third order) — 2 steps take 5e-2 to ~1e-6.
POLISH_COEFFS = ((1.875, -1.25, 0.375),)
_FROB_SCALE = 1.01


def _check_tall(m: jax.Array) -> None:
    if m.ndim < 2 or m.shape[-2] < m.shape[-1]:
        raise ValueError(
            f"gram_sign expects tall (..., m, n) with m >= n, got shape {m.shape}; transpose "
            "wide matrices first (sign(Mᵀ) = sign(M)ᵀ)"
        )


def residual(gram: jax.Array) -> jax.Array:
    """max |G − I| per matrix: how far S = M·Q is from an isometry (G = SᵀS); ``inf`` where G
    is not finite (a diverged iteration; a max-reduction may drop NaNs)."""
    eye = jnp.eye(gram.shape[-1], dtype=gram.dtype)
    res = jnp.max(jnp.abs(gram - eye), axis=(-2, -1))
    return jnp.where(jnp.all(jnp.isfinite(gram), axis=(-2, -1)), res, jnp.inf)


def _iterate(
    q: jax.Array, g: jax.Array, coeffs: Sequence[tuple[float, float, float]],
    precision: lax.Precision,
) -> tuple[jax.Array, jax.Array]:
    mm = lambda a, b: jnp.matmul(a, b, precision=precision)  # noqa: E731
    eye = jnp.eye(g.shape[-1], dtype=g.dtype)

    def step(carry, abc):
        q, g = carry
        a, b, c = abc[0], abc[1], abc[2]
        p = a * eye + b * g + c * mm(g, g)
        g = mm(p, mm(g, p))
        g = 0.5 * (g + mT(g))  # exact symmetry (round-off would make it drift)
        return (mm(q, p), g), None

    table = jnp.asarray(np.asarray(coeffs, np.float64), g.dtype)
    (q, g), _ = lax.scan(step, (q, g), table)
    return q, g


def gram_sign(
    m: jax.Array,
    coeffs: Sequence[tuple[float, float, float]],
    *,
    precision: lax.Precision = lax.Precision.HIGHEST,
    q0: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """sign(M) of a tall batch ``m`` ``(..., m, n)`` by the coupled iteration on MᵀM.

    Args:
      m: tall floating array (computed in float32, or float64 for float64 input).
      coeffs: the (a, b, c) of each step, p(x) = a + b·x + c·x² (``linalg.POLAR_EXPRESS_COEFFS``,
        ``linalg.polar_express_coefficients(...)``, ``((1.5, -0.5, 0.0),) * k`` for Newton–Schulz).
      precision: of every matmul (``HIGHEST``: true float32; ``DEFAULT``: TF32 on GPUs).
      q0: ``(..., n, n)`` warm start (X₀ = M·q0, e.g. the ``q`` of a previous call on a nearby
        matrix); ``None``: X₀ = M / (1.01·‖M‖_F) as Polar Express starts.

    Returns:
      ``(S, Q, res)``: S = M·Q ``(..., m, n)`` in ``m``'s dtype, Q ``(..., n, n)`` (float32)
      and :func:`residual` of the final Gram ``(...)`` (the iteration's own estimate of
      max |SᵀS − I|).
    """
    _check_tall(m)
    dtype = jnp.float64 if m.dtype == jnp.float64 else jnp.float32
    x = m.astype(dtype)
    mm = lambda a, b: jnp.matmul(a, b, precision=precision)  # noqa: E731
    gram = mm(mT(x), x)
    if q0 is None:
        tr = jnp.trace(gram, axis1=-2, axis2=-1)[..., None, None]
        s = jnp.where(tr > 0, _FROB_SCALE * jnp.sqrt(tr), 1.0)  # a zero matrix stays zero
        q = jnp.broadcast_to(jnp.eye(x.shape[-1], dtype=dtype), gram.shape) / s
        g = gram / (s * s)
    else:
        q = q0.astype(dtype)
        g = mm(mT(q), mm(gram, q))
        g = 0.5 * (g + mT(g))
    q, g = _iterate(q, g, coeffs, precision)
    return mm(x, q).astype(m.dtype), q, residual(g)


def polish(
    m: jax.Array,
    q_prev: jax.Array,
    steps: int = 2,
    *,
    precision: lax.Precision = lax.Precision.HIGHEST,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """sign(M) warm-started from a nearby matrix's Q: X₀ = M·q_prev, then ``steps``
    :data:`POLISH_COEFFS` steps (third-order convergence once σ(X₀) ≈ 1). Same returns as
    :func:`gram_sign`; check ``res`` and redo a cold :func:`gram_sign` where it is too large."""
    if steps < 1:
        raise ValueError(f"polish needs steps >= 1, got {steps}")
    return gram_sign(m, POLISH_COEFFS * steps, precision=precision, q0=q_prev)


def gram_sign_flops(m: int, n: int, steps: int) -> float:
    """FLOPs of :func:`gram_sign` on one m×n matrix: 2mn² (Gram) + 2mn² (M·Q) + 8n³ per step
    (the tall polynomial step X·p(XᵀX) costs 4mn² + 2n³)."""
    return 4.0 * m * n * n + 8.0 * n**3 * steps
