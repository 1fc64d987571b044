"""Paper 001's results as functions — with the corrections our tests found (float64 throughout).

Each function returns the quantities on both sides of a statement so that tests (and notebooks)
can check it on random instances; where a statement is false as printed, the printed form is kept
beside the corrected one and ``tests/theory/test_results.py`` holds the counterexample.

Squared loss ℓ = ½(f - y)² throughout (``m = L = ℓ'' = 1``; the general constants are arguments).

Summary of what we found (each verified numerically in the tests):

* **Lemma 2 (PL, eq. 11)** ``½‖∇L‖² ≥ 2m σ²_min(F)(L - L*)``: the derivation (``‖Fᵀg‖ ≥
  σ_min(F)‖g‖`` and ``‖g‖² ≥ 2mN(L - L*)``) gives ``m·N·σ²_min(F)(L - L*)``; the printed ``2m`` is
  implied for N ≥ 2 and **false for N = 1** (then ``½‖∇L‖² = σ²(F)·L`` exactly).
* **Lemma 4 / Theorem 1.** The statement's ``L' = σ²(W) C_σ³ L‖v‖(2C_σ‖v‖ + 3√(2(L₀-L*)/m))`` is
  what the first line of (30) derives; the last line of (30) carries an extra ``C_σ``
  (``C_σ⁴``), harmless but inconsistent — we use the statement's. ``C_p``: the statement puts the
  whole fraction under the square root and uses ``√(1 - c₁c₂)``; the proof (23) gives
  ``C_p = √(2(L₀-L*)/(mN))·LηC_σ²σ(W)‖v‖ / (1 - √(1 - ημ))`` with ``ημ = c₁c₂/L'²`` for the
  printed ``μ = c₁/L'``, ``η = c₂/L'``. Moreover the gradient bound (22) it rests on,
  ``‖∇L‖ ≤ √(2(L-L*)/(mN))·L C_σ² σ(W)‖v‖``, is **false**: the triangle inequality and
  Cauchy–Schwarz give ``√(2(L-L*)/m)`` (no 1/√N) — repeating one example N times leaves ∇L and L
  unchanged while the printed bound shrinks by √N (:func:`gradient_bound_22`). We therefore use
  the proof's form of ``C_p`` with the corrected gradient bound (``C_p`` larger by √N), and the
  statement's ``L'``. Finally, step (32) (``L_{t+1} ≤ L_t - (η/2)‖∇L_t‖²``) needs ``η ≤ 1/L'``
  (``c₂ ≤ 1``), not ``η < 2/L'``. Theorem 1 (ii) / Lemma 5 ("large ‖v‖ = α makes the margin
  hold") fails with these constants: ``σ_min(F) ≤ ‖F‖₂ ≤ C_σ²σ(W)‖v‖/(2√N)`` (‖J‖ ≤ ½), while
  ``γ = 2C_σ²σ(W)‖v‖/√N`` as soon as ``3C_σσ(W)C_p ≥ 2``, and C_p grows with α; so the margin
  needs ``C_p < 1/(6C_σσ(W))``, which we meet only by starting close to p* (small L₀).
* **Proposition 1** is false as stated (:func:`prop1_counterexample`: κ = 400 vs the bound 10¹⁶);
  Lemma 1 gives ``κ(J²H|1⊥) ≥ (μ/L)(z̃_{n-1}/z̃₂)²`` (:func:`prop1_bounds`). In the
  prompt-attention model ``H_i = ℓ''u_iu_iᵀ`` is rank one, so ``μ_i = 0`` and the bound is vacuous.
* **Lemma 3**: (13) and (14) hold; the "sharper Γ = 0 bound" does not (scores (0, -1, -100),
  first token important: ``a_U = 0.269 > 0.212``); its proof replaces every other unimportant
  score by ``m - Δ`` in the *denominator*, which needs them all equal to ``m - Δ``.
* **Theorem 2 / Lemma 7**: Lemma 7's final step sums ``‖w_{i,T}‖²`` over i, which is
  ``N·x_Uᵀ Σ_U x_U`` since Σ_U carries a 1/N: the printed bound is N times too strong (repeating the
  dataset k times multiplies ``λ_min(M̃)`` by k while its right-hand side stays). Our explicit
  Theorem 2 constant (:func:`theorem2_bound`) is
  ``κ(H_p) ≥ (m/L) · [a_I² Σ_i s_i²δ_i⁴ / ‖W⁻¹v‖²] / [7 N C_v (ρ_U² + (n - s_min) a_U²)
  λ_max(P_U Σ_U P_U)]`` with ``C_v = max_i ‖u_i‖²``; it bounds λ_max/λ_min over **all of ℝᵈ**
  (so it is only informative when H_p is non-singular, d ≤ N).
* **Corollary 1**: ``e_{t+1} = (I - (η/N) H_p) e_t`` (L is a mean), so the slow component decays as
  ``(1 - ηλ_min(H_p)/N)^t``; App. H drops the 1/N.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxspectra.precision import float64
from jaxspectra.theory._checks import check_finite, check_ndim, check_params
from jaxspectra.theory.operators import F_matrix, hp_operator
from jaxspectra.theory.prompt_attention import Params, attention_logits, keys, loss
from jaxspectra.theory.softmax_jacobian import (
    lemma1_bounds,
    softmax_jacobian,
    softmax_jacobian_eigvals,
)

LN10 = math.log(10.0)


def _np(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


@jax.jit
def _loss_and_grad_p(params: Params, X, y) -> tuple[jax.Array, jax.Array]:
    return jax.value_and_grad(lambda p: loss({**params, "p": p}, X, y))(params["p"])


def _f64_tree(params: Params) -> Params:
    return {k: jnp.asarray(v, jnp.float64) for k, v in params.items()}


# ----------------------------------------------------------------------------------------------
# §3.1: Lemma 2, Lemma 4 / Theorem 1
# ----------------------------------------------------------------------------------------------


@float64
def lemma2_pl(params: Params, X, y, m: float = 1.0, L_star: float = 0.0) -> dict[str, float]:
    """Both sides of Lemma 2 (eq. 11) at ``params``.

    Returns ``lhs = ½‖∇L‖²``, ``rhs_paper = 2m σ²_min(F)(L - L*)`` (as printed) and
    ``rhs = m N σ²_min(F)(L - L*)`` (what the argument proves; ≥ rhs_paper iff N ≥ 2).
    """
    N = int(np.shape(X)[0])
    check_params(params, X)
    L, grad = _loss_and_grad_p(_f64_tree(params), jnp.asarray(X, jnp.float64),
                               jnp.asarray(y, jnp.float64))
    L = float(L)
    F = _np(F_matrix(params, X))
    sig = 0.0 if F.shape[1] < N else float(np.linalg.svd(F, compute_uv=False)[-1])
    gap = L - L_star
    return {"lhs": 0.5 * float(jnp.sum(grad**2)), "rhs_paper": 2 * m * sig**2 * gap,
            "rhs": m * N * sig**2 * gap, "sigma_min_F": sig, "loss": L}


def _norms(params: Params, X) -> tuple[float, float, float, float]:
    """C_σ = max_i σ_max(X_i), σ_max(W), σ_min(W), ‖v‖."""
    C_sigma = float(np.max(np.linalg.norm(_np(X), ord=2, axis=(1, 2))))
    W = params.get("W")
    if W is None:
        sW_max = sW_min = 1.0
    else:
        s = np.linalg.svd(_np(W), compute_uv=False)
        sW_max, sW_min = float(s[0]), float(s[-1])
    return C_sigma, sW_max, sW_min, float(np.linalg.norm(_np(params["v"])))


@float64
def gradient_bound_22(params: Params, X, y, m: float = 1.0, L: float = 1.0,
                      L_star: float = 0.0) -> dict[str, float]:
    """``‖∇L‖`` beside eq. (22)'s bound as printed (with 1/√N) and as derived (without).

    ``printed = √(2(L-L*)/(mN))·L C_σ² σ(W)‖v‖`` is violated by dataset repetition;
    ``derived = √(2(L-L*)/m)·L C_σ² σ(W)‖v‖`` holds (triangle inequality + Cauchy–Schwarz).
    """
    check_params(params, X)
    N = int(np.shape(X)[0])
    C_sigma, sW, _, v_norm = _norms(params, X)
    L0, grad = _loss_and_grad_p(_f64_tree(params), jnp.asarray(X, jnp.float64),
                                jnp.asarray(y, jnp.float64))
    gap = float(L0) - L_star
    derived = math.sqrt(2 * gap / m) * L * C_sigma**2 * sW * v_norm
    return {"grad_norm": float(jnp.linalg.norm(grad)), "printed": derived / math.sqrt(N),
            "derived": derived}


@float64
def lemma4_constants(params: Params, X, y, c1: float, c2: float, m: float = 1.0,
                     L: float = 1.0, L_star: float = 0.0) -> dict[str, float]:
    """Lemma 4's constants at the initial point ``params`` (``L₀ = loss(params)``).

    We use the **statement's** ``L'`` (= the first line of (30)) and the **proof's** ``C_p`` (23)
    with the gradient bound corrected (no 1/√N): ``C_p = √(2(L₀-L*)/m)·LηC_σ²σ(W)‖v‖ /
    (1 - √(1 - ημ))``, ``μ = c₁/L'``, ``η = c₂/L'`` (as printed), ``M_p = ‖p₀‖ + C_p``,
    ``γ = min(2, 3C_σσ(W)C_p)·C_σ²σ(W)‖v‖/√N`` and the margin ``γ + √(μ/(2m))`` that
    ``σ_min(F(p₀))`` must exceed. Also returned: the statement's ``C_p`` and the proof's display
    of ``L'`` (with ``C_σ⁴``) for comparison. Requires ``c₁ < 1`` and ``0 < c₂ ≤ 1`` (step (32)
    needs ``η ≤ 1/L'``).
    """
    if not (0 < c1 < 1 and 0 < c2 <= 1):
        raise ValueError(f"need 0 < c1 < 1 and 0 < c2 <= 1 (step (32) needs η ≤ 1/L'); got "
                         f"c1={c1}, c2={c2}")
    check_params(params, X)
    N = int(np.shape(X)[0])
    C_s, sW, _, vn = _norms(params, X)
    gap0 = float(loss(params, X, y)) - L_star
    root = math.sqrt(2 * gap0 / m)
    L_prime = sW**2 * C_s**3 * L * vn * (2 * C_s * vn + 3 * root)
    L_prime_proof_display = sW**2 * C_s**4 * vn * (2 * L * C_s * vn + 3 * L * root)
    mu, eta = c1 / L_prime, c2 / L_prime
    em = eta * mu
    C_p = root * L * eta * C_s**2 * sW * vn / (1 - math.sqrt(1 - em))
    C_p_statement = math.sqrt(2 * gap0 / (m * N) * sW * C_s**2 * vn * c2 * L
                              / (L_prime * (1 - math.sqrt(1 - c1 * c2))))
    gamma = min(2.0, 3 * C_s * sW * C_p) * C_s**2 * sW * vn / math.sqrt(N)
    p0 = float(np.linalg.norm(_np(params["p"])))
    return {"C_sigma": C_s, "L_prime": L_prime, "L_prime_proof_display": L_prime_proof_display,
            "mu": mu, "eta": eta, "rate": 1 - em, "C_p": C_p, "C_p_statement": C_p_statement,
            "M_p": p0 + C_p, "gamma": gamma, "margin": gamma + math.sqrt(mu / (2 * m)),
            "sigma_min_F0": float(_sigma_min(params, X)), "loss0": gap0 + L_star}


def _sigma_min(params, X) -> float:
    F = _np(F_matrix(params, X))
    return 0.0 if F.shape[1] < F.shape[0] else float(np.linalg.svd(F, compute_uv=False)[-1])


@float64
def theorem1_run(params: Params, X, y, c1: float, c2: float, steps: int) -> dict[str, Any]:
    """Run GD on p (v, W frozen) with Lemma 4's step; return losses, ‖p_t‖ and the bound.

    ``bound_t = (1 - ημ)^t (L₀ - L*)`` and ``M_p``; Theorem 1 (i) claims ``loss_t ≤ bound_t`` and
    ``‖p_t‖ ≤ M_p`` whenever ``σ_min(F(p₀)) > margin`` (reported as ``margin_holds``).
    """
    c = lemma4_constants(params, X, y, c1, c2)
    eta = c["eta"]
    grad_fn = jax.jit(jax.value_and_grad(lambda p: loss({**params, "p": p}, X, y)))

    def step(p, _):
        val, g = grad_fn(p)
        return p - eta * g, (val, jnp.linalg.norm(p))

    _, (losses, norms) = jax.lax.scan(step, jnp.asarray(params["p"], jnp.float64), None,
                                      length=steps)
    t = np.arange(steps)
    return {"losses": _np(losses), "p_norms": _np(norms),
            "bound": c["loss0"] * c["rate"] ** t, "constants": c,
            "margin_holds": c["sigma_min_F0"] > c["margin"]}


# ----------------------------------------------------------------------------------------------
# Proposition 1 (decoupled conditioning)
# ----------------------------------------------------------------------------------------------


def _tangent_basis(n: int) -> np.ndarray:
    """Orthonormal basis of 1⊥ (n × (n-1))."""
    centring = np.eye(n) - 1.0 / n  # its first n-1 columns span 1⊥
    return np.linalg.qr(centring[:, : n - 1])[0]


@float64
def prop1_kappa(a, H) -> float:
    """Exact κ of the linear map ``J(a)² H`` restricted to the tangent space ``1⊥``.

    ``J²H`` maps into ``1⊥``; on ``1⊥`` it is ``D·H_T`` with ``D = QᵀJ²Q`` and ``H_T = QᵀHQ``
    (Q an orthonormal basis of 1⊥), similar to a symmetric PSD matrix, so its eigenvalues are real
    and κ = λ_max/λ_min (``inf`` when H is singular on 1⊥, e.g. rank one).
    """
    a, H = _np(a), _np(H)
    check_finite("a", a)
    check_finite("H", H)
    n = a.shape[0]
    if H.shape != (n, n):
        raise ValueError(f"H must have shape (n, n) = ({n}, {n}), got {H.shape}")
    Q = _tangent_basis(n)
    J = _np(softmax_jacobian(a))
    D = Q.T @ J @ J @ Q
    HT = Q.T @ H @ Q
    # symmetric form D^{1/2} H_T D^{1/2} (similar to D·H_T): real eigenvalues by eigvalsh
    w, V = np.linalg.eigh(D)
    w = np.clip(w, 0, None)
    S = (V * np.sqrt(w)) @ V.T
    lam = np.linalg.eigvalsh(S @ HT @ S)
    return float(lam[-1] / lam[0]) if lam[0] > 0 else math.inf


@float64
def prop1_bounds(a, mu: float, L: float) -> dict[str, float]:
    """Prop. 1's printed bound ``(μ/L)(max a/min a)²`` beside Lemma 1's ``(μ/L)(z̃_{n-1}/z̃₂)²``.

    Only the latter is a valid lower bound on ``κ(J²H|1⊥)`` (H with eigenvalues in [μ, L]);
    ``(L/μ)(z̃_n/z̃₁)²`` is a valid upper bound (returned as ``upper``).
    """
    a = jnp.asarray(a, jnp.float64)
    lo, hi = (float(b) for b in lemma1_bounds(a))
    ratio = float(jnp.max(a) / jnp.min(a))
    return {"paper": mu / L * ratio**2, "lemma1": mu / L * lo**2, "upper": L / mu * hi**2}


def prop1_counterexample(n: int = 20, small: float = 1e-8) -> dict[str, float]:
    """One dominant token, the others at ``small``, ``H = I``: κ(J²|1⊥) = 400 vs the bound 1e16."""
    a = np.full(n, small)
    a[0] = 1.0 - (n - 1) * small
    lam = _np(softmax_jacobian_eigvals(a))
    kappa_exact = float((lam[-1] / lam[1]) ** 2)  # J² on 1⊥ with H = I, from the exact spectrum
    return {"kappa": kappa_exact, "kappa_dense": prop1_kappa(a, np.eye(n)),
            **prop1_bounds(a, 1.0, 1.0)}


# ----------------------------------------------------------------------------------------------
# Lemma 3 (attention separation)
# ----------------------------------------------------------------------------------------------


def _check_scores_mask(scores, important) -> tuple[np.ndarray, np.ndarray]:
    scores, important = _np(scores), np.asarray(important, bool)
    check_ndim("scores", scores, 2, "(N examples, n tokens)")
    check_finite("scores", scores)
    if important.shape != scores.shape:
        raise ValueError(f"important must have the shape of scores {scores.shape}, got "
                         f"{important.shape}")
    s = important.sum(1)
    if np.any(s == 0) or np.any(s == scores.shape[1]):
        raise ValueError("important must mark at least one and not all tokens of every example")
    return scores, important


def _log_softmax(scores: np.ndarray) -> np.ndarray:
    mx = scores.max(1, keepdims=True)
    return scores - mx - np.log(np.exp(scores - mx).sum(1, keepdims=True))


def attention_separation(scores, important) -> dict[str, Any]:
    """Δ_i, Γ_i, s_i and the global extremes a_I, a_U (§3.2) from scores ``(N, n)``.

    ``scores[i, j] = ⟨K_i[j], p*⟩``; ``important`` is the boolean mask of ``S_i``. ``log_a_I``,
    ``log_a_U`` (natural log) stay exact where the probabilities underflow.
    """
    scores, imp = _check_scores_mask(scores, important)
    inf = np.inf
    m_i = np.where(imp, scores, inf).min(1)
    M_i = np.where(imp, scores, -inf).max(1)
    u_max = np.where(imp, -inf, scores).max(1)
    la = _log_softmax(scores)
    log_a_I = float(np.where(imp, la, inf).min())
    log_a_U = float(np.where(imp, -inf, la).max())
    return {"Delta": m_i - u_max, "Gamma": M_i - m_i, "s": imp.sum(1), "n": scores.shape[1],
            "log_a_I": log_a_I, "log_a_U": log_a_U, "a_I": math.exp(log_a_I),
            "a_U": math.exp(log_a_U)}


def lemma3_bounds(scores, important) -> dict[str, float]:
    """Lemma 3: ``bound13 ≤ a_I``, ``a_U ≤ bound14`` (both hold) and the printed "sharper"
    Γ = 0 bound ``sharper`` (false in general; see the module docstring)."""
    sep = attention_separation(scores, important)
    D, G, s, n = sep["Delta"].min(), sep["Gamma"].max(), sep["s"], sep["n"]
    smin, smax = int(s.min()), int(s.max())
    b13 = 1.0 / (1 + (smax - 1) * math.exp(G) + (n - smin) * math.exp(-D))
    b14 = 1.0 / (1 + smin * math.exp(D))
    sharper = math.exp(-D) / (smin + (n - smax) * math.exp(-D))
    return {"a_I": sep["a_I"], "a_U": sep["a_U"], "bound13": b13, "bound14": b14,
            "sharper": sharper, "Delta_min": float(D), "Gamma_max": float(G)}


# ----------------------------------------------------------------------------------------------
# Assumption B: selection rules, ρ_U (exact and sampled), δ_i
# ----------------------------------------------------------------------------------------------


def select_important(scores, frac: float = 0.5) -> np.ndarray:
    """App. J.3's rule: ``S_i = {j : a_ij ≥ frac · max_j a_ij}`` (from scores, exact)."""
    scores = _np(scores)
    check_ndim("scores", scores, 2, "(N examples, n tokens)")
    if not 0 < frac <= 1:
        raise ValueError(f"frac must be in (0, 1], got {frac}")
    return scores >= scores.max(1, keepdims=True) + math.log(frac)


def important_subspace(K, important, var: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """App. J.3's I: PCA of the important keys, the fewest components explaining ``var``.

    PCA here is uncentred (an SVD of the stacked important rows ``K_{i,S_i}``): I is meant to
    contain the keys themselves, not their deviations from a mean. Returns orthonormal bases
    ``(Q_I: d×k, Q_U: d×(d-k))`` of I and U = I⊥. With r ≥ d stacked rows the thin SVD's Vᵀ is
    already d × d (a full SVD would also build an r × r factor: 2000 ViT images × 50 tokens is
    10⁵ rows, 80 GB); with r < d the full Vᵀ is needed for U.
    """
    K = _np(K)
    check_ndim("K", K, 3, "(N, n, d) keys")
    rows = K[np.asarray(important, bool)]
    _, s, Vt = np.linalg.svd(rows, full_matrices=rows.shape[0] < K.shape[2])
    frac = np.cumsum(s**2) / np.sum(s**2)
    k = int(np.searchsorted(frac, var - 1e-12) + 1)
    return Vt[:k].T, Vt[k:].T


def rho_U_exact(K, important, Q_U) -> float:
    """ρ_U of (B1) exactly: ``max_i max_{x∈U,‖x‖=1} ‖K_{i,S_i}x‖/‖K_{i,S_i^c}x‖``.

    For each i the squared ratio is a Rayleigh quotient of the pencil
    ``(Q_Uᵀ K_Sᵀ K_S Q_U, Q_Uᵀ K_Tᵀ K_T Q_U)``; its largest generalised eigenvalue (Cholesky reduction)
    is the maximum. ``inf`` when some ``K_{i,S_i^c}`` has a null direction in U that ``K_{i,S_i}``
    does not share (dim U > n - s_i).
    """
    K, Q_U = _np(K), _np(Q_U)
    imp = np.asarray(important, bool)
    if Q_U.shape[1] == 0:
        return 0.0
    best = 0.0
    for i in range(K.shape[0]):  # host-side analysis, one small pencil per example
        KS, KT = K[i][imp[i]] @ Q_U, K[i][~imp[i]] @ Q_U
        A, B = KS.T @ KS, KT.T @ KT
        wB = np.linalg.eigvalsh(B)
        if wB[0] <= 1e-12 * max(wB[-1], 1e-300):
            return math.inf
        Lc = np.linalg.cholesky(B)  # B = LLᵀ: the pencil's eigenvalues are those of L⁻¹AL⁻ᵀ
        Mi = np.linalg.solve(Lc, np.linalg.solve(Lc, A).T)
        best = max(best, float(np.linalg.eigvalsh(0.5 * (Mi + Mi.T))[-1]))
    return math.sqrt(max(best, 0.0))


def rho_U_sampled(K, important, Q_U, n_vectors: int = 200, seed: int = 0) -> float:
    """The paper's estimate (App. J.3): the max ratio over ``n_vectors`` random unit x ∈ U."""
    K, Q_U = _np(K), _np(Q_U)
    imp = np.asarray(important, bool)
    if Q_U.shape[1] == 0:
        return 0.0
    g = np.random.default_rng(seed).standard_normal((Q_U.shape[1], n_vectors))
    x = Q_U @ (g / np.linalg.norm(g, axis=0))
    Kx = np.einsum("Nnd,dk->Nnk", K, x)
    num = np.sqrt(np.sum(np.where(imp[:, :, None], Kx, 0.0) ** 2, axis=1))
    den = np.sqrt(np.sum(np.where(imp[:, :, None], 0.0, Kx) ** 2, axis=1))
    return float(np.max(num / den))


def value_margins(u, scores, important) -> np.ndarray:
    """δ_i of (B2): ``min_{j∈S_i} |u_ij - μ_i|`` with ``μ_i = a_iᵀu_i``."""
    u, scores = _np(u), _np(scores)
    a = np.exp(_log_softmax(scores))
    mu = np.sum(a * u, axis=1, keepdims=True)
    return np.where(np.asarray(important, bool), np.abs(u - mu), np.inf).min(1)


# ----------------------------------------------------------------------------------------------
# Assumption B per example, batched (App. J.3's tables on a trained network)
# ----------------------------------------------------------------------------------------------


def _pencils(K: np.ndarray, imp: np.ndarray, Q_U: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(A_i, B_i) = (Q_UᵀK_SᵀK_S Q_U, Q_UᵀK_TᵀK_T Q_U)`` for every example, ``(N, m, m)``."""
    N, n, d = K.shape
    KU = (K.reshape(N * n, d) @ Q_U).reshape(N, n, -1)  # (N, n, m)
    KS = np.where(imp[:, :, None], KU, 0.0)
    KT = KU - KS  # no Gram subtraction: B_i's small eigenvalues decide whether ρ is finite
    return np.swapaxes(KS, 1, 2) @ KS, np.swapaxes(KT, 1, 2) @ KT


def rho_U_per_example(K, important, Q_U) -> np.ndarray:
    """ρ_{U,i} of (B1) for every example: ``max_{x∈U,‖x‖=1} ‖K_{i,S_i}x‖/‖K_{i,S_i^c}x‖``, ``(N,)``.

    The batched form of :func:`rho_U_exact` (whose value is the maximum of this array): the
    largest eigenvalue of the pencil ``(A_i, B_i)`` by a Cholesky reduction of ``B_i``, for all i
    at once. ``inf`` where ``K_{i,S_i^c}`` has a (numerically) null direction in U — always when
    every token is important or ``dim U > n - s_i``; ``0`` when ``dim U = 0``.
    """
    K, Q_U = _np(K), _np(Q_U)
    check_ndim("K", K, 3, "(N, n, d) keys")
    imp = np.asarray(important, bool)
    if imp.shape != K.shape[:2]:
        raise ValueError(f"important must have shape (N, n) = {K.shape[:2]}, got {imp.shape}")
    if Q_U.ndim != 2 or Q_U.shape[0] != K.shape[2]:
        raise ValueError(f"Q_U must be a (d, dim U) basis with d = {K.shape[2]}, got "
                         f"{Q_U.shape}; use important_subspace(K, important)[1]")
    N = K.shape[0]
    if Q_U.shape[1] == 0:
        return np.zeros(N)
    A, B = _pencils(K, imp, Q_U)
    wB = np.linalg.eigvalsh(B)
    singular = wB[:, 0] <= 1e-12 * np.maximum(wB[:, -1], 1e-300)
    eye = np.eye(B.shape[1])
    Lc = np.linalg.cholesky(np.where(singular[:, None, None], eye, B))
    Y = np.linalg.solve(Lc, A)                                   # L⁻¹A
    M = np.linalg.solve(Lc, np.swapaxes(Y, 1, 2))                # L⁻¹(L⁻¹A)ᵀ = L⁻¹AL⁻ᵀ
    top = np.linalg.eigvalsh(0.5 * (M + np.swapaxes(M, 1, 2)))[:, -1]
    return np.where(singular, math.inf, np.sqrt(np.clip(top, 0.0, None)))


def rho_U_sampled_per_example(K, important, Q_U, n_vectors: int = 200,
                              seed: int = 0) -> np.ndarray:
    """The paper's estimate per example (App. J.3): the max ratio over ``n_vectors`` random unit
    x ∈ U, the same x for every example (one draw per head), ``(N,)``; ≤ :func:`rho_U_per_example`.
    Its maximum over examples is :func:`rho_U_sampled`."""
    K, Q_U = _np(K), _np(Q_U)
    imp = np.asarray(important, bool)
    if n_vectors < 1:
        raise ValueError(f"n_vectors must be >= 1, got {n_vectors}; the paper uses 200")
    if Q_U.shape[1] == 0:
        return np.zeros(K.shape[0])
    m = Q_U.shape[1]
    g = np.random.default_rng(seed).standard_normal((m, n_vectors))
    y = g / np.linalg.norm(g, axis=0)  # x = Q_U y: the same draws as rho_U_sampled
    A, B = _pencils(K, imp, Q_U)       # ‖K_S x‖² = yᵀA_i y, ‖K_T x‖² = yᵀB_i y

    def quad(M: np.ndarray) -> np.ndarray:
        return np.sum((M.reshape(-1, m) @ y).reshape(M.shape[0], m, -1) * y[None], axis=1)

    num, den = np.sqrt(np.maximum(quad(A), 0.0)), np.sqrt(np.maximum(quad(B), 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(den > 0, num / np.where(den > 0, den, 1.0), math.inf)
    return r.max(1)


def rho_U_pooled(K, important, Q_U) -> float:
    """ρ_U of the examples stacked: ``max_{x∈U} ‖K_S x‖/‖K_{S^c} x‖`` with the important
    (unimportant) rows of *all* examples in one matrix — the pencil ``(Σ_i A_i, Σ_i B_i)``.

    Not (B1) (which holds per example); one per-head number that App. J.3's wording ("for each
    head, … by sampling 200 random unit vectors") also admits. ≤ max_i ρ_{U,i}."""
    K, Q_U = _np(K), _np(Q_U)
    imp = np.asarray(important, bool)
    if Q_U.shape[1] == 0:
        return 0.0
    A, B = (x.sum(0) for x in _pencils(K, imp, Q_U))
    wB = np.linalg.eigvalsh(B)
    if wB[0] <= 1e-12 * max(wB[-1], 1e-300):
        return math.inf
    Lc = np.linalg.cholesky(B)
    M = np.linalg.solve(Lc, np.linalg.solve(Lc, A).T)
    return float(math.sqrt(max(np.linalg.eigvalsh(0.5 * (M + M.T))[-1], 0.0)))


def vector_value_margins(V, scores, important) -> np.ndarray:
    """δ_i of (B2) for vector values: ``min_{j∈S_i} ‖v_ij − μ_i‖₂`` with ``μ_i = Σ_j a_ij v_ij``.

    ``V`` is ``(N, n, d_v)`` (one value vector per token, e.g. a head's values), ``scores``
    ``(N, n)`` the logits (a = softmax in float64). App. J.3 writes ``|(u_i)_j − μ_i|_2``; for a
    scalar value (d_v = 1) this is :func:`value_margins`. The head's output o = Σ_j a_j v_j has
    ∂o/∂s_j = a_j(v_j − μ) (the columns of Vᵀ J(a)), so ‖v_j − μ‖ is the sensitivity that
    (B2)'s ``|u_j − μ|`` measures for a scalar value.
    """
    V, scores = _np(V), _np(scores)
    check_ndim("V", V, 3, "(N, n, d_v) value vectors")
    if V.shape[:2] != scores.shape:
        raise ValueError(f"V's first two axes {V.shape[:2]} must match scores {scores.shape}")
    a = np.exp(_log_softmax(scores))
    mu = np.einsum("Nn,Nnd->Nd", a, V)
    dist = np.linalg.norm(V - mu[:, None, :], axis=2)
    return np.where(np.asarray(important, bool), dist, np.inf).min(1)


def _secular_root(a: np.ndarray, lo: np.ndarray, hi: np.ndarray, steps: int = 120) -> np.ndarray:
    """The root of ``Σ_j a_j/(λ − a_j) = 0`` in ``(lo, hi)`` (two consecutive sorted entries of
    each row of ``a``) by geometric bisection — the eigenvalue of ``diag(a) − aaᵀ`` there
    (as :func:`softmax_jacobian_eigvals`, for one interval per row)."""
    lo0, hi0 = lo.copy(), hi.copy()
    for _ in range(steps):
        mid = np.sqrt(lo) * np.sqrt(hi)
        mid = np.where((mid <= lo) | (mid >= hi), 0.5 * (lo + hi), mid)
        with np.errstate(divide="ignore", invalid="ignore"):
            g = np.sum(a / (mid[:, None] - a), axis=1)
        right = g > 0  # g decreases on (lo, hi): positive means the root lies to the right
        lo, hi = np.where(right, mid, lo), np.where(right, hi, mid)
    lam = np.sqrt(lo) * np.sqrt(hi)
    lam = np.where(lo0 <= 0.0, 0.0, lam)
    return np.where(hi0 <= lo0, lo0, lam)  # a tie ã_k = ã_{k+1}: the eigenvalue is ã_k


def kappa_J2_tangent(scores) -> np.ndarray:
    """Exact ``κ(J(a)²|1⊥)`` per row of ``scores (N, n)``: ``10**`` :func:`log10_kappa_J2_tangent`
    (``inf`` beyond float64's range)."""
    with np.errstate(over="ignore"):
        return 10.0 ** log10_kappa_J2_tangent(scores)


def log10_kappa_J2_tangent(scores) -> np.ndarray:
    """Exact ``log10 κ(J(a)²|1⊥) = 2 log10(λ_n/λ₂)`` per row of ``scores (N, n)`` (a = softmax in
    float64; ``inf`` when min a underflows to 0).

    λ₂ ∈ [ã₁, ã₂] and λ_n ∈ [ã_{n−1}, ã_n] (interlacing, ã sorted) are the secular equation's
    roots there, found by geometric bisection to relative accuracy ~1e-15 even where ``eigvalsh``
    fails (λ₂ ~ min a ≪ eps·max a); only these two of the n − 1 roots are computed."""
    scores = _np(scores)
    check_ndim("scores", scores, 2, "(N examples, n tokens)")
    check_finite("scores", scores)
    a = np.exp(_log_softmax(scores))
    srt = np.sort(a, axis=1)
    lam2 = _secular_root(a, srt[:, 0], srt[:, 1])
    lamn = _secular_root(a, srt[:, -2], srt[:, -1])
    with np.errstate(divide="ignore"):
        return 2.0 * (np.log10(lamn) - np.log10(lam2))


def log10_kappa_J2_paper(scores) -> np.ndarray:
    """App. J.3's estimate ``κ(J²) ≈ (max a / min a)²`` in log10, from the logits (exact, no
    overflow): ``2 (max s − min s)/ln 10``. An upper bound on the exact κ (Lemma 1)."""
    scores = _np(scores)
    check_ndim("scores", scores, 2, "(N examples, n tokens)")
    return 2.0 * (scores.max(1) - scores.min(1)) / LN10


# ----------------------------------------------------------------------------------------------
# Theorem 2 with an explicit constant (App. G.3, Lemmas 6-7 corrected)
# ----------------------------------------------------------------------------------------------


@float64
def m_tilde(params: Params, X) -> np.ndarray:
    """``M̃ = Σ_i (K_iᵀJ(a_i)u_i)(u_iᵀJ(a_i)K_i)`` (eq. 46): H_p with ℓ'' = 1."""
    return _np(hp_operator(params, X))


@float64
def theorem2_bound(params: Params, X, important, Q_U, m: float = 1.0,
                   L: float = 1.0) -> dict[str, float]:
    """Theorem 2's lower bound on κ(H_p) with the explicit constant of App. G (corrected).

    Returns, in log10 where values can under/overflow: ``log10_lemma6`` (lower bound on
    λ_max(M̃)), ``log10_lemma7`` (the corrected upper bound on λ_min(M̃), with the factor N) and
    ``log10_lemma7_printed`` (without it), ``log10_kappa_bound = log10(m/L) + lemma6 - lemma7``
    and the printed-constant version, plus the exact ρ_U, δ_min, a_I, a_U used. Compare with
    λ_max(H_p)/λ_min(H_p) over **all** of ℝᵈ (:func:`kappa_full_space`).
    """
    N, n, d = check_params(params, X)
    if np.shape(Q_U)[0] != d or np.ndim(Q_U) != 2 or np.shape(Q_U)[1] == 0:
        raise ValueError(f"Q_U must be a (d, dim U) basis with d = {d} and dim U >= 1 (Lemma 7 "
                         f"needs a test vector in U), got shape {np.shape(Q_U)}")
    K = _np(keys(params, X))
    scores = _np(attention_logits(params, X))
    imp = np.asarray(important, bool)
    sep = attention_separation(scores, imp)
    u = _np(jnp.einsum("Nnd,d->Nn", jnp.asarray(X), jnp.asarray(params["v"])))
    delta = value_margins(u, scores, imp)
    rho = rho_U_exact(K, imp, Q_U)
    W = params.get("W")
    Winv_v = _np(params["v"]) if W is None else np.linalg.solve(_np(W), _np(params["v"]))
    s = sep["s"].astype(np.float64)
    with np.errstate(divide="ignore"):
        log10_l6 = (2 * sep["log_a_I"] / LN10 + math.log10(np.sum(s**2 * delta**4))
                    - 2 * math.log10(np.linalg.norm(Winv_v)))
    C_v = float(np.max(np.sum(u**2, axis=1)))
    Q_U = _np(Q_U)
    PU = Q_U @ Q_U.T
    KT = np.where(imp[:, :, None], 0.0, K) @ PU  # rows of K_{i,S_i^c} P_U (others zeroed)
    Sigma_U = np.einsum("Nnd,Nne->de", KT, KT) / N
    lam_SU = float(np.linalg.eigvalsh(PU @ Sigma_U @ PU)[-1])
    m_star = n - int(sep["s"].min())
    # log10(ρ² + m* a_U²) without underflow
    terms = [2 * math.log(rho)] if rho > 0 else []
    terms.append(math.log(m_star) + 2 * sep["log_a_U"])
    log_A = float(np.logaddexp.reduce(terms)) if math.isfinite(rho) else math.inf
    log10_l7_printed = (math.log10(7 * C_v) + log_A / LN10 + math.log10(lam_SU)
                        if lam_SU > 0 else -math.inf)
    log10_l7 = log10_l7_printed + math.log10(N)
    lmL = math.log10(m / L)
    return {"log10_lemma6": float(log10_l6), "log10_lemma7": log10_l7,
            "log10_lemma7_printed": log10_l7_printed,
            "log10_kappa_bound": lmL + log10_l6 - log10_l7,
            "log10_kappa_bound_printed": lmL + log10_l6 - log10_l7_printed,
            "rho_U": rho, "delta_min": float(delta.min()), "a_I": sep["a_I"], "a_U": sep["a_U"],
            "C_v": C_v, "lambda_max_PSigmaP": lam_SU}


@float64
def assumption_b_report(params: Params, X, frac: float = 0.5, var: float = 0.9,
                        n_vectors: int = 200, seed: int = 0) -> dict[str, Any]:
    """Assumption B with App. J.3's selection rules, and Theorem 2's bound when it applies.

    ``S_i`` by :func:`select_important` (``frac`` of the row max), I by :func:`important_subspace`
    (``var`` of the important keys' energy), ρ_U exact (:func:`rho_U_exact`) beside the paper's
    ``n_vectors``-sample estimate, δ_i (B2). When ``dim U = 0`` (e.g. i.i.d. Gaussian keys, where
    the important keys span ℝᵈ) Lemma 7 has no test vector and ``theorem2`` is ``None``.
    """
    N, n, d = check_params(params, X)
    scores = _np(attention_logits(params, X))
    K = _np(keys(params, X))
    imp = select_important(scores, frac)
    Q_I, Q_U = important_subspace(K, imp, var)
    u = _np(jnp.einsum("Nnd,d->Nn", jnp.asarray(X), jnp.asarray(params["v"])))
    delta = value_margins(u, scores, imp)
    ok = Q_U.shape[1] > 0 and not np.all(imp)
    return {"important": imp, "dim_I": Q_I.shape[1], "dim_U": Q_U.shape[1],
            "rho_U": rho_U_exact(K, imp, Q_U), "rho_U_sampled": rho_U_sampled(K, imp, Q_U,
                                                                              n_vectors, seed),
            "delta": delta, "delta_min": float(delta.min()),
            "theorem2": theorem2_bound(params, X, imp, Q_U) if ok else None}


@float64
def kappa_full_space(H) -> float:
    """λ_max/λ_min of a PSD matrix over all of ℝᵈ (``inf`` when singular): Theorem 2's κ."""
    lam = np.linalg.eigvalsh(_np(H))
    return float(lam[-1] / lam[0]) if lam[0] > 0 else math.inf


# ----------------------------------------------------------------------------------------------
# Corollary 1
# ----------------------------------------------------------------------------------------------


def corollary1_rate(lam_min: float, eta: float, N: int) -> float:
    """The slow-mode contraction factor per GD step on the mean loss: ``1 - η λ_min(H_p)/N``."""
    return 1.0 - eta * lam_min / N


@float64
def corollary1_run(params_star: Params, X, y, e0, eta: float, steps: int) -> dict[str, Any]:
    """GD on p from ``p* + e0`` (v, W frozen): the measured ``e_tᵀ v_min`` beside
    ``(1 - ηλ_min/N)^t e_0ᵀv_min`` (corrected) and ``(1 - ηλ_min)^t e_0ᵀv_min`` (App. H)."""
    N = int(np.shape(X)[0])
    H = _np(hp_operator(params_star, X))
    lam, V = np.linalg.eigh(H)
    v_min, lam_min = V[:, 0], float(lam[0])
    p_star = jnp.asarray(params_star["p"], jnp.float64)
    grad_fn = jax.grad(lambda p: loss({**params_star, "p": p}, X, y))

    def step(p, _):
        return p - eta * grad_fn(p), p

    _, ps = jax.jit(lambda p0: jax.lax.scan(step, p0, None, length=steps))(
        p_star + jnp.asarray(e0, jnp.float64))
    proj = (_np(ps) - _np(p_star)) @ v_min
    t = np.arange(steps)
    return {"measured": proj, "predicted": proj[0] * corollary1_rate(lam_min, eta, N) ** t,
            "predicted_paper": proj[0] * (1 - eta * lam_min) ** t, "lam_min": lam_min,
            "lam_max": float(lam[-1])}


# ----------------------------------------------------------------------------------------------
# The decoupled regime (K_i K_jᵀ = 0 for i ≠ j)
# ----------------------------------------------------------------------------------------------


@float64
def per_example_attention_operators(params: Params, X, curvature=1.0) -> jax.Array:
    """``A_ii = J(a_i) K_i K_iᵀ J(a_i) H_i`` for every example, ``(N, n, n)`` (eq. 43's diagonal).

    When keys of different examples are orthogonal (``K_iK_jᵀ = 0``) 𝒥 is block diagonal with
    these blocks, so Prop. 1's per-example linearisation is exact; with orthonormal key rows
    (``K_iK_iᵀ = I``) ``A_ii = J(a_i)² H_i`` — Prop. 1's form.
    """
    check_params(params, X)
    K = keys(params, X)
    a = jax.nn.softmax(jnp.einsum("Nnd,d->Nn", K, params["p"]), axis=-1)
    J = softmax_jacobian(a)
    u = jnp.einsum("Nnd,d->Nn", X, params["v"])
    H = jnp.asarray(curvature, jnp.float64)[..., None, None] * u[:, :, None] * u[:, None, :]
    return jnp.einsum("Nij,Njd,Nkd,Nkl,Nlm->Nim", J, K, K, J, H)


__all__ = [
    "assumption_b_report", "attention_separation", "corollary1_rate", "corollary1_run", "gradient_bound_22",
    "important_subspace", "kappa_full_space", "lemma2_pl", "lemma3_bounds", "lemma4_constants",
    "m_tilde", "per_example_attention_operators", "prop1_bounds", "prop1_counterexample",
    "prop1_kappa", "rho_U_exact", "rho_U_sampled", "select_important", "theorem1_run",
    "theorem2_bound", "value_margins", "kappa_J2_tangent", "log10_kappa_J2_paper",
    "log10_kappa_J2_tangent",
    "rho_U_per_example", "rho_U_pooled", "rho_U_sampled_per_example", "vector_value_margins",
]
