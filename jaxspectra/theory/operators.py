"""Exact operators of paper 001: F(p) (eq. 9), H_p (§3.2, eq. 44) and the block operator 𝒥 (App. G).

Notation (squared loss ℓ = ½(f - y)², so ``ℓ' = f - y`` and ``ℓ'' = 1``; pass ``curvature`` for
other losses): ``K_i = X_i W``, ``a_i = φ(K_i p)``, ``u_i = X_i v`` and the per-example gradient

    r_i = ∂f_i/∂p = K_iᵀ J(a_i) u_i = K_iᵀ (a_i ⊙ (u_i - a_iᵀu_i))        (never forms J).

* ``F(p) = (1/N) [r_1 … r_N]ᵀ ∈ ℝ^{N×d}`` (eq. 9), so ``∇L = Fᵀ g`` with ``g_i = ℓ'(f_i)``.
* ``H_p = Σ_i K_iᵀ J(a_i) H_i J(a_i) K_i`` with ``H_i = ℓ''_i u_i u_iᵀ`` (§3.2). Each term is the
  rank-one ``ℓ''_i r_i r_iᵀ``, so ``H_p = Gᵀ diag(ℓ'') G = N² Fᵀ diag(ℓ'') F`` with ``G`` the
  stacked ``r_i`` — computed with ``vmap`` over examples and one ``d×N @ N×d`` product, no loop.
  ``H_p`` is the Gauss–Newton matrix of ``Σ_i ℓ_i``; at a zero-residual optimum (``p = p*``, the
  teacher) it equals ``N·∇²L`` exactly (``L`` is the *mean* loss), which the tests check against
  ``jax.hessian``. GD on ``L`` therefore linearises as ``e_{t+1} = (I - (η/N) H_p) e_t``.
* ``𝒥 = BC`` (App. G.2) with ``B = [J(a_i) K_i]_i ∈ ℝ^{Nn×d}`` and
  ``C = [K_iᵀ J(a_i) H_i]_i ∈ ℝ^{d×Nn}``: the Jacobian of the attention-space GD map (eq. 37-43);
  ``CB = H_p``, so the non-zero spectra agree. Dense ``Nn×Nn``: small N only.

Condition numbers. ``H_p`` is singular when ``d > N`` (rank ≤ min(N, d)), so κ is taken on its
range. Its eigenvalues are computed as squared singular values of the factor
``diag(√ℓ'') G`` — relative error ~ε·√κ instead of ε·κ for ``eigvalsh(H_p)`` — and a κ above
``max_resolved = 1e14`` is reported as "> 1e14, unresolved": the paper's sparse regime reaches
κ ~ 1e50, far beyond any float64 eigensolver; use the log-space bounds of
:mod:`jaxspectra.theory.results` there.

Example:
  >>> import jax
  >>> from jaxspectra.precision import x64_scope
  >>> from jaxspectra.theory.prompt_attention import make_teacher_student
  >>> with x64_scope():
  ...     data = make_teacher_student(jax.random.key(0), N=6, d=4, sigma_p=0.1)
  ...     c = hp_condition_number(data["teacher"], data["X"])
  >>> c.rank, c.resolved
  (4, True)
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxspectra.precision import float64
from jaxspectra.theory._checks import check_finite, check_params
from jaxspectra.theory.prompt_attention import Params, keys
from jaxspectra.theory.softmax_jacobian import softmax_jacobian

MAX_RESOLVED = 1e14


def _as_f64(params: Params, X) -> tuple[Params, jax.Array]:
    check_params(params, X)
    cast = lambda a: jnp.asarray(a, jnp.float64)
    return {k: cast(v) for k, v in params.items() if v is not None}, cast(X)


def _curvature(curvature, N: int) -> jax.Array:
    c = jnp.asarray(curvature, jnp.float64)
    if c.ndim == 0:
        c = jnp.full((N,), c)
    if c.shape != (N,):
        raise ValueError(f"curvature must be a scalar or shape (N,) = ({N},), got {c.shape}")
    check_finite("curvature", c)
    return c


def _example_gradient(K: jax.Array, X: jax.Array, p: jax.Array, v: jax.Array) -> jax.Array:
    """``r = Kᵀ J(a) u`` for one example (K: (n, d), X: (n, d))."""
    a = jax.nn.softmax(K @ p)
    u = X @ v
    return K.T @ (a * (u - a @ u))


@float64
def example_gradients(params: Params, X) -> jax.Array:
    """``G = [r_1 … r_N]ᵀ ∈ ℝ^{N×d}``, ``r_i = K_iᵀ J(a_i) X_i v = ∂f_i/∂p`` (vmap over examples)."""
    params, X = _as_f64(params, X)
    return _example_gradients(params, X)


@jax.jit
def _example_gradients(params: Params, X: jax.Array) -> jax.Array:
    K = keys(params, X)
    return jax.vmap(_example_gradient, in_axes=(0, 0, None, None))(K, X, params["p"], params["v"])


@float64
def F_matrix(params: Params, X) -> jax.Array:
    """``F(p) = G / N`` (eq. 9), shape ``(N, d)``; ``∇L(p) = F(p)ᵀ g(p)``."""
    G = example_gradients(params, X)
    return G / G.shape[0]


@float64
def sigma_min_F(params: Params, X) -> jax.Array:
    """``σ_min(F) = √λ_min(F Fᵀ)``: the N-th singular value of the N×d matrix F.

    Remark 1: when ``d < N`` the rank of F is at most d, so ``σ_min(F) = 0`` exactly (returned as
    0 without an SVD); otherwise the smallest of the N singular values.
    """
    F = F_matrix(params, X)
    N, d = F.shape
    if d < N:
        return jnp.zeros((), jnp.float64)
    return jnp.linalg.svd(F, compute_uv=False)[-1]


@float64
def hp_factor(params: Params, X, curvature=1.0) -> jax.Array:
    """``diag(√ℓ'') G`` (N×d), so that ``H_p = factorᵀ factor``."""
    G = example_gradients(params, X)
    c = _curvature(curvature, G.shape[0])
    return jnp.sqrt(c)[:, None] * G


@float64
def hp_operator(params: Params, X, curvature=1.0) -> jax.Array:
    """``H_p = Σ_i ℓ''_i K_iᵀ J(a_i) u_i u_iᵀ J(a_i) K_i = Gᵀ diag(ℓ'') G`` (d×d, §3.2).

    ``curvature`` is ``ℓ''`` at each example's output (scalar or ``(N,)``; 1 for the squared
    loss). Cost ``O(N n d + N d²)``; equals ``N·∇²L`` at a zero-residual optimum.
    """
    G = example_gradients(params, X)
    c = _curvature(curvature, G.shape[0])
    return (G * c[:, None]).T @ G


@float64
def block_factors(params: Params, X, curvature=1.0) -> tuple[jax.Array, jax.Array]:
    """``B = [J(a_i) K_i]_i`` (Nn×d) and ``C = [K_iᵀ J(a_i) H_i]_i`` (d×Nn) of App. G.2."""
    params, X = _as_f64(params, X)
    return _block_factors(params, X, _curvature(curvature, X.shape[0]))


@jax.jit
def _block_factors(params: Params, X: jax.Array, c: jax.Array) -> tuple[jax.Array, jax.Array]:
    N, n, d = X.shape
    K = keys(params, X)
    a = jax.nn.softmax(jnp.einsum("Nnd,d->Nn", K, params["p"]), axis=-1)
    J = softmax_jacobian(a)  # (N, n, n)
    u = jnp.einsum("Nnd,d->Nn", X, params["v"])
    H = c[:, None, None] * u[:, :, None] * u[:, None, :]  # H_i = ℓ''_i u_i u_iᵀ
    B = jnp.einsum("Nij,Njd->Nid", J, K).reshape(N * n, d)
    C = jnp.einsum("Nji,Njk,Nkl->Nil", K, J, H)  # (N, d, n): K_iᵀ J_i H_i
    C = jnp.transpose(C, (1, 0, 2)).reshape(d, N * n)
    return B, C


@float64
def block_operator_J(params: Params, X, curvature=1.0) -> jax.Array:
    """The block Jacobian ``𝒥(a*) = [A_ik]``, ``A_ik = J(a_i) K_i K_kᵀ J(a_k) H_k`` (eq. 43).

    Dense ``(N n) × (N n)``; its non-zero eigenvalues are those of ``H_p = CB`` (App. G.2).
    """
    B, C = block_factors(params, X, curvature)
    return B @ C


@dataclasses.dataclass(frozen=True)
class ConditionNumber:
    """κ of a PSD matrix on its range, with the eigenvalues it came from.

    ``kappa = lam_max / lam_min`` over the ``rank`` largest eigenvalues; ``resolved`` is False
    when κ exceeds ``max_resolved`` or ``lam_min`` is lost in round-off, and ``text`` then reads
    ``"> 1e14, unresolved"`` (``kappa`` holds the float64 value, which is then only a lower
    estimate of the order of magnitude).
    """

    kappa: float
    lam_min: float
    lam_max: float
    rank: int
    resolved: bool
    text: str


def _condition_from_eigs(lam: np.ndarray, n_dim: int, rank: int | None, max_resolved: float,
                         noise: float) -> ConditionNumber:
    lam = np.sort(np.asarray(lam, np.float64))[::-1]
    lam_max = float(lam[0]) if lam.size else 0.0
    if lam_max <= 0:
        return ConditionNumber(math.inf, 0.0, 0.0, 0, False, "undefined (zero matrix)")
    zero_tol = noise * lam_max
    gap_ok = True
    if rank is None:
        rank = int(np.count_nonzero(lam > zero_tol))
        if rank < lam.size:  # numerical range: demand a clear gap to the "zero" eigenvalues
            nxt = abs(float(lam[rank]))
            # lam[rank-1] > 1e6·nxt, written without a division that overflows when nxt ≈ 0
            gap_ok = rank == 0 or float(lam[rank - 1]) > 1e6 * nxt
    if not 1 <= rank <= lam.size:
        raise ValueError(f"rank must be in [1, {lam.size}], got {rank}")
    lam_min = float(lam[rank - 1])
    kappa = lam_max / lam_min if lam_min > 0 else math.inf
    resolved = bool(gap_ok and lam_min > zero_tol and kappa <= max_resolved)
    text = f"{kappa:.4g}" if resolved else f"> {max_resolved:.0e}, unresolved".replace("e+", "e")
    return ConditionNumber(kappa, lam_min, lam_max, rank, resolved, text)


@float64
def condition_number_on_range(
    H, rank: int | None = None, max_resolved: float = MAX_RESOLVED, is_factor: bool = False
) -> ConditionNumber:
    """κ of the symmetric PSD ``H`` restricted to its range.

    Args:
      H: the matrix, or (``is_factor=True``) a factor ``G`` with ``H = GᵀG`` — preferred: the
        squared singular values of ``G`` carry relative error ~ε·√κ rather than ε·κ.
      rank: the dimension of the range when known (e.g. ``min(N, d)`` for ``H_p``). ``None``
        uses the numerical rank (eigenvalues above ``max(shape)·ε·λ_max``) and then demands a gap
        of 1e6 to the discarded eigenvalues; a full-rank matrix with κ ≳ 1e13 would look singular,
        so pass the structural rank whenever you know it.
      max_resolved: κ above this is reported as unresolved (default 1e14).
    """
    H = np.asarray(H, np.float64)
    check_finite("H", H)
    if H.ndim != 2 or (not is_factor and H.shape[0] != H.shape[1]):
        raise ValueError(f"H must be a square matrix (or a 2-D factor with is_factor=True), got "
                         f"shape {H.shape}")
    eps = np.finfo(np.float64).eps
    if is_factor:
        s = np.linalg.svd(H, compute_uv=False)
        lam = np.zeros(H.shape[1])
        lam[: s.size] = s**2
        # σ has absolute error ~ε·σ_max·dim, so λ = σ² is lost below (ε·dim)²·λ_max
        noise = (eps * max(H.shape)) ** 2
    else:
        if not np.allclose(H, H.T, rtol=1e-10, atol=1e-300):
            raise ValueError("H must be symmetric")
        lam = np.linalg.eigvalsh(H)
        noise = eps * max(H.shape)
    return _condition_from_eigs(lam, H.shape[1], rank, max_resolved, noise)


def hp_condition_number(params: Params, X, curvature=1.0,
                        max_resolved: float = MAX_RESOLVED) -> ConditionNumber:
    """κ(H_p) on its range (rank ``min(N, d)``), from the SVD of :func:`hp_factor`."""
    G = hp_factor(params, X, curvature)
    N, d = G.shape
    return condition_number_on_range(G, rank=min(N, d), max_resolved=max_resolved, is_factor=True)
