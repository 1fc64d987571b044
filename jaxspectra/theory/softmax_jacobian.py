"""The softmax Jacobian J(z) = diag(z) - z zᵀ and Lemma 1 (paper 001, eq. 5-7, App. D).

``J(φ(w)) = dφ(w)/dw`` (eq. 6). For ``z`` in the open simplex, ``J(z)`` is symmetric PSD with
``J(z) 1 = 0`` and its eigenvalues interlace the sorted entries ``z̃`` (Lemma 1):
``0 = λ₁ < z̃₁ ≤ λ₂ ≤ z̃₂ ≤ … ≤ z̃_{n-1} ≤ λ_n ≤ z̃_n < 1`` (the proof, Horn & Johnson Cor. 4.3.5
for the rank-one update ``diag(z) = J(z) + z zᵀ``, gives the stronger ``z̃_k ≤ λ_{k+1} ≤ z̃_{k+1}``,
which is what the tests check).

Consequences for the condition number of ``J`` on the tangent space ``1⊥`` (where it is
invertible), ``κ(J|1⊥) = λ_n / λ₂``:

    z̃_{n-1} / z̃₂  ≤  κ(J|1⊥)  ≤  z̃_n / z̃₁        (:func:`lemma1_bounds`)

(lower: ``λ_n ≥ z̃_{n-1}`` and ``λ₂ ≤ z̃₂``; upper: ``λ_n ≤ z̃_n`` and ``λ₂ ≥ z̃₁``; indices are
1-based and ascending, checked numerically in ``tests/theory/test_softmax_jacobian.py``). Note the
paper's App. J estimate ``κ(J²) ≈ (max a / min a)²`` is the square of the *upper* bound; with one
dominant token and all others equal it is off by orders of magnitude (see
:func:`jaxspectra.theory.results.prop1_counterexample`).

Exact eigenvalues. ``J(z) = diag(z) - z zᵀ`` is a rank-one downdate of a diagonal matrix, so with
``Σ z = 1`` its non-zero eigenvalues are the roots of the secular equation

    g(λ) = Σ_j z_j / (λ - z_j) = 0,

one in each interval ``(z̃_k, z̃_{k+1})`` (``g`` decreases from +∞ to −∞ there; with ``Σ z = 1``
the usual ``1 + Σ z_j²/(λ - z_j)`` equals ``λ·g(λ)``, which removes the cancellation against 1).
:func:`softmax_jacobian_eigvals` solves it by geometric bisection, which keeps high *relative*
accuracy for eigenvalues near 1e-30 where a dense eigensolver (absolute error ~1e-16) returns
noise. Everything here runs in float64 (:func:`jaxspectra.precision.float64`).

Example:
  >>> import jax.numpy as jnp
  >>> z = jnp.array([0.7, 0.2, 0.1])
  >>> J = softmax_jacobian(z)
  >>> bool(jnp.allclose(J @ jnp.ones(3), 0.0))
  True
  >>> lo, hi = lemma1_bounds(z)
  >>> bool(lo <= tangent_condition_number(z) <= hi)
  True
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxspectra.precision import float64
from jaxspectra.theory._checks import check_finite

_BISECTION_STEPS = 120


def _check_prob(name: str, z) -> jax.Array:
    if jnp.ndim(z) < 1 or jnp.shape(z)[-1] < 2:
        raise ValueError(f"{name} must have a last axis of n >= 2 entries, got shape "
                         f"{jnp.shape(z)}")
    check_finite(name, z)
    return jnp.asarray(z, jnp.float64)


def _jacobian_one(z: jax.Array) -> jax.Array:
    return jnp.diag(z) - jnp.outer(z, z)


def softmax_jacobian(z) -> jax.Array:
    """``J(z) = diag(z) - z zᵀ`` (eq. 5) for ``z`` of shape ``(..., n)`` → ``(..., n, n)``.

    ``z`` is a probability vector (the softmax *output*); leading axes (examples, heads) are
    batch axes, mapped with ``vmap``. ``J(softmax(w))`` is the Jacobian of softmax at ``w``
    (eq. 6). Runs in the dtype of ``z`` (float64 when called under
    :func:`jaxspectra.precision.float64`, as the theory code does).
    """
    if jnp.ndim(z) < 1:
        raise ValueError(f"z must have a last axis of n probabilities, got shape {jnp.shape(z)}")
    check_finite("z", z)
    z = jnp.asarray(z)
    fn = _jacobian_one
    for _ in range(z.ndim - 1):
        fn = jax.vmap(fn)
    return fn(z)


def softmax_jacobian_from_logits(w) -> jax.Array:
    """``J(softmax(w))``: the Jacobian of softmax at the logits ``w`` (eq. 6), batched."""
    check_finite("w", w)
    return softmax_jacobian(jax.nn.softmax(jnp.asarray(w), axis=-1))


def _secular_eigvals(z: jax.Array) -> jax.Array:
    """All n eigenvalues (ascending, the first is 0) of J(z) for one z on the simplex."""
    zs = jnp.sort(z)
    lo0, hi0 = zs[:-1], zs[1:]

    def g(lam):  # (n-1,) -> (n-1,); terms with z_j == 0 contribute 0
        diff = lam[:, None] - z[None, :]
        safe = jnp.where(z[None, :] > 0, diff, 1.0)
        return jnp.sum(jnp.where(z[None, :] > 0, z[None, :] / safe, 0.0), axis=1)

    def step(_, state):
        lo, hi = state
        mid = jnp.sqrt(lo) * jnp.sqrt(hi)  # no underflow of lo*hi
        mid = jnp.where((mid <= lo) | (mid >= hi), 0.5 * (lo + hi), mid)
        gm = g(mid)
        go_right = gm > 0  # g decreases on (lo, hi): positive means the root is to the right
        return jnp.where(go_right, mid, lo), jnp.where(go_right, hi, mid)

    lo, hi = jax.lax.fori_loop(0, _BISECTION_STEPS, step, (lo0, hi0))
    lam = jnp.sqrt(lo) * jnp.sqrt(hi)
    lam = jnp.where(lo0 <= 0.0, 0.0, lam)  # an exactly-zero entry: eigenvalue 0 (boundary)
    lam = jnp.where(hi0 <= lo0, lo0, lam)  # ties z̃_k = z̃_{k+1}: eigenvalue z̃_k exactly
    return jnp.concatenate([jnp.zeros((1,), z.dtype), lam])


@float64
def softmax_jacobian_eigvals(z) -> jax.Array:
    """Eigenvalues of ``J(z)`` in ascending order, ``(..., n)``, for ``z`` on the simplex.

    Solves the secular equation ``Σ_j z_j/(λ - z_j) = 0`` in each interlacing interval by
    geometric bisection (module docstring): relative accuracy ~1e-15 even for eigenvalues of
    size 1e-200. ``z`` must sum to 1 (it is renormalised; entries must be ≥ 0).
    """
    z = _check_prob("z", z)
    if not isinstance(z, jax.core.Tracer) and bool(jnp.any(z < 0)):
        raise ValueError("z must be a probability vector (non-negative entries)")
    z = z / jnp.sum(z, axis=-1, keepdims=True)
    fn = _secular_eigvals
    for _ in range(z.ndim - 1):
        fn = jax.vmap(fn)
    return fn(z)


@float64
def tangent_condition_number(z) -> jax.Array:
    """Exact ``κ(J(z)|1⊥) = λ_n / λ₂`` (batched over leading axes; ``inf`` on the boundary).

    ``1⊥`` (the tangent space of the simplex) is invariant under the symmetric ``J(z)``, and its
    eigenvalues there are ``λ₂ … λ_n`` (``λ₁ = 0`` belongs to ``1``). Computed from
    :func:`softmax_jacobian_eigvals`, so it stays accurate where ``eigvalsh`` does not.
    """
    lam = softmax_jacobian_eigvals(z)
    lam2, lamn = lam[..., 1], lam[..., -1]
    return jnp.where(lam2 > 0, lamn / jnp.where(lam2 > 0, lam2, 1.0), jnp.inf)


@float64
def lemma1_bounds(z) -> tuple[jax.Array, jax.Array]:
    """Lemma 1's bounds on ``κ(J(z)|1⊥)``: ``(z̃_{n-1}/z̃₂, z̃_n/z̃₁)`` (lower, upper), batched."""
    z = _check_prob("z", z)
    zs = jnp.sort(z, axis=-1)
    return zs[..., -2] / zs[..., 1], zs[..., -1] / zs[..., 0]


@float64
def lemma1_log10_bounds_from_logits(w) -> tuple[jax.Array, jax.Array]:
    """``log10`` of :func:`lemma1_bounds` at ``z = softmax(w)``, from the logits ``w``.

    ``z̃_a / z̃_b = exp(w̃_a - w̃_b)``, so this never forms probabilities and stays exact when
    the ratios overflow float64 (the paper's setting reaches 10⁵⁰ and beyond).
    """
    w = _check_prob("w", w)
    ws = jnp.sort(w, axis=-1)
    ln10 = math.log(10.0)
    return (ws[..., -2] - ws[..., 1]) / ln10, (ws[..., -1] - ws[..., 0]) / ln10
