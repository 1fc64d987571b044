"""Independent references for Manifold Muon (paper 004, App. A): NumPy float64 and cvxpy.

Written from ``../shared/papers/README.md`` (the algorithm as the authors' public code runs it),
not from :mod:`jaxspectra.optim.manifold_muon`: a plain per-matrix loop with an SVD sign, so the
tests compare two independent transcriptions.

* :func:`np_sign` — the polar factor U Vᵀ of the thin SVD (singular values below ``rtol · σ_max``
  map to 0, a partial isometry).
* :func:`np_manifold_muon_step` — one optimiser step for one matrix: sum-form Nesterov momentum,
  Λ₀ = −¼·P(WᵀG + GᵀW), K dual-ascent steps with the (1 − k/K) anneal and the RMS early stop,
  then W ← retract(W − η·A).
* :func:`cvxpy_direction` — the constrained problem solved by a convex solver:
  max ⟨G, A⟩ s.t. σ_max(A) ≤ 1, P(WᵀA + AᵀW) = 0.
"""

from __future__ import annotations

import numpy as np


def np_sign(x: np.ndarray, rtol: float = 1e-12) -> np.ndarray:
    """Polar factor (matrix sign) by SVD in float64, batched over leading axes."""
    u, s, vt = np.linalg.svd(np.asarray(x, np.float64), full_matrices=False)
    keep = s > rtol * np.maximum(s[..., :1], np.finfo(np.float64).tiny)
    return (u * keep[..., None, :]) @ vt


def np_project(m: np.ndarray, manifold: str) -> np.ndarray:
    """The self-adjoint projector P on symmetric n×n matrices."""
    if manifold == "stiefel":
        return m
    eye = np.eye(m.shape[-1])
    if manifold == "dgram":
        return m * (1.0 - eye)
    if manifold == "oblique":
        return m * eye
    raise ValueError(manifold)


def np_retract(x: np.ndarray, manifold: str, retraction: str = "default") -> np.ndarray:
    """Retractions (tall x): Stiefel polar; oblique columns/‖col‖; DGram Q·diag(QᵀX) or sorted."""
    if manifold == "stiefel":
        return np_sign(x)
    if manifold == "oblique":
        return x / np.maximum(np.linalg.norm(x, axis=0, keepdims=True), 1e-8)
    if manifold == "dgram":
        if retraction == "sorted":
            u, s, vt = np.linalg.svd(x, full_matrices=False)
            return (u @ vt) * s[None, :]
        q = np_sign(x)
        return q * np.diag(q.T @ x)[None, :]
    raise ValueError(manifold)


def np_direction(
    w: np.ndarray,
    g: np.ndarray,
    manifold: str,
    *,
    inner_steps: int = 20,
    alpha: float = 0.1,
    tol: float = 1e-6,
    early_stop: bool = True,
    safeguard: bool = False,
    lam0: np.ndarray | None = None,
) -> tuple[np.ndarray, float, int, np.ndarray]:
    """Dual ascent for A = argmax ⟨G, A⟩, ‖A‖₂ ≤ 1, P(WᵀA + AᵀW) = 0 (tall W, G).

    Returns (A, RMS violation of A, sign evaluations used, Λ that produced A).
    """
    P = lambda m: np_project(m, manifold)
    lam = -0.25 * P(w.T @ g + g.T @ w) if lam0 is None else lam0.copy()
    best = None
    used = 0
    for k in range(inner_steps):
        lam_s = 0.5 * (lam + lam.T)
        a = np_sign(g + 2.0 * w @ P(lam_s))
        h = P(w.T @ a + a.T @ w)
        viol = float(np.sqrt(np.mean(h**2)))
        used = k + 1
        if best is None or not safeguard or viol < best[1]:
            best = (a, viol, lam.copy())
        if early_stop and viol < tol:
            break
        lam = lam - alpha * (1.0 - k / inner_steps) * h
    a, viol, lam_a = best
    return a, viol, used, lam_a


def np_manifold_muon_step(
    w: np.ndarray,
    grad: np.ndarray,
    buf: np.ndarray,
    lr: float,
    manifold: str,
    *,
    momentum: float = 0.95,
    retraction: str = "default",
    **direction_kw,
) -> tuple[np.ndarray, np.ndarray, float, int]:
    """One step for one matrix (any orientation). Returns (W_new, buf_new, violation, steps)."""
    w = np.asarray(w, np.float64)
    grad = np.asarray(grad, np.float64)
    buf = momentum * np.asarray(buf, np.float64) + grad  # buf ← μ·buf + g
    g = grad + momentum * buf  # G = g + μ·buf (sum-form Nesterov)
    wide = w.shape[0] < w.shape[1]
    wt, gt = (w.T, g.T) if wide else (w, g)
    a, viol, used, _ = np_direction(wt, gt, manifold, **direction_kw)
    new = np_retract(wt - lr * a, manifold, retraction)
    return (new.T if wide else new), buf, viol, used


def cvxpy_direction(w: np.ndarray, g: np.ndarray, manifold: str) -> tuple[np.ndarray, float]:
    """max ⟨G, A⟩ s.t. σ_max(A) ≤ 1 and P(WᵀA + AᵀW) = 0, by cvxpy (tall W). Returns (A, value)."""
    import cvxpy as cp

    m, n = w.shape
    a = cp.Variable((m, n))
    gram = w.T @ a + a.T @ w
    if manifold == "stiefel":
        cons = [gram == 0]
    elif manifold == "dgram":
        cons = [gram[i, j] == 0 for i in range(n) for j in range(i + 1, n)]
    elif manifold == "oblique":
        cons = [cp.diag(gram) == 0]
    else:
        raise ValueError(manifold)
    prob = cp.Problem(cp.Maximize(cp.sum(cp.multiply(g, a))), [cp.sigma_max(a) <= 1] + cons)
    prob.solve(solver=cp.CLARABEL) if "CLARABEL" in cp.installed_solvers() else prob.solve()
    return np.asarray(a.value), float(prob.value)
