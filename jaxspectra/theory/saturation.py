"""Paper 004 §4.2 / App. C: logit scale, softmax saturation, Propositions 4.1 and 4.2 (float64).

The extraction lost every displayed formula of §4.2 and App. C; what follows is derived here and
checked numerically (``tests/theory/test_saturation.py``, against ``jax.jacobian``).

**Logit scale** (§4.2). For ``S = X W_Q W_Kᵀ Xᵀ · scale`` (``scale = 1/√d_h`` in a transformer):
``‖S‖₂ ≤ scale·‖X‖₂²‖W_Q‖₂‖W_K‖₂`` and ``|S_ij| ≤ scale·‖x_i‖‖x_j‖‖W_Q‖₂‖W_K‖₂``
(:func:`logit_bounds`). Under Stiefel (``WᵀW = I``) both norms are 1; under DGram the singular
values are the column norms and are free.

**Saturation bound.** For a logit row ``z`` with gap ``δ = z_(1) − z_(2)`` (largest minus second
largest), ``p = softmax(z)`` and ``J = diag(p) − ppᵀ``:

* ``p_max ≥ 1/(1 + (n−1)e^{−δ})`` (each of the n−1 others is at most ``e^{−δ}`` times it);
* ``J ⪰ 0``, so ``‖J‖_F ≤ tr J = 1 − ‖p‖² ≤ 1 − p_max²``;

hence ``‖J‖_F ≤ f(δ) = 1 − (1 + (n−1)e^{−δ})^{−2} ≤ 2(n−1)e^{−δ}`` (:func:`saturation_bound`). It is
asymptotically tight for n = 2 (``‖J‖_F = 2p(1−p)``, ``f = (1−p)(1+p)``) and within a factor ~2
for n tokens tied at gap δ. What the text keeps of the paper ("p approaches a one-hot vector
exponentially fast") needs the factor n−1: nothing saturates until ``δ > ln(n−1)`` (6.9 at
n = 1024); a bound without it fails: 1024 tokens, 1023 tied at gap 6, give ‖J‖_F = 0.204, 41× 2e^{−6}.

**Proposition 4.1** (Stiefel, ‖x_i‖ ≤ R): every logit lies in ``[−B, B]``, ``B = scale·R²``, so
``δ ≤ 2B`` and every row keeps ``p_max ≤ 1/(1 + (n−1)e^{−2B})``; with ``‖J‖_F ≥ tr J/√(n−1)`` (J has
rank ≤ n−1) this gives ``‖J‖_F ≥ c(n, B) = (1 − p_max)/√(n−1)``, independent of W_Q, W_K
(:func:`prop41_lower_bound`).

**Proposition 4.2** (DGram): ``W_Q = W_K = s·[I_{d_h}; 0]`` has diagonal Gram ``s²I`` and
``‖W‖₂ = s``; with bounded tokens whose first coordinates differ, the first row's gap grows as s²
and ``‖J‖_F → 0`` (:func:`prop42_construction`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxspectra.precision import float64
from jaxspectra.theory._checks import check_finite


def _row(name: str, z) -> np.ndarray:
    z = np.asarray(z, np.float64)
    if z.ndim != 1 or z.size < 2:
        raise ValueError(f"{name} must be a 1-D logit row with n >= 2 entries, got shape {z.shape}")
    check_finite(name, z)
    return z


def logit_gap(z) -> float:
    """``δ = z_(1) − z_(2)``: largest logit minus the second largest."""
    z = np.sort(_row("z", z))
    return float(z[-1] - z[-2])


@jax.jit
def _jac_fro(z: jax.Array) -> jax.Array:
    return jnp.linalg.norm(jax.jacobian(jax.nn.softmax)(z))


@float64
def softmax_jacobian_fro(z) -> float:
    """``‖∂softmax(z)/∂z‖_F`` by ``jax.jacobian`` (float64).

    Its entries ``p_i(δ_ij − p_j)`` carry absolute error ~eps (``p − p²`` cancels near p = 1), so
    compare with bounds to an absolute tolerance of a few ``n·eps``, not a relative one.
    """
    return float(_jac_fro(jnp.asarray(_row("z", z))))


def saturation_bound(gap: float | np.ndarray, n: int) -> np.ndarray | float:
    """``f(δ) = 1 − (1 + (n−1)e^{−δ})^{−2}``, an upper bound on ``‖J_softmax‖_F`` at gap ``δ ≥ 0``."""
    if n < 2:
        raise ValueError(f"n must be >= 2 tokens, got {n}")
    g = np.asarray(gap, np.float64)
    if np.any(g < 0):
        raise ValueError("the logit gap is >= 0 by definition (largest minus second largest)")
    # (n−1)e^{−δ} via logs so that huge gaps give 0, not overflow; 1 − (1+t)^{−2} = t(2+t)/(1+t)²
    t = np.exp(math.log(n - 1) - g)
    out = t * (2 + t) / (1 + t) ** 2
    return float(out) if out.ndim == 0 else out


def logit_bounds(x, wq, wk, scale: float = 1.0) -> dict:
    """§4.2's logit-scale bounds beside the logits ``S = scale·X W_Q W_Kᵀ Xᵀ``.

    Returns ``S``, ``spec`` = ‖S‖₂, ``spec_bound`` = scale·‖X‖₂²‖W_Q‖₂‖W_K‖₂, and the entrywise
    ``entry_ratio_max`` = max |S_ij| / (scale·‖x_i‖‖x_j‖‖W_Q‖₂‖W_K‖₂) (≤ 1).
    """
    x, wq, wk = (np.asarray(a, np.float64) for a in (x, wq, wk))
    if x.ndim != 2 or wq.shape != wk.shape or wq.shape[0] != x.shape[1]:
        raise ValueError(f"need X (n, d), W_Q and W_K (d, d_h); got {x.shape}, {wq.shape}, "
                         f"{wk.shape}")
    s = scale * x @ wq @ wk.T @ x.T
    nq, nk = np.linalg.norm(wq, 2), np.linalg.norm(wk, 2)
    rn = np.linalg.norm(x, axis=1)
    denom = scale * np.outer(rn, rn) * nq * nk
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(denom > 0, np.abs(s) / denom, 0.0)
    return {"S": s, "spec": float(np.linalg.norm(s, 2)),
            "spec_bound": float(scale * np.linalg.norm(x, 2) ** 2 * nq * nk),
            "entry_ratio_max": float(ratio.max())}


def prop41_lower_bound(n: int, radius: float, scale: float = 1.0) -> float:
    """``c(n, B) = (1 − p̄)/√(n−1)``, ``p̄ = 1/(1 + (n−1)e^{−2B})``, ``B = scale·R²``: a lower bound on
    ``‖J_softmax‖_F`` of every row under Stiefel W_Q, W_K and tokens with ‖x_i‖ ≤ R."""
    if n < 2 or radius < 0:
        raise ValueError(f"need n >= 2 and radius >= 0, got n={n}, radius={radius}")
    t = (n - 1) * math.exp(-2 * scale * radius**2)
    return (t / (1 + t)) / math.sqrt(n - 1)


def prop42_construction(s: float, n: int = 4, d: int = 6, d_h: int = 3, radius: float = 1.0,
                        scale: float | None = None) -> dict:
    """Paper 004 App. C's DGram example: ``W_Q = W_K = s·[I_{d_h}; 0]`` and bounded tokens.

    Tokens: ``x_1 = R e₁``, ``x_j = R(c_j e₁ + √(1−c_j²) e₂)`` with ``c_j = 1 − j/n`` (j ≥ 2). Returns
    the weights, the Gram matrix of W_Q, the first logit row, its gap (``s²R²(1 − c_2)·scale``) and
    ``‖J_softmax‖_F`` at that row. ``scale`` defaults to ``1/√d_h``.
    """
    if not (d >= d_h >= 2 and n >= 2 and s > 0 and radius > 0):
        raise ValueError(f"need d >= d_h >= 2, n >= 2, s > 0, radius > 0; got d={d}, d_h={d_h}, "
                         f"n={n}, s={s}, radius={radius}")
    scale = 1.0 / math.sqrt(d_h) if scale is None else scale
    w = s * np.eye(d, d_h)
    x = np.zeros((n, d))
    x[0, 0] = radius
    for j in range(1, n):
        c = 1 - j / n
        x[j, 0], x[j, 1] = radius * c, radius * math.sqrt(1 - c * c)
    row = (scale * x @ w @ w.T @ x.T)[0]
    return {"wq": w, "wk": w, "gram": w.T @ w, "x": x, "row": row, "gap": logit_gap(row),
            "jac_fro": softmax_jacobian_fro(row)}
