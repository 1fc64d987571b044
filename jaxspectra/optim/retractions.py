"""Retractions onto the Stiefel, DGram and oblique manifolds (paper 004, App. A), batched.

Every function takes a *tall* array ``x`` of shape ``(..., m, n)`` with ``m >= n`` (leading axes
are batch axes; callers transpose wide matrices first, as paper 004 does) and returns a point of
the manifold:

==========  ==========================  ===========================================================
manifold    constraint                  retraction
==========  ==========================  ===========================================================
stiefel     WᵀW = I                     polar factor Q = sign(X)
dgram       WᵀW diagonal (free scales)  ``"default"``: Q · diag(QᵀX) (fixes manifold points);
                                        ``"sorted"``: (U Vᵀ) · diag(S) from X = U S Vᵀ (the authors';
                                        S descending)
oblique     diag(WᵀW) = 1               column normalisation X / ‖X_{:,j}‖
==========  ==========================  ===========================================================

Paper 004's DGram retraction (U Vᵀ)·diag(S) gives column j the j-th *largest* singular value, so it
is not the identity on its own manifold: a point with column norms (0.5, 2, 1, 1.5) comes back with
(2, 1.5, 1, 0.5) — its columns are re-scaled, not only re-oriented. It is kept as
``retraction="sorted"`` for reproducing the paper. The default instead scales the polar factor Q by
diag(QᵀX): for X = Q₀·D on the manifold (Q₀ orthonormal columns, D diagonal) sign(X) = Q₀·sign(D)
and diag(QᵀX) = |D|, so X is returned unchanged; it needs one matrix sign and no SVD.

Example:
  >>> import jax.numpy as jnp
  >>> x = jnp.eye(4, 2) * jnp.array([0.5, 2.0])        # on DGram, unsorted column norms
  >>> retract(x, "dgram", sign_method="svd")[:2]
  Array([[0.5, 0. ],
         [0. , 2. ]], dtype=float32)
  >>> retract(x, "dgram", "sorted", sign_method="svd")[:2]
  Array([[2. , 0. ],
         [0. , 0.5]], dtype=float32)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxspectra import linalg
from jaxspectra.matrices import mT

MANIFOLDS = ("stiefel", "dgram", "oblique")
RETRACTIONS = ("default", "sorted")


def check_manifold(manifold: str) -> str:
    """Return ``manifold`` or raise a ``ValueError`` listing the known ones."""
    if manifold not in MANIFOLDS:
        raise ValueError(f"unknown manifold {manifold!r}; expected one of {list(MANIFOLDS)}")
    return manifold


def check_retraction(manifold: str, retraction: str) -> str:
    """Validate a retraction name for ``manifold`` (``"sorted"`` exists for DGram only)."""
    check_manifold(manifold)
    if retraction not in RETRACTIONS:
        raise ValueError(f"unknown retraction {retraction!r}; expected one of {list(RETRACTIONS)}")
    if retraction == "sorted" and manifold != "dgram":
        raise ValueError(
            f"retraction='sorted' ((U Vᵀ)·diag(S), paper 004's DGram retraction) is defined for "
            f"manifold='dgram' only, got manifold={manifold!r}; use retraction='default'"
        )
    return retraction


def stiefel(x: jax.Array, sign_method: str = "auto") -> jax.Array:
    """Polar factor of ``x`` (the closest matrix with orthonormal columns)."""
    return linalg.matrix_sign(x, sign_method)


def oblique(x: jax.Array, eps: float = 1e-8) -> jax.Array:
    """Columns scaled to unit norm (a zero column stays zero up to ``eps``)."""
    norms = jnp.linalg.norm(x, axis=-2, keepdims=True)
    return x / jnp.maximum(norms, eps)


def dgram(x: jax.Array, sign_method: str = "auto") -> jax.Array:
    """Q · diag(QᵀX) with Q = sign(X): diagonal Gram, the identity on the DGram manifold."""
    q = linalg.matrix_sign(x, sign_method)
    scales = jnp.sum(q * x, axis=-2, keepdims=True)  # diag(QᵀX) as a row
    return q * scales


def dgram_sorted(x: jax.Array, sign_method: str = "svd") -> jax.Array:
    """Paper 004's (U Vᵀ)·diag(S) for X = U S Vᵀ (re-sorts column norms, S descending).

    With ``sign_method="svd"`` this is the authors' literal thin SVD. Otherwise U Vᵀ is the polar
    factor from :func:`jaxspectra.linalg.matrix_sign` and S the square roots of the eigenvalues of
    the n×n Gram XᵀX, sorted descending — the same matrix without a (slow on GPUs) SVD of the
    tall X; the Gram squares the condition number, which is harmless here because S is only used
    as column scales (a relative error ε·σ_max²/σ_j² on σ_j).
    """
    if sign_method == "svd":
        u, s, vt = jnp.linalg.svd(x, full_matrices=False)
        return (u @ vt) * s[..., None, :]
    q = linalg.matrix_sign(x, sign_method)
    gram = jnp.matmul(mT(x), x, precision=jax.lax.Precision.HIGHEST)
    evals = jnp.linalg.eigvalsh(gram)[..., ::-1]
    return q * jnp.sqrt(jnp.maximum(evals, 0.0))[..., None, :]


def retract(
    x: jax.Array,
    manifold: str,
    retraction: str = "default",
    *,
    sign_method: str = "auto",
) -> jax.Array:
    """Retract a tall batch ``x`` of shape ``(..., m, n)``, ``m >= n``, onto ``manifold``."""
    check_retraction(manifold, retraction)
    if x.ndim < 2 or x.shape[-2] < x.shape[-1]:
        raise ValueError(f"retract expects tall (..., m, n) with m >= n, got shape {x.shape}")
    if manifold == "stiefel":
        return stiefel(x, sign_method)
    if manifold == "oblique":
        return oblique(x)
    if retraction == "sorted":
        return dgram_sorted(x, sign_method)
    return dgram(x, sign_method)
