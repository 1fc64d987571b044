"""Paper 003 (MSign) §4 and App. B as checkable functions, in float64.

Every function is small and pure; the tests (``tests/theory/test_msign_bounds.py``) compare each
against an independent ground truth (SVD, dense products, ``jax.jacobian``, NumPy float64).

* Theorem 4.4 (eq. 5; the extraction lost the √): ``‖W‖₂ = ‖W‖_F / √srank(W)`` —
  :func:`spectral_from_stable_rank`.
* Definition 3.2: ``Align(A, B) = |v_{A,1}ᵀ u_{B,1}|`` — :func:`align`.
* Lemma B.1 (eq. 20): ``‖AB‖₂ ≥ ‖A‖₂‖B‖₂·Align(A, B)`` — :func:`lemma_b1_bound` (true).
* Theorem 4.2 (eq. 4): ``‖J_L⋯J_1‖₂ ≥ (aM)^L / a`` with ``M ≤ min ‖J_ℓ‖₂`` and
  ``a ≤ min Align(J_{ℓ+1}, J_ℓ)`` — :func:`thm42_bound`, :func:`thm42_inputs`. **False in general**:
  :func:`thm42_counterexample` (bound 4, true norm 2). The proof (eq. 24) applies Lemma B.1 to
  ``J_L`` and the *partial product* ``P_{L-1} = J_{L-1}⋯J_1``, so it needs the alignment with the
  whole product. With ``a_ℓ = Align(J_{ℓ+1}, P_ℓ)`` (:func:`chained_alignments`) the recursion gives
  ``‖P_L‖₂ ≥ Π‖J_ℓ‖₂ · Π a_ℓ`` for *every* chain (:func:`chained_bound`); hence eq. 4 holds whenever
  ``min_ℓ Align(J_{ℓ+1}, P_ℓ) ≥ a`` (:func:`thm42_condition_holds`).
* Theorem 4.5 (eqs. 6–7, proof eq. 55): the attention-layer Jacobian bound —
  :func:`attention_bounds`. Eq. 7 drops the ``‖H‖₂`` that its proof carries (eq. 54):
  ``‖∂A/∂H‖ ≤ 4χ‖W_Q‖₂‖W_K‖₂‖H‖₂/√d_k``; the proof's margin is that of the softmax's argument
  ``S/√d_k``, not of ``S`` (both are returned): with ``H = (1, −1)ᵀ``, ``W_Q = W_K = 2e₁ᵀ``,
  ``d_k = 64`` the margin of S is 8, the softmax's is 1, and eqs. 6–7 as printed give 1.0009 below
  the true ‖∂Y/∂H‖ = 1.393 (eq. 55 with the proof's margin gives 2.47). Norms of the derivative maps are the 2-norms of the
  Jacobians of ``vec`` (Frobenius in, Frobenius out), for which eqs. 33–55 hold step by step.
* Theorem 4.6 (eq. 8): ``‖J_MLP‖₂ ≤ L_φ ‖W₁‖_F‖W₂‖_F / √(srank W₁ · srank W₂)`` —
  :func:`mlp_bound`, with :func:`activation_lipschitz` (GELU 1.1289 at z = √2, SiLU 1.0998 at
  z ≈ 2.40; the paper's "near z ≈ −0.75" and "near 1.28" are where neither maximum is).
* Theorem 4.10: rank-≤r hidden and cohidden states give rank-≤r gradients of W_Q, W_K, W_V, W_O —
  :func:`attention_weight_grads` (checked by SVD rank in the tests).
* Theorem 4.12 (eq. 12): in the aligned linear model ``W = U diag(s) Vᵀ``, gradient
  ``U diag(c) Vᵀ`` with ``c_i < 0``: if ``c₁/c_i > s₁/s_i`` for all i > 1, one GD step lowers srank
  for every η > 0, not only to first order (each ratio ``(s_i + η|c_i|)/(s₁ + η|c₁|)`` falls below
  ``s_i/s₁``); if every inequality is reversed, srank rises. Sufficient, not necessary:
  :func:`thm412_condition`, :func:`srank_after_step`.

Layout: layer Jacobians are given in application order ``J_1, …, J_L`` (``J_1`` acts first), so the
total Jacobian is ``J_L ⋯ J_1``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxspectra.precision import float64
from jaxspectra.theory._checks import check_finite

ArrayLike = jax.Array | np.ndarray


def _mat(name: str, x: ArrayLike) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got shape {arr.shape}")
    check_finite(name, arr)
    return arr


def _top(x: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    u, s, vt = np.linalg.svd(x)
    return float(s[0]), u[:, 0], vt[0]


def spectral_from_stable_rank(w: ArrayLike) -> float:
    """Theorem 4.4 (eq. 5): ``‖W‖_F / √srank(W)`` with srank = ‖W‖_F²/‖W‖₂² (Def. 3.1).

    Equals ``‖W‖₂`` identically; computed here from the Frobenius norm and the stable rank so the
    identity (not its definition) is what the tests check against the SVD.
    """
    w = _mat("w", w)
    fro = float(np.sqrt(np.sum(w * w)))
    if fro == 0.0:
        return 0.0
    srank = fro**2 / float(np.linalg.norm(w, 2)) ** 2
    return fro / math.sqrt(srank)


def align(a: ArrayLike, b: ArrayLike) -> float:
    """Definition 3.2 (eq. 3): ``|v_{A,1}ᵀ u_{B,1}|`` for the product ``AB``."""
    a, b = _mat("a", a), _mat("b", b)
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"AB is undefined: a is {a.shape}, b is {b.shape}")
    return abs(float(_top(a)[2] @ _top(b)[1]))


def lemma_b1_bound(a: ArrayLike, b: ArrayLike) -> float:
    """Lemma B.1 (eq. 20): the lower bound ``‖A‖₂‖B‖₂·Align(A, B)`` on ``‖AB‖₂``."""
    a, b = _mat("a", a), _mat("b", b)
    return _top(a)[0] * _top(b)[0] * align(a, b)


def product(jacobians: Sequence[ArrayLike]) -> np.ndarray:
    """Total Jacobian ``J_L ⋯ J_1`` of layer Jacobians given in application order."""
    if len(jacobians) < 1:
        raise ValueError("jacobians must hold at least one matrix (J_1 first)")
    out = _mat("jacobians[0]", jacobians[0])
    for i, j in enumerate(jacobians[1:], start=1):
        j = _mat(f"jacobians[{i}]", j)
        if j.shape[1] != out.shape[0]:
            raise ValueError(f"jacobians[{i}] has {j.shape[1]} columns but the product so far has "
                             f"{out.shape[0]} rows; list them in application order, J_1 first")
        out = j @ out
    return out


def thm42_bound(M: float, a: float, L: int) -> float:
    """Theorem 4.2's printed lower bound (eq. 4): ``(aM)^L / a = M^L a^(L−1)``."""
    if L < 1 or a <= 0 or M < 0:
        raise ValueError(f"need L >= 1, a > 0, M >= 0; got L={L}, a={a}, M={M}")
    return M**L * a ** (L - 1)


def thm42_inputs(jacobians: Sequence[ArrayLike]) -> tuple[float, float]:
    """The largest admissible ``(M, a)`` of Theorem 4.2: ``min ‖J_ℓ‖₂`` and the min adjacent
    alignment ``min_ℓ Align(J_{ℓ+1}, J_ℓ)`` (application order)."""
    mats = [_mat(f"jacobians[{i}]", j) for i, j in enumerate(jacobians)]
    M = min(_top(j)[0] for j in mats)
    a = min((align(mats[i + 1], mats[i]) for i in range(len(mats) - 1)), default=1.0)
    return M, a


def chained_alignments(jacobians: Sequence[ArrayLike]) -> list[float]:
    """``a_ℓ = Align(J_{ℓ+1}, P_ℓ)`` with ``P_ℓ = J_ℓ⋯J_1``: the alignment eq. 24 actually uses."""
    mats = [_mat(f"jacobians[{i}]", j) for i, j in enumerate(jacobians)]
    out, p = [], mats[0]
    for j in mats[1:]:
        out.append(align(j, p))
        p = j @ p
    return out


def chained_bound(jacobians: Sequence[ArrayLike]) -> float:
    """``Π_ℓ ‖J_ℓ‖₂ · Π_ℓ Align(J_{ℓ+1}, P_ℓ)`` ≤ ‖J_L⋯J_1‖₂ for every chain (Lemma B.1, applied
    as in eq. 24 to the partial products)."""
    mats = [_mat(f"jacobians[{i}]", j) for i, j in enumerate(jacobians)]
    return float(np.prod([_top(j)[0] for j in mats]) * np.prod(chained_alignments(mats)))


def thm42_condition_holds(jacobians: Sequence[ArrayLike], a: float) -> bool:
    """The corrected hypothesis: every ``Align(J_{ℓ+1}, P_ℓ) ≥ a``. Under it (and ‖J_ℓ‖₂ ≥ M),
    eq. 4 ``‖J_L⋯J_1‖₂ ≥ (aM)^L/a`` holds."""
    return all(x >= a for x in chained_alignments(jacobians))


def thm42_counterexample() -> dict:
    """The erratum's counterexample to Theorem 4.2 (three 2×2 layers; M = 2, a = 1/√2).

    ``u = (1,1)/√2, v = (1,−1)/√2, J₁ = 2u e₁ᵀ, J₂ = diag(2,1), J₃ = 2e₁vᵀ``: eq. 4 promises 4, the
    product ``J₃J₂J₁ = 2 e₁e₁ᵀ`` has norm 2; ``Align(J₃, J₂J₁) = 1/√10 < a``.
    """
    u = np.array([1.0, 1.0]) / math.sqrt(2)
    v = np.array([1.0, -1.0]) / math.sqrt(2)
    e1 = np.array([1.0, 0.0])
    js = [2 * np.outer(u, e1), np.diag([2.0, 1.0]), 2 * np.outer(e1, v)]
    M, a = thm42_inputs(js)
    return {"jacobians": js, "M": M, "a": a, "bound": thm42_bound(M, a, 3),
            "true_norm": float(np.linalg.norm(product(js), 2)),
            "chained_alignments": chained_alignments(js), "chained_bound": chained_bound(js)}


def aligned_chain(key: jax.Array, L: int, d: int, M: float, a: float) -> list[np.ndarray]:
    """Random layer Jacobians with ``‖J_ℓ‖₂ = M`` and ``Align(J_{ℓ+1}, J_ℓ) = a`` exactly.

    ``J_ℓ = M u_ℓ v_ℓᵀ + (M/2)·R_ℓ`` where ``R_ℓ`` is a random matrix with norm ≤ 1 acting on the
    complement of ``v_ℓ`` into the complement of ``u_ℓ``, and ``v_{ℓ+1} = a u_ℓ + √(1−a²) w`` with
    ``w ⟂ u_ℓ``. (Used by the notebook to test eq. 4 on random aligned products.)
    """
    if not (0 < a <= 1) or d < 3 or L < 1:
        raise ValueError(f"need 0 < a <= 1, d >= 3, L >= 1; got a={a}, d={d}, L={L}")
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())

    def unit_perp(x: np.ndarray) -> np.ndarray:
        y = rng.standard_normal(d)
        y -= (y @ x) * x
        return y / np.linalg.norm(y)

    v = rng.standard_normal(d)
    v /= np.linalg.norm(v)
    out = []
    for _ in range(L):
        u = rng.standard_normal(d)
        u /= np.linalg.norm(u)
        pu = np.eye(d) - np.outer(u, u)
        pv = np.eye(d) - np.outer(v, v)
        r = pu @ rng.standard_normal((d, d)) @ pv
        r /= np.linalg.norm(r, 2)
        out.append(M * np.outer(u, v) + 0.5 * M * r)
        v = a * u + math.sqrt(max(1 - a * a, 0.0)) * unit_perp(u)
    return out


# --- Theorem 4.5: attention ---------------------------------------------------------------------


def _softmax_rows(x: jax.Array) -> jax.Array:
    return jax.nn.softmax(x, axis=-1)


def _margin(s: np.ndarray) -> float:
    top2 = np.sort(s, axis=-1)[:, -2:]
    return float(np.min(top2[:, 1] - top2[:, 0]))


def _chi(n: int, gamma: float) -> float:
    return min((n - 1) * math.exp(-gamma), 1.0)


@jax.jit
def _attention_jacobians_jit(h, wq, wk, wv, wo):
    scale = 1.0 / math.sqrt(wq.shape[1])

    def attn(x):
        return _softmax_rows(x @ wq @ wk.T @ x.T * scale)

    def out(x):
        return attn(x) @ x @ wv @ wo

    return jax.jacobian(attn)(h), jax.jacobian(out)(h), attn(h)


@float64
def attention_jacobians(h: ArrayLike, wq: ArrayLike, wk: ArrayLike, wv: ArrayLike,
                        wo: ArrayLike) -> dict:
    """The vec-Jacobians of ``A(H) = softmax(HW_QW_Kᵀ Hᵀ/√d_k)`` and ``Y = A H W_V W_O``.

    Returns ``{"dA": (n·n, n·d), "dY": (n·d_o, n·d), "A": (n, n)}`` (float64, ``jax.jacobian``).
    """
    h, wq, wk, wv, wo = (jnp.asarray(_mat(nm, x)) for nm, x in
                         zip(("h", "wq", "wk", "wv", "wo"), (h, wq, wk, wv, wo)))
    n, d = h.shape
    dk = wq.shape[1]
    if wq.shape != (d, dk) or wk.shape != (d, dk) or wv.shape[0] != d or wo.shape[0] != wv.shape[1]:
        raise ValueError(f"shapes must be H (n, d), W_Q, W_K (d, d_k), W_V (d, d_v), W_O (d_v, d_o);"
                         f" got {h.shape}, {wq.shape}, {wk.shape}, {wv.shape}, {wo.shape}")

    dA, dY, a = _attention_jacobians_jit(h, wq, wk, wv, wo)
    dA, dY = dA.reshape(n * n, n * d), dY.reshape(-1, n * d)
    return {"dA": np.asarray(dA), "dY": np.asarray(dY), "A": np.asarray(a)}


def attention_bounds(h: ArrayLike, wq: ArrayLike, wk: ArrayLike, wv: ArrayLike,
                     wo: ArrayLike) -> dict:
    """Theorem 4.5's quantities beside the measured Jacobian norms (float64).

    Keys: ``dA_norm`` (‖∂A/∂H‖), ``dY_norm`` (‖∂Y/∂H‖), ``eq7_printed`` =
    ``4χ_S‖W_Q‖‖W_K‖/√d_k`` (χ from the margin of S, no ‖H‖₂), ``eq54`` = ``4χ‖W_Q‖‖W_K‖‖H‖₂/√d_k``
    with χ from the margin of the softmax argument ``S/√d_k`` (what the proof shows),
    ``eq54_margin_S`` (eq. 54 with the printed margin), ``eq55`` (the full bound, proof's margin),
    ``eq6_printed`` (eq. 6 with eq. 7 as printed), ``gamma_S`` and ``gamma_scaled``.
    """
    h, wq, wk, wv, wo = (_mat(nm, x) for nm, x in
                         zip(("h", "wq", "wk", "wv", "wo"), (h, wq, wk, wv, wo)))
    jac = attention_jacobians(h, wq, wk, wv, wo)
    n, dk = h.shape[0], wq.shape[1]
    nrm = {k: float(np.linalg.norm(x, 2)) for k, x in
           {"h": h, "wq": wq, "wk": wk, "wv": wv, "wo": wo, "A": jac["A"]}.items()}
    s = h @ wq @ wk.T @ h.T
    g_s, g_sc = _margin(s), _margin(s / math.sqrt(dk))
    chi_s, chi_sc = _chi(n, g_s), _chi(n, g_sc)
    qk, vo = nrm["wq"] * nrm["wk"] / math.sqrt(dk), nrm["wv"] * nrm["wo"]
    eq7 = 4 * chi_s * qk
    eq54 = 4 * chi_sc * qk * nrm["h"]
    return {
        "dA_norm": float(np.linalg.norm(jac["dA"], 2)),
        "dY_norm": float(np.linalg.norm(jac["dY"], 2)),
        "gamma_S": g_s, "gamma_scaled": g_sc,
        "eq7_printed": eq7, "eq54": eq54, "eq54_margin_S": 4 * chi_s * qk * nrm["h"],
        "eq6_printed": nrm["A"] * vo + eq7 * nrm["h"] * vo,
        "eq55": nrm["A"] * vo + eq54 * nrm["h"] * vo,
    }


# --- Theorem 4.6: MLP ---------------------------------------------------------------------------

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": lambda z: jax.nn.gelu(z, approximate=False),
    "gelu_tanh": lambda z: jax.nn.gelu(z, approximate=True),
    "silu": jax.nn.silu,
    "relu": jax.nn.relu,
}


@functools.lru_cache(maxsize=16)
@float64
def activation_lipschitz(name: str, lo: float = -10.0, hi: float = 10.0,
                         points: int = 200_001) -> tuple[float, float]:
    """``(sup |φ'(z)|, argmax)`` on a float64 grid of ``[lo, hi]`` (``jax.grad``), for Thm 4.6's L_φ.

    Grid spacing 1e-4 puts the argmax within 1e-4 and, φ'' being 0 there, the sup within ~1e-8.
    """
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    z = jnp.linspace(lo, hi, points, dtype=jnp.float64)
    g = jnp.abs(jax.vmap(jax.grad(ACTIVATIONS[name]))(z))
    i = int(jnp.argmax(g))
    return float(g[i]), float(z[i])


def mlp_bound(w1: ArrayLike, w2: ArrayLike, lipschitz: float) -> float:
    """Theorem 4.6 (eq. 8, √ restored): ``L_φ‖W₁‖_F‖W₂‖_F / √(srank W₁ · srank W₂)``."""
    w1, w2 = _mat("w1", w1), _mat("w2", w2)
    f1, f2 = np.linalg.norm(w1), np.linalg.norm(w2)
    s1 = f1**2 / np.linalg.norm(w1, 2) ** 2
    s2 = f2**2 / np.linalg.norm(w2, 2) ** 2
    return float(lipschitz * f1 * f2 / math.sqrt(s1 * s2))


@float64
def mlp_jacobian_norm(x: ArrayLike, w1: ArrayLike, w2: ArrayLike, activation: str = "gelu") -> float:
    """``‖∂y/∂h‖₂`` of ``y = φ(h W₁) W₂`` at ``h = x`` (row vector), by ``jax.jacobian``."""
    w1, w2 = jnp.asarray(_mat("w1", w1)), jnp.asarray(_mat("w2", w2))
    phi = ACTIVATIONS[activation]
    jac = jax.jacobian(lambda h: phi(h @ w1) @ w2)(jnp.asarray(x, jnp.float64))
    return float(jnp.linalg.norm(jac, 2))


# --- Theorem 4.10: rank of the attention weight gradients ---------------------------------------


@float64
def attention_weight_grads(h: ArrayLike, cohidden: ArrayLike, wq: ArrayLike, wk: ArrayLike,
                           wv: ArrayLike, wo: ArrayLike) -> dict[str, np.ndarray]:
    """Gradients of ``⟨Y, H̃⟩`` w.r.t. W_Q, W_K, W_V, W_O, ``Y = softmax(HW_QW_KᵀHᵀ/√d_k) H W_V W_O``.

    ``H̃`` (``cohidden``) is ∂L/∂Y, so these are the weight gradients Theorem 4.10 bounds in rank.
    """
    h, ht = jnp.asarray(_mat("h", h)), jnp.asarray(_mat("cohidden", cohidden))
    ws = {k: jnp.asarray(_mat(k, x)) for k, x in
          {"wq": wq, "wk": wk, "wv": wv, "wo": wo}.items()}
    dk = ws["wq"].shape[1]

    def loss(p):
        a = _softmax_rows(h @ p["wq"] @ p["wk"].T @ h.T / math.sqrt(dk))
        return jnp.sum((a @ h @ p["wv"] @ p["wo"]) * ht)

    return {k: np.asarray(v) for k, v in jax.grad(loss)(ws).items()}


def numerical_rank(x: ArrayLike, rtol: float | None = None) -> int:
    """Number of singular values above ``rtol·σ₁`` (default ``max(m, n)·eps_float64``·100)."""
    x = _mat("x", x)
    s = np.linalg.svd(x, compute_uv=False)
    if s[0] == 0:
        return 0
    tol = rtol if rtol is not None else 100 * max(x.shape) * np.finfo(np.float64).eps
    return int(np.sum(s > tol * s[0]))


# --- Theorem 4.12: stable-rank feedback ---------------------------------------------------------


def thm412_condition(s: ArrayLike, c: ArrayLike) -> bool:
    """Eq. 12: all ``c_i < 0`` and ``c₁/c_i > s₁/s_i`` for every i > 1 (s descending, > 0)."""
    s, c = np.asarray(s, np.float64), np.asarray(c, np.float64)
    if s.shape != c.shape or s.ndim != 1 or s.size < 2 or np.any(s <= 0) or np.any(np.diff(s) > 0):
        raise ValueError("s must be a 1-D descending positive vector of length >= 2 and c must match"
                         f" its shape; got s {s.shape}, c {c.shape}")
    return bool(np.all(c < 0) and np.all(c[0] / c[1:] > s[0] / s[1:]))


def srank_after_step(key: jax.Array, s: ArrayLike, c: ArrayLike, eta: float,
                     m: int | None = None) -> tuple[float, float]:
    """``(srank W, srank W')`` for ``W = U diag(s) Vᵀ``, ``W' = W − η U diag(c) Vᵀ`` with random
    orthonormal U (m×k), V (k×k) — dense matrices, stable ranks from the SVD."""
    s, c = np.asarray(s, np.float64), np.asarray(c, np.float64)
    k = s.size
    m = m or k + 2
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
    u = np.linalg.qr(rng.standard_normal((m, k)))[0]
    v = np.linalg.qr(rng.standard_normal((k, k)))[0]
    w = u @ np.diag(s) @ v.T
    w2 = w - eta * u @ np.diag(c) @ v.T

    def sr(x):
        sv = np.linalg.svd(x, compute_uv=False)
        return float(np.sum(sv**2) / sv[0] ** 2)

    return sr(w), sr(w2)
