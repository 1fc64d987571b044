"""Paper 002 §4: the one-layer single-head transformer of the SoSD theory, full-batch GD on it,
and the bounds of Lemma A.4, Theorem 4.5 and Theorem 4.9 as functions (float64).

Model (§4.1, eq. 1–2), one sequence ``X ∈ ℝ^{n×d}`` with labels ``y ∈ {0..C-1}^n``::

    Q = X W_Q,  K = X W_K,  V = X W_V           (W_Q, W_K, W_V ∈ ℝ^{d×d}, trained)
    M = Q Kᵀ/√d,  A = softmax(M) (row-wise),  H = A V,  Z = H W_C  (W_C ∈ ℝ^{d×C}, fixed)
    L = −(1/n) Σ_i log softmax(Z_i)_{y_i}

initialised ``[W]_ij ~ N(0, σ²)`` (σ ≪ 1) and trained by full-batch GD with a constant η.
:mod:`jaxspectra.models.one_layer` is the same model as a batched flax module (tests check the two
agree); this module is the un-batched pure-function form the theory needs, with the closed-form
gradients of App. B–C (eq. 40–44, 103–107).

Notation: ``τ_• = tr Σ(W_•) = ‖W_•‖_*`` (nuclear norm, App. C eq. 82), Σ̂ = Σ/tr Σ (Def. 3.1),
the SD variation ``ΔΣ_t = ‖Σ̂_{t+1} − Σ̂_t‖_F`` (§3.3; Σ̂ is diagonal, so this is the Euclidean
norm of the difference of the normalised singular-value vectors).

Bounds, with what our checks found (each verified numerically in
``tests/theory/test_sosd_one_layer.py``):

* **Lemma A.4** (:func:`lemma_a4_bound`): ``ΔΣ_t ≤ (1+√d)/min(τ_t, τ_{t+1}) · η‖G_t‖_F``. Holds.
  Lemma A.1's own argument gives the bound with ``1/α`` *and* with ``1/β``, hence with
  ``1/max(α, β)``; the printed ``min`` is valid but weaker (``denominator="max"``).
* **Theorem 4.5** (:func:`theorem45_epsilon`): the proof's stability bound (App. B, eq. 56) is
  ``ε_t(W) = (1+√d)·η·G/‖W_t‖_*`` with ``G`` the gradient bound of Assumption 4.3.3 — ε ∝ η over
  the **nuclear** norm (tr Σ); eq. 57 then passes to ‖W‖_F ≥ ‖W‖_*/√d. ``ΔΣ_t ≤ ε_t`` follows
  from Lemma A.4 whenever ``τ_{t+1} ≥ τ_t`` (Assumption 4.1 for the nuclear norm).
* **Theorem 4.9, Phase I** (:func:`phase1_lower_bound`, :func:`paper_phase1_bounds`): the printed
  bound is mis-derived. From Lemma A.4, ``‖G_•‖_F ≥ τ'_• δ_• / C₀`` with ``C₀ = (1+√d)η`` and
  ``τ'_• = min(τ_{•,t}, τ_{•,t+1})``; squaring, ``‖∇L‖² ≥ Σ_•(τ'_•δ_•)²/C₀²``; eq. 94 writes
  ``/C₀`` (a square dropped — the step fails when C₀ > 1, see
  :func:`paper_eq94_counterexample`). Eq. 95 (``max_• τδ ≥ D``) gives ``Σ_•(τδ)² ≥ D²``, not
  ``3D²`` (that needs all three ≥ D). With the descent lemma (A.5, ``β`` an upper bound on the
  curvature along the step) the corrected bound is

      ΔL_t ≥ (1 − ηβ/2) · Σ_•(τ'_•δ_•)² / (η (1+√d)²)  ≥ (1 − ηβ/2) · D_t² / (η (1+√d)²),

  ``D_t = max_• τ'_•δ_•``; at ``η = 1/β`` this is ``D²/(2η(1+√d)²) = βD²/(2(1+√d)²)``, against the
  printed ``3D²/(2(1+√d))`` (App. C eq. 97) and ``3D²η/(2(1+√d))`` (main text) — which also
  disagree with each other by a factor η.
* **Theorem 4.9, Phase II** (:func:`theorem49_gradient_bounds`): the gradient bounds of eq. 139
  (``‖G_V‖_F ≤ C_V e^{−τ_V ω}``, and the Q/K ones with the attention gap) hold; eq. 109 prints
  ``√(2(C−1))`` where eq. 108 and the constant C_H of eq. 110 carry ``2(C−1)`` (we use the
  latter). The conclusion ``ΔL ≤ O(ε^p)`` holds for *every* p (e^{−x} ≤ C_p x^{−p}), so it is not
  testable by a fitted log–log slope.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxspectra.monitors.spectral import delta_sigma, distribution
from jaxspectra.precision import float64, x64_scope
from jaxspectra.theory._checks import check_finite, check_ndim

Params = dict[str, jax.Array]
#: The trained matrices, in the paper's order.
NAMES = ("q", "k", "v")


class Task(NamedTuple):
    """One sequence of §4.1: ``X (n, d)`` features, ``y (n,)`` labels in ``[0, C)``, ``W_C (d, C)``
    the fixed readout."""

    X: jax.Array
    y: jax.Array
    W_C: jax.Array


# ----------------------------------------------------------------------------------------------
# task, init, validation
# ----------------------------------------------------------------------------------------------


def make_task(key: jax.Array, n: int, d: int, C: int, wc_std: float | None = None) -> Task:
    """``X`` i.i.d. N(0, 1), labels uniform on ``[0, C)``, ``W_C`` i.i.d. N(0, wc_std²)
    (default 1/√d, as :func:`jaxspectra.models.one_layer.fixed_w_c`); float64.

    The paper fixes none of these; with ``n ≤ d`` any labelling is fittable (``A ≈ I`` gives
    ``Z = X W_V W_C`` with ``X`` of full row rank).
    """
    for name, v in (("n", n), ("d", d)):
        if int(v) < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    if int(C) < 2:
        raise ValueError(f"C (number of classes) must be >= 2, got {C}")
    std = 1.0 / math.sqrt(d) if wc_std is None else float(wc_std)
    if not (math.isfinite(std) and std > 0):
        raise ValueError(f"wc_std must be positive and finite, got {wc_std}")
    with x64_scope():
        kx, ky, kc = jax.random.split(key, 3)
        X = jax.random.normal(kx, (n, d), jnp.float64)
        y = jax.random.randint(ky, (n,), 0, C)
        W_C = std * jax.random.normal(kc, (d, C), jnp.float64)
    return Task(X, y, W_C)


def small_init(key: jax.Array, d: int, sigma: float) -> Params:
    """§4.1 small init: every entry of W_Q, W_K, W_V ~ N(0, σ²) (float64)."""
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be positive and finite, got {sigma}")
    with x64_scope():
        ks = jax.random.split(key, 3)
        return {n: sigma * jax.random.normal(k, (d, d), jnp.float64) for n, k in zip(NAMES, ks)}


def check_task(params: Params, task: Task) -> tuple[int, int, int]:
    """Validate shapes/finiteness; return ``(n, d, C)``."""
    check_ndim("task.X", task.X, 2, "(n tokens, d features)")
    check_ndim("task.y", task.y, 1, "(n,) integer labels")
    check_ndim("task.W_C", task.W_C, 2, "(d, C)")
    n, d = np.shape(task.X)
    if np.shape(task.y) != (n,):
        raise ValueError(f"task.y must have shape (n,) = ({n},), got {np.shape(task.y)}")
    if np.shape(task.W_C)[0] != d:
        raise ValueError(f"task.W_C must be (d, C) with d = {d}, got {np.shape(task.W_C)}")
    C = int(np.shape(task.W_C)[1])
    if not isinstance(params, dict) or set(params) != set(NAMES):
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"params must be a dict with keys 'q', 'k', 'v'; got {got}")
    for k in NAMES:
        if np.shape(params[k]) != (d, d):
            raise ValueError(f"params['{k}'] must be (d, d) = ({d}, {d}), got "
                             f"{np.shape(params[k])}")
        check_finite(f"params['{k}']", params[k])
    check_finite("task.X", task.X)
    check_finite("task.W_C", task.W_C)
    y = np.asarray(task.y)
    if y.dtype.kind not in "iu" or y.min() < 0 or y.max() >= C:
        raise ValueError(f"task.y must be integers in [0, C={C}), got dtype {y.dtype}, range "
                         f"[{y.min()}, {y.max()}]")
    return int(n), int(d), C


# ----------------------------------------------------------------------------------------------
# model, loss, closed-form gradients
# ----------------------------------------------------------------------------------------------


def forward(params: Params, X: jax.Array, W_C: jax.Array) -> dict[str, jax.Array]:
    """§4.1 forward pass: ``Q, K, V, M, A, H, Z, logP`` (log-probabilities)."""
    d = X.shape[-1]
    Q, K, V = X @ params["q"], X @ params["k"], X @ params["v"]
    M = Q @ K.T / math.sqrt(d)
    A = jax.nn.softmax(M, axis=-1)
    H = A @ V
    Z = H @ W_C
    return {"Q": Q, "K": K, "V": V, "M": M, "A": A, "H": H, "Z": Z,
            "logP": jax.nn.log_softmax(Z, axis=-1)}


def task_loss(params: Params, task: Task) -> jax.Array:
    """Eq. 2: ``L = −(1/n) Σ_i log P_{i, y_i}``."""
    logP = forward(params, task.X, task.W_C)["logP"]
    return -jnp.mean(jnp.take_along_axis(logP, task.y[:, None], axis=1))


def closed_form_grads(params: Params, task: Task) -> dict[str, jax.Array]:
    """The gradients of App. B–C, exactly (no small-init approximation).

    ``G_Z = (P − Y)/n`` (eq. 41), ``G_H = G_Z W_Cᵀ`` (42), ``G_A = G_H Vᵀ`` (43),
    ``G_M,i = J(a_i)ᵀ G_A,i`` with ``J(a) = diag(a) − aaᵀ`` (102–104),
    ``∂L/∂W_V = Xᵀ Aᵀ G_H`` (44), ``∂L/∂W_Q = Xᵀ G_M K/√d`` (106), ``∂L/∂W_K = Xᵀ G_Mᵀ Q/√d`` (107).
    Returns ``q, k, v`` (the weight gradients) and ``G_Z, G_H, G_A, G_M``.
    """
    X, W_C = task.X, task.W_C
    n, d = X.shape
    f = forward(params, X, W_C)
    P = jnp.exp(f["logP"])
    Y = jax.nn.one_hot(task.y, W_C.shape[1], dtype=P.dtype)
    G_Z = (P - Y) / n
    G_H = G_Z @ W_C.T
    G_A = G_H @ f["V"].T
    A = f["A"]
    G_M = A * (G_A - jnp.sum(A * G_A, axis=1, keepdims=True))  # J(a_i) is symmetric
    return {"q": X.T @ G_M @ f["K"] / math.sqrt(d), "k": X.T @ G_M.T @ f["Q"] / math.sqrt(d),
            "v": X.T @ A.T @ G_H, "G_Z": G_Z, "G_H": G_H, "G_A": G_A, "G_M": G_M}


def gd_step(params: Params, task: Task, eta: float) -> Params:
    """One full-batch GD step ``θ ← θ − η∇L(θ)`` (§4.1, Optimization)."""
    g = closed_form_grads(params, task)
    return {k: params[k] - eta * g[k] for k in NAMES}


def gap(u: jax.Array) -> jax.Array:
    """Def. 4.6 along the last axis: largest minus second-largest entry (≥ 0)."""
    top2 = jax.lax.top_k(u, 2)[0]
    return top2[..., 0] - top2[..., 1]


def label_margin(Z: jax.Array, y: jax.Array) -> jax.Array:
    """Per row ``Z_{i,y_i} − max_{c≠y_i} Z_{i,c}`` (positive iff row i is classified correctly)."""
    zy = jnp.take_along_axis(Z, y[:, None], axis=1)[:, 0]
    other = jnp.where(jax.nn.one_hot(y, Z.shape[1], dtype=bool), -jnp.inf, Z)
    return zy - jnp.max(other, axis=1)


# ----------------------------------------------------------------------------------------------
# full-batch GD with per-step statistics
# ----------------------------------------------------------------------------------------------


class Trajectory(NamedTuple):
    """Per-step record of :func:`run_gd` (NumPy float64; T = steps).

    ``loss (T+1,)``, ``sv (T+1, 3, d)`` singular values of W_Q, W_K, W_V (descending);
    per step t < T: ``grad_fro (T, 3)`` ‖∂L/∂W_•‖_F at θ_t, ``gh_fro (T,)`` ‖G_H‖_F,
    ``att_gap (T,)`` min_i gap(M_i,:) (raw, App. C eq. 121), ``logit_gap (T,)`` min_i of
    ``Z_{i,y_i} − max_{c≠y_i} Z_{i,c}`` (raw, eq. 128 times τ_V), ``accuracy (T,)``,
    ``curv_seg (T,)`` max over ``curvature_points`` equispaced points θ_t − sηg_t (s ∈ [0, 1]) of
    the directional curvature gᵀ∇²L g/‖g‖² (an upper curvature estimate for the descent lemma),
    ``grad_diff (T,)`` ‖∇L(θ_{t+1}) − ∇L(θ_t)‖ (the secant of Assumption 4.7.1 is
    ``grad_diff/(η‖∇L(θ_t)‖)``).
    """

    loss: np.ndarray
    sv: np.ndarray
    grad_fro: np.ndarray
    gh_fro: np.ndarray
    att_gap: np.ndarray
    logit_gap: np.ndarray
    accuracy: np.ndarray
    curv_seg: np.ndarray
    grad_diff: np.ndarray


def _flat_norm(tree: Params) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(tree[k] ** 2) for k in NAMES))


def _svals(params: Params) -> jax.Array:
    return jnp.stack([jnp.linalg.svd(params[k], compute_uv=False) for k in NAMES])


def _curvature(task: Task, params: Params, g: Params, eta: jax.Array,
               points: int) -> jax.Array:
    """max over s ∈ linspace(0, 1, points) of gᵀ∇²L(θ − sηg)g/‖g‖² (Hessian–vector products)."""
    grad_fn = jax.grad(lambda p: task_loss(p, task))
    gn2 = _flat_norm(g) ** 2

    def at(s):
        pt = {k: params[k] - s * eta * g[k] for k in NAMES}
        hv = jax.jvp(grad_fn, (pt,), (g,))[1]
        return sum(jnp.vdot(g[k], hv[k]) for k in NAMES) / gn2

    return jnp.max(jax.vmap(at)(jnp.linspace(0.0, 1.0, points)))


@functools.partial(jax.jit, static_argnames=("steps", "points"))
def _scan(p0: Params, task: Task, eta: jax.Array, steps: int, points: int):
    def step(carry, _):
        params, g_prev = carry
        f = forward(params, task.X, task.W_C)
        cg = closed_form_grads(params, task)
        g = {k: cg[k] for k in NAMES}
        L = -jnp.mean(jnp.take_along_axis(f["logP"], task.y[:, None], axis=1))
        margins = label_margin(f["Z"], task.y)
        rec = {
            "loss": L,
            "sv": _svals(params),
            "grad_fro": jnp.stack([jnp.linalg.norm(g[k]) for k in NAMES]),
            "gh_fro": jnp.linalg.norm(cg["G_H"]),
            "att_gap": jnp.min(gap(f["M"])),
            "logit_gap": jnp.min(margins),
            "accuracy": jnp.mean(margins > 0),
            "curv_seg": _curvature(task, params, g, eta, points),
            "grad_diff_prev": _flat_norm({k: g[k] - g_prev[k] for k in NAMES}),
        }
        new = {k: params[k] - eta * g[k] for k in NAMES}
        return (new, g), rec

    g0 = {k: jnp.zeros_like(p0[k]) for k in NAMES}
    (pT, gT), rec = jax.lax.scan(step, (p0, g0), None, length=steps)
    gTT = closed_form_grads(pT, task)
    return rec, task_loss(pT, task), _svals(pT), _flat_norm({k: gTT[k] - gT[k] for k in NAMES})


@float64
def run_gd(params: Params, task: Task, eta: float, steps: int,
           curvature_points: int = 5) -> Trajectory:
    """Full-batch GD for ``steps`` steps from ``params`` (float64, one jit-compiled ``lax.scan``;
    recompiled only for a new shape, ``steps`` or ``curvature_points``)."""
    check_task(params, task)
    if not (math.isfinite(eta) and eta > 0):
        raise ValueError(f"eta must be positive and finite, got {eta}")
    if int(steps) < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    if int(curvature_points) < 2:
        raise ValueError(f"curvature_points must be >= 2, got {curvature_points}")
    p0 = {k: jnp.asarray(params[k], jnp.float64) for k in NAMES}
    task = Task(jnp.asarray(task.X, jnp.float64), jnp.asarray(task.y, jnp.int32),
                jnp.asarray(task.W_C, jnp.float64))
    rec, LT, svT, last_diff = _scan(p0, task, jnp.asarray(eta, jnp.float64), int(steps),
                                    int(curvature_points))
    out = {k: np.asarray(v, np.float64) for k, v in rec.items()}
    grad_diff = np.append(out.pop("grad_diff_prev")[1:], float(last_diff))
    return Trajectory(
        loss=np.append(out["loss"], float(LT)),
        sv=np.concatenate([out["sv"], np.asarray(svT)[None]], axis=0),
        grad_fro=out["grad_fro"], gh_fro=out["gh_fro"], att_gap=out["att_gap"],
        logit_gap=out["logit_gap"], accuracy=out["accuracy"], curv_seg=out["curv_seg"],
        grad_diff=grad_diff)


# ----------------------------------------------------------------------------------------------
# SD variation and the bounds
# ----------------------------------------------------------------------------------------------


def sd_variation(sv: np.ndarray) -> np.ndarray:
    """``ΔΣ_t = ‖Σ̂_{t+1} − Σ̂_t‖_F`` along the first axis of ``sv (T+1, ..., k)`` → ``(T, ...)``."""
    sv = np.asarray(sv, np.float64)
    return np.asarray(delta_sigma(sv[:-1], sv[1:]))


def lemma_a4_bound(sv_t: np.ndarray, sv_next: np.ndarray, step_fro: np.ndarray,
                   denominator: str = "min") -> np.ndarray:
    """Lemma A.4 (eq. 18): ``(1+√k)/min(tr Σ_t, tr Σ_{t+1}) · ‖W_{t+1} − W_t‖_F``.

    ``sv_* (..., k)`` singular values, ``step_fro (...)`` = ‖W_{t+1} − W_t‖_F = η‖G_t‖_F under GD;
    ``k`` is the number of singular values (the paper's d for W ∈ ℝ^{d×d}).
    ``denominator="max"``: the sharper bound Lemma A.1's own argument gives (module doc).
    """
    if denominator not in ("min", "max"):
        raise ValueError(f"denominator must be 'min' or 'max', got {denominator!r}")
    a = np.sum(np.asarray(sv_t, np.float64), axis=-1)
    b = np.sum(np.asarray(sv_next, np.float64), axis=-1)
    k = np.shape(sv_t)[-1]
    den = np.minimum(a, b) if denominator == "min" else np.maximum(a, b)
    return (1.0 + math.sqrt(k)) * np.asarray(step_fro, np.float64) / den


def theorem45_epsilon(nuclear: np.ndarray, eta: float, G: float, d: int) -> np.ndarray:
    """Theorem 4.5's stability bound as its proof uses it (App. B eq. 56):
    ``ε_t(W) = (1+√d)·η·G/‖W_t‖_*`` — ∝ η over the nuclear norm ``‖W‖_* = tr Σ``; ``G`` is
    Assumption 4.3.3's bound on ‖∂L/∂W‖_F."""
    return (1.0 + math.sqrt(d)) * eta * G / np.asarray(nuclear, np.float64)


def phase1_lower_bound(tau_delta: np.ndarray, eta: float, beta: np.ndarray,
                       d: int) -> np.ndarray:
    """Our corrected Phase-I bound (module doc):
    ``ΔL_t ≥ (1 − ηβ/2)·Σ_•(τ'_•δ_•)²/(η(1+√d)²)``.

    ``tau_delta (..., 3)``: ``τ'_•δ_•`` per matrix with ``τ' = min(tr Σ_t, tr Σ_{t+1})``;
    ``beta (...)``: an upper bound on the curvature gᵀ∇²L g/‖g‖² along the step.
    """
    s = np.sum(np.square(np.asarray(tau_delta, np.float64)), axis=-1)
    return (1.0 - eta * np.asarray(beta, np.float64) / 2.0) * s / (eta * (1.0 + math.sqrt(d)) ** 2)


def paper_phase1_bounds(tau_delta: np.ndarray, eta: float, beta: np.ndarray,
                        d: int) -> dict[str, np.ndarray]:
    """The printed Phase-I bounds of Thm 4.9 / App. C, with ``D = max_• τ'_•δ_•``:

    ``eq94`` = ``(η/C₀)(1−ηβ/2)Σ(τδ)²`` (C₀ = (1+√d)η); ``eq96`` = ``3D²(1−ηβ/2)/(1+√d)``;
    ``eq97`` = ``3D²/(2(1+√d))`` (eq. 96 at η = 1/β); ``main`` = ``3D²η/(2(1+√d))`` (§4.3).
    """
    td = np.asarray(tau_delta, np.float64)
    s = np.sum(td**2, axis=-1)
    D2 = np.max(td, axis=-1) ** 2
    fac = 1.0 - eta * np.asarray(beta, np.float64) / 2.0
    r = 1.0 + math.sqrt(d)
    return {"eq94": fac * s / r, "eq96": 3 * D2 * fac / r, "eq97": 3 * D2 / (2 * r),
            "main": 3 * D2 * eta / (2 * r)}


def paper_eq94_counterexample(d: int = 4, eta: float = 1.0, g: float = 0.01) -> dict[str, Any]:
    """A single GD step on which the square-dropping step of eq. 94, ``‖G‖_F² ≥ (τ'δ)²/C₀``,
    fails while the corrected ``‖G‖_F² ≥ (τ'δ)²/C₀²`` holds (C₀ = (1+√d)η > 1).

    ``W = diag(1, 1e-3, …)``, ``G = −g·diag(0, 1, …, 1)``: the step grows the small singular
    values, moving Σ̂ almost along the direction where x ↦ x/‖x‖₁ has its largest gain (≈ √d).
    """
    W = np.diag([1.0] + [1e-3] * (d - 1))
    G = -g * np.diag([0.0] + [1.0] * (d - 1))
    W1 = W - eta * G
    s0, s1 = np.linalg.svd(W, compute_uv=False), np.linalg.svd(W1, compute_uv=False)
    delta = float(np.linalg.norm(distribution(s1) - distribution(s0)))
    tau = float(min(s0.sum(), s1.sum()))
    C0 = (1.0 + math.sqrt(d)) * eta
    g2 = float(np.sum(G**2))
    return {"grad_sq": g2, "paper_rhs": (tau * delta) ** 2 / C0,
            "corrected_rhs": (tau * delta) ** 2 / C0**2, "C0": C0, "delta": delta, "tau": tau}


def theorem49_gradient_bounds(nuclear: np.ndarray, att_gap: np.ndarray, logit_gap: np.ndarray,
                              X: np.ndarray, W_C: np.ndarray) -> np.ndarray:
    """App. C eq. 136–139: upper bounds on ``‖∂L/∂W_Q‖_F, ‖∂L/∂W_K‖_F, ‖∂L/∂W_V‖_F``.

    ``nuclear (..., 3)`` = τ_Q, τ_K, τ_V; ``att_gap (...)`` = min_i gap(M_i,:) (= τ_Qτ_K γ_min in
    Assumption 4.7.2's normalisation); ``logit_gap (...)`` = min_i (Z_{i,y_i} − max_{c≠y_i} Z_{i,c})
    (= τ_V ω_min). With ``λ = ‖X‖₂``, ``C_V = 2(C−1)λ‖W_C‖_F`` and
    ``C_H = 2(C−1)‖W_C‖_F/√n`` (eq. 137; eq. 109's √(2(C−1)) is a typo of eq. 108's 2(C−1)):

        ‖G_V‖ ≤ C_V e^{−τ_Vω},  ‖G_Q‖ ≤ 2(n−1)/√d · C_H λ³ τ_K τ_V e^{−τ_Vω} e^{−gap(M)},

    and ‖G_K‖ with τ_Q in place of τ_K. Valid for any sign of the logit gap (then e^{−τ_Vω} ≥ 1).
    Returns ``(..., 3)`` in the order Q, K, V.
    """
    X = np.asarray(X, np.float64)
    W_C = np.asarray(W_C, np.float64)
    n, d = X.shape
    C = W_C.shape[1]
    lam = float(np.linalg.norm(X, 2))
    wc = float(np.linalg.norm(W_C))
    CV = 2 * (C - 1) * lam * wc
    CH = 2 * (C - 1) * wc / math.sqrt(n)
    tau = np.asarray(nuclear, np.float64)
    ev = np.exp(-np.asarray(logit_gap, np.float64))
    ea = np.exp(-np.asarray(att_gap, np.float64))
    cqk = 2 * (n - 1) / math.sqrt(d) * CH * lam**3
    return np.stack([cqk * tau[..., 1] * tau[..., 2] * ev * ea,
                     cqk * tau[..., 0] * tau[..., 2] * ev * ea,
                     CV * ev], axis=-1)
