"""Manifold Muon on the Stiefel, DGram and oblique manifolds (paper 004, App. A) as optax.

For each managed matrix W (worked on *tall*, m ≥ n: wide matrices are transposed and transposed
back, as in the paper) with gradient g, one step is

1. sum-form Nesterov momentum ``optax.trace(decay=μ, nesterov=True)``: buf ← μ·buf + g,
   G = g + μ·buf (μ = 0.95; *not* ``optax.contrib.muon``'s EMA — with an EMA the undamped dual
   step α below would be effectively 1/(1 − μ) = 20× larger relative to ‖G‖);
2. the direction A = argmax ⟨G, A⟩ s.t. ‖A‖₂ ≤ 1 and P(WᵀA + AᵀW) = 0 by dual ascent on a
   symmetric multiplier Λ (paper 004 App. A, "Dual ascent"; the extracted text lost the formulas,
   ``../shared/papers/README.md`` spells them out):

   * Λ₀ = −¼·P(WᵀG + GᵀW) (the linearised warm start),
   * for k = 0 … K−1: A = sign(G + 2W·P(½(Λ + Λᵀ))), H = P(WᵀA + AᵀW);
     stop this matrix if RMS(H) < tol (``early_stop``, the authors' training path);
     Λ ← Λ − α(1 − k/K)·H;

   with P the identity (Stiefel), the off-diagonal part (DGram) or the diagonal part (oblique) of
   a symmetric n×n matrix. (The Lagrangian ⟨G, A⟩ + ⟨Λ, P(WᵀA + AᵀW)⟩ = ⟨G + 2W·P(Λ), A⟩ for
   symmetric Λ; its maximiser over the spectral ball is the matrix sign and its Λ-gradient is H.)
3. W ← retract(W − η·A) (:mod:`jaxspectra.optim.retractions`); with ``weight_decay=λ`` (beyond
   the paper, off by default) W ← retract(W − η·(A + λW)).

The transformation returns ``updates = retract(W − η·A) − W`` (apply with
``optax.apply_updates``), so it must be the last element of a chain and needs ``params``.
Matrices of the same (tall) shape are stacked into one bank (:mod:`jaxspectra.matrices`) and
solved together (one batched ``lax.while_loop``; the early stop freezes each matrix at its own
step and the loop ends when every matrix of the bank has stopped or K is reached — the same
result as a per-matrix loop).

Checked numerically (float64, exact sign; ``tests/optim/test_manifold_muon.py``): for a square
Stiefel W, Λ₀ is already exact (G + 2WΛ₀ = W·skew(WᵀG), violation ~1e-15, the early stop fires at
step 1). ``../shared/papers/README.md`` reports that without the early stop round-off then grows
to 0.17 within 20 steps; that is not reproduced here in float64 for even n (it stays ≤ 1e-12),
but it is in float32: where skew(WᵀG) has a singular-value pair at 1e-3 of the largest, the first
iterate's round-off (~1e-6) misses tol = 1e-6 and the undamped dual step amplifies it to ~0.3 in
20 steps (random 64×64 G with entries 2e-3 do the same: 0.19, with the bf16 sign too), hence the
library default's robust stop below. For odd n,
skew(WᵀG) is singular: a thin-SVD U Vᵀ without a rank threshold gives violation 2/n (0.087 at
n = 23) from the first step, while the partial isometry of ``linalg.matrix_sign`` stays tangent.
The dual step is not scale-invariant (α is not scaled with ‖G‖): on a 192×64 Stiefel matrix the
violation after K = 20 is 0.11 for G entries ~1e-3, 3e-4 for ~1e-2 and 0.02 for ~1; a DGram one
(unit columns) stays at 2.5–3.3 for entries ≤ 1 — watch the metrics below.

The library default differs from the authors' in two ways (``paper004_manifold_muon`` keeps
theirs): the float32 ``accurate`` sign (inner loop and retraction: ‖WᵀW − I‖₂ at float32
round-off after a step, where their bf16 sign leaves ≈ 1e-2) and ``stop_rule="robust"`` (best
iterate kept; a tolerance at the sign's round-off floor, :func:`robust_tolerance`, and one ∝ ‖G‖
below which a dual step cannot change G + 2W·P(Λ); a stop when the violation exceeds ``BLOWUP``
× its best), so the dual ascent cannot diverge and its early stop fires.

Options beyond the paper, off by default because they change the result or are not yet measured
faster: ``safeguard`` returns the inner iterate of lowest violation; ``warm_start`` starts Λ from
the previous step's Λ (over 10 steps of a slowly varying gradient it brought a DGram matrix's
K = 20 violation from 2.2 to 0.12 at G entries ~0.1; for Stiefel it changed little);
``inner_sign="gram"`` computes each dual step's sign through the n×n Gram
(:mod:`jaxspectra.optim.gram_sign`, float32, the same polynomial as Polar Express: 8n³ FLOPs a
step instead of 4mn² + 2n³), ``"gram_warm"`` polishes it from the previous dual step's
(approximate: a rotation first order in the change of G + 2W·P(Λ)); ``one_loop=True`` runs every
bank in one ``while_loop`` (:func:`dual_ascent_banks`, the same result).

Metrics (read from the state): ``state.violation`` (RMS of H for the returned A),
``state.inner_steps`` (sign evaluations used) and, for the sorted DGram retraction,
``state.swaps`` / ``state.swaps_total`` (:func:`rank_changes` of W − η·A: columns whose scale the
retraction re-assigns, at the last step / summed since ``init``), one entry per matrix (leading batch axes, plus a
trailing axis of 3 for a split qkv).

Example:
  >>> import jax, jax.numpy as jnp, optax
  >>> params = {"block_0": {"attn": {"o": {"kernel": jax.random.normal(jax.random.key(0), (8, 8))}}}}
  >>> params = project_to_manifold(params, "stiefel", sign_method="svd")
  >>> opt = manifold_muon(0.02, "stiefel", sign_method="svd")
  >>> state = opt.init(params)
  >>> grads = jax.tree.map(jnp.ones_like, params)
  >>> updates, state = opt.update(grads, state, params)
  >>> w = optax.apply_updates(params, updates)["block_0"]["attn"]["o"]["kernel"]
  >>> bool(jnp.allclose(w.T @ w, jnp.eye(8), atol=1e-5))
  True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxspectra import groups, linalg, matrices
from jaxspectra.matrices import mT
from jaxspectra.optim import gram_sign, retractions
from jaxspectra.optim.retractions import MANIFOLDS, check_manifold, check_retraction

__all__ = [
    "MANIFOLDS",
    "ManifoldMuonState",
    "dual_ascent",
    "dual_ascent_banks",
    "manifold_muon",
    "paper004_manifold_muon",
    "project_to_manifold",
    "rank_changes",
    "robust_tolerance",
    "tangent_projector",
]

QKV_MODES = ("whole", "split")


class ManifoldMuonState(NamedTuple):
    """State of :func:`manifold_muon`.

    Attributes:
      count: number of updates applied (drives a learning-rate schedule and the warm start).
      momentum: ``optax.TraceState`` of the sum-form Nesterov momentum.
      dual: per-leaf multiplier Λ of the returned direction (tall orientation, ``(..., n, n)``)
        when ``warm_start=True``, else ``None``.
      violation: per-leaf RMS(P(WᵀA + AᵀW)) of the direction used at the last step.
      inner_steps: per-leaf number of sign evaluations of the last step (≤ ``inner_steps``).
      swaps: per-leaf (int32) column-rank changes of the last step's sorted DGram retraction,
        :func:`rank_changes` of the pre-retraction point X = W − η·A (tall orientation); 0 for
        every leaf unless ``manifold="dgram"`` and ``retraction="sorted"``.
      swaps_total: per-leaf (int32) sum of ``swaps`` over every update since ``init``.
    """

    count: jax.Array
    momentum: optax.TraceState
    dual: Any
    violation: Any
    inner_steps: Any
    swaps: Any
    swaps_total: Any


# --------------------------------------------------------------------------------------------
# Single-bank algebra (tall matrices, leading batch axis)
# --------------------------------------------------------------------------------------------


def tangent_projector(manifold: str) -> Callable[[jax.Array], jax.Array]:
    """The self-adjoint projector P on symmetric ``(..., n, n)`` matrices of ``manifold``."""
    check_manifold(manifold)
    if manifold == "stiefel":
        return lambda m: m
    if manifold == "dgram":
        return lambda m: m * (1 - jnp.eye(m.shape[-1], dtype=m.dtype))
    return lambda m: m * jnp.eye(m.shape[-1], dtype=m.dtype)


def rank_changes(x: jax.Array) -> jax.Array:
    """Columns of a tall bank ``x`` ``(..., m, n)`` not at their descending column-norm rank.

    With r = ``argsort(−‖x_{:,j}‖)`` (stable: equal norms keep their index order) this is
    ``sum(r != arange(n))`` per matrix, int32 — equivalently the number of columns j whose rank
    among the column norms (0 = largest) differs from j, since a permutation and its inverse
    have the same fixed points. Paper 004's sorted DGram retraction (U Vᵀ)·diag(S) gives column
    j the j-th largest singular value; on (or near) the DGram manifold the singular values are
    the column norms (App. C), so for X = W − η·A this counts the columns whose scale the
    retraction hands to another column: 0 if the norms are already descending, 2 when one column
    overtakes its neighbour.
    """
    norms = jnp.linalg.norm(x, axis=-2)
    order = jnp.argsort(-norms, axis=-1, stable=True)
    return jnp.sum(order != jnp.arange(x.shape[-1]), axis=-1).astype(jnp.int32)


def _rms(h: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.mean(jnp.square(h), axis=(-2, -1)))


STOP_RULES = ("robust", "absolute")
#: Safety factor of :func:`robust_tolerance` over the measured round-off floor of RMS(H).
ROBUST_TOL_FACTOR = 4.0
#: The robust rule stops a matrix whose violation exceeds BLOWUP × its best so far. Measured
#: (float32, K = 20, α = 0.1): a converging dual ascent overshoots its first violation by ≤ 10×
#: (G entries ~1e-2 on 48×16 and 192×64 Stiefel/oblique matrices) before the anneal brings it
#: down; round-off amplified by an unstable dual step grows by 1e5 (1.7e-6 → 0.15).
BLOWUP = 100.0
#: Matrix-sign methods whose polynomial runs in bf16 (their round-off sets the violation floor).
BF16_SIGNS = ("newton_schulz", "polar_express")


INNER_SIGNS = ("matrix_sign", "gram", "gram_warm")
#: Coefficients of the ``"gram"`` inner sign: Polar Express's 10 steps (paper 004's sign,
#: :data:`jaxspectra.linalg.POLAR_EXPRESS_COEFFS`, the last triple repeated) plus 2 polishing
#: steps, which float32 can afford (bf16 stops at its round-off).
GRAM_COEFFS = tuple(linalg.POLAR_EXPRESS_COEFFS) + (linalg.POLAR_EXPRESS_COEFFS[-1],) * 4
#: A warm-started sign whose residual max|SᵀS − I| exceeds this is recomputed cold.
WARM_RESIDUAL = 1e-3


def _check_inner_sign(inner_sign: str, polish_steps: int) -> None:
    if inner_sign not in INNER_SIGNS:
        raise ValueError(
            f"unknown inner_sign {inner_sign!r}; expected one of {list(INNER_SIGNS)}"
        )
    if not 1 <= polish_steps <= 3:
        raise ValueError(f"polish_steps must be 1, 2 or 3, got {polish_steps}")


def _check_stop_rule(stop_rule: str) -> None:
    if stop_rule not in STOP_RULES:
        raise ValueError(
            f"unknown stop_rule {stop_rule!r}; expected one of {list(STOP_RULES)} ('absolute' is "
            "the authors' RMS(H) < tol, 'robust' the library default)"
        )


def robust_tolerance(m: int, sign_method: str, dtype: Any = jnp.float32) -> float:
    """Round-off floor of RMS(H), H = P(WᵀA + AᵀW), for a tall m×n bank in ``dtype``.

    A computed sign carries a relative error of the unit round-off u_s of its working precision
    (bf16 for ``newton_schulz`` / ``polar_express``, else ``dtype``), and each entry of WᵀA sums
    m products in ``dtype`` (relative error ≈ √m·u). The floor is
    ``ROBUST_TOL_FACTOR · (u_s + √m · u)`` — measured RMS(H) of an exactly tangent direction:
    2e-7 (float32 ``accurate`` sign, n = 16…256, 2.4 u) and 2e-3…8e-3 (bf16 Polar Express,
    0.5…2.1 u_bf16); the floor is 1.2e-6 / 6.8e-6 at m = 16 / 768 in float32 and 1.6e-2 in bf16.
    """
    u = float(jnp.finfo(dtype).eps) / 2
    if sign_method in BF16_SIGNS:
        u_s = float(jnp.finfo(jnp.bfloat16).eps) / 2
    elif sign_method in ("auto", "mixed") and jnp.finfo(dtype).bits <= 32:
        u_s = 2.0**-17  # linalg's mixed route: bf16×3 products keep ~16 bits
    else:
        u_s = u
    return ROBUST_TOL_FACTOR * (u_s + float(np.sqrt(m)) * u)


def dual_ascent(
    w: jax.Array,
    g: jax.Array,
    manifold: str,
    *,
    inner_steps: int = 20,
    alpha: float = 0.1,
    tol: float = 1e-6,
    early_stop: bool = True,
    safeguard: bool = False,
    sign_method: str = "auto",
    lam0: jax.Array | None = None,
    stop_rule: str = "robust",
    inner_sign: str = "matrix_sign",
    polish_steps: int = 2,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Direction A = argmax ⟨G, A⟩ s.t. ‖A‖₂ ≤ 1, P(WᵀA + AᵀW) = 0 for a tall bank.

    Args:
      w, g: ``(B, m, n)`` with ``m >= n`` (W on its manifold, G the momentum direction).
      manifold: ``"stiefel"``, ``"dgram"`` or ``"oblique"`` (chooses P).
      inner_steps: K, the maximum number of dual steps (sign evaluations).
      alpha: dual step size, annealed as α(1 − k/K).
      tol: early-stop threshold on RMS(H).
      early_stop: stop each matrix at the first step with RMS(H) < tol.
      safeguard: return the iterate of lowest violation instead of the last one.
      sign_method: method of :func:`jaxspectra.linalg.matrix_sign` (``"auto"``: its mixed-precision
        route for float32, accurate to 1e-4; float64 input: the accurate route).
      lam0: initial multiplier ``(B, n, n)``; ``None`` uses Λ₀ = −¼·P(WᵀG + GᵀW).
      stop_rule: ``"robust"`` (the library default, :func:`robust_tolerance`: keeps the iterate
        of lowest violation; stops a matrix when RMS(H) is below ``max(tol, round-off floor)``,
        when the dual step can no longer change G + 2W·P(Λ) above its round-off (a threshold
        ∝ ‖G‖_F), or when the violation has grown past ``BLOWUP`` × its best) or
        ``"absolute"`` (the authors' rule: RMS(H) < ``tol``, last iterate unless ``safeguard``).
      inner_sign: how each dual step's sign is computed (:data:`INNER_SIGNS`):
        ``"matrix_sign"`` (:func:`jaxspectra.linalg.matrix_sign` with ``sign_method``, the
        plain algorithm); ``"gram"`` (:func:`jaxspectra.optim.gram_sign.gram_sign`, the coupled
        iteration on the n×n Gram in float32, Polar Express's table plus 2 polishing steps,
        :data:`GRAM_COEFFS`: resolves σ_i/σ_1 ≳ 1e-3); ``"gram_warm"`` (``"gram"`` at the first
        dual step, then each sign from the previous step's Q with ``polish_steps`` polishing
        quintics, :func:`jaxspectra.optim.gram_sign.polish`; a bank where a matrix's residual
        max|SᵀS − I| exceeds :data:`WARM_RESIDUAL` redoes the cold iteration). The warm start is
        an approximation: X₀ = M_k·Q_{k−1} converges to sign(M_k)·R with R a rotation that is
        first order in ‖M_k − M_{k−1}‖ (polishing fixes singular values, not R), so its
        directions are orthonormal (the violation is measured on them) but only close to
        the sign.
      polish_steps: polishing steps of ``"gram_warm"`` (1–3).

    Returns:
      ``(A, violation, steps, lam)``: the direction ``(B, m, n)``, RMS(H) of A ``(B,)``, sign
      evaluations used ``(B,)`` (int32) and the multiplier Λ that produced A ``(B, n, n)``.
    """
    (out,) = dual_ascent_banks(
        [w], [g], manifold, inner_steps=inner_steps, alpha=alpha, tol=tol,
        early_stop=early_stop, safeguard=safeguard, sign_method=sign_method,
        lam0s=None if lam0 is None else [lam0], stop_rule=stop_rule, inner_sign=inner_sign,
        polish_steps=polish_steps,
    )
    return out


def dual_ascent_banks(
    ws: Sequence[jax.Array],
    gs: Sequence[jax.Array],
    manifold: str,
    *,
    inner_steps: int = 20,
    alpha: float = 0.1,
    tol: float = 1e-6,
    early_stop: bool = True,
    safeguard: bool = False,
    sign_method: str = "auto",
    lam0s: Sequence[jax.Array | None] | None = None,
    stop_rule: str = "robust",
    inner_sign: str = "matrix_sign",
    polish_steps: int = 2,
) -> list[tuple[jax.Array, jax.Array, jax.Array, jax.Array]]:
    """:func:`dual_ascent` of several tall banks (any shapes) in one ``lax.while_loop``.

    Every bank takes the same dual steps as in its own loop (each matrix stops at its own step;
    a stopped matrix is frozen), so the results equal per-bank :func:`dual_ascent` calls; the
    loop runs K' = the largest step count of any matrix once instead of once per bank (one loop
    condition, hence one device→host predicate copy, per dual step for the whole tree).
    Arguments as :func:`dual_ascent`, per bank; returns its ``(A, violation, steps, lam)`` per
    bank.
    """
    _check_stop_rule(stop_rule)
    _check_inner_sign(inner_sign, polish_steps)
    if len(ws) != len(gs) or not ws:
        raise ValueError(f"need as many G banks as W banks (>= 1), got {len(ws)} and {len(gs)}")
    lam0s = [None] * len(ws) if lam0s is None else list(lam0s)
    banks = [_bank_program(w, g, l0, manifold, inner_steps=inner_steps, alpha=alpha, tol=tol,
                           early_stop=early_stop, safeguard=safeguard, sign_method=sign_method,
                           stop_rule=stop_rule, inner_sign=inner_sign, polish_steps=polish_steps)
             for w, g, l0 in zip(ws, gs, lam0s)]

    def advance(step, st, k):
        if len(banks) == 1:  # the loop condition already stops a finished single bank
            return step(st, k)
        # a bank whose matrices have all stopped skips its sign evaluations
        return jax.lax.cond(jnp.all(st[5]), lambda: st, lambda: step(st, k))

    def body(carry):
        k, states = carry
        return k + 1, tuple(advance(step, st, k) for (_, step), st in zip(banks, states))

    def cond(carry):
        k, states = carry
        all_done = jnp.all(jnp.stack([jnp.all(st[5]) for st in states]))
        return (k < inner_steps) & ~all_done

    init = (jnp.asarray(0, jnp.int32), tuple(st0 for st0, _ in banks))
    _, states = jax.lax.while_loop(cond, body, init)
    return [(st[1], st[2], st[4], st[3]) for st in states]


def _bank_program(w, g, lam0, manifold, *, inner_steps, alpha, tol, early_stop, safeguard,
                  sign_method, stop_rule, inner_sign, polish_steps):
    """(initial state, step(state, k) -> state) of one tall bank's dual ascent.

    State: ``(lam, a_out, v_out, lam_out, used, done, q)``.
    """
    robust = stop_rule == "robust"
    proj = tangent_projector(manifold)
    batch, m, n = w.shape
    wtg = mT(w) @ g
    if lam0 is None:
        lam0 = -0.25 * proj(wtg + mT(wtg))
    lam0 = lam0.astype(w.dtype)
    sel = lambda mask, a, b: jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b)
    keep_best = safeguard or robust
    if robust:
        floor = robust_tolerance(
            m, sign_method if inner_sign == "matrix_sign" else "accurate", w.dtype
        )
        tol_v = jnp.asarray(max(tol, floor), w.dtype)
        u_acc = float(jnp.finfo(w.dtype).eps)
        # ‖ΔM‖_F = 2·α_k·‖P(H)‖_F = 2·α_k·n·RMS(H) (W orthonormal up to its scales) against the
        # round-off u·‖G‖_F of M = G + 2W·P(Λ): below it the step changes nothing
        g_norm = jnp.sqrt(jnp.sum(jnp.square(g), axis=(-2, -1)))
        stall_v = u_acc * g_norm / (2.0 * n)

    def sign_of(mat, q, k):
        if inner_sign == "matrix_sign":
            return linalg.matrix_sign(mat, sign_method), q
        cold = lambda: gram_sign.gram_sign(mat, GRAM_COEFFS)[:2]  # noqa: E731
        if inner_sign == "gram":
            return cold()
        s_w, q_w, res = gram_sign.polish(mat, q, polish_steps)
        bad = (k == 0) | ~(res <= WARM_RESIDUAL)  # NaN counts as bad
        s_c, q_c = jax.lax.cond(jnp.any(bad), cold, lambda: (s_w, q_w))
        return sel(bad, s_c, s_w), sel(bad, q_c, q_w)

    def step_fn(state, k):
        lam, a_out, v_out, lam_out, used, done, q = state
        lam_s = 0.5 * (lam + mT(lam))
        a, q = sign_of(g + 2.0 * (w @ proj(lam_s)), q, k)
        a = a.astype(w.dtype)
        wta = mT(w) @ a
        h = proj(wta + mT(wta))
        v = _rms(h)
        active = ~done
        best_before = v_out
        if keep_best or early_stop:
            take = active & (v < v_out) if keep_best else active
            a_out = sel(take, a, a_out)
            v_out = jnp.where(take, v, v_out)
            lam_out = sel(take, lam, lam_out)
        else:  # every matrix takes every iterate: skip the selects (memory traffic)
            a_out, v_out, lam_out = a, v, lam
        used = jnp.where(active, k + 1, used)
        step = (alpha * (1.0 - k / inner_steps)).astype(w.dtype)
        if not early_stop:
            stop = jnp.zeros_like(active)
        elif robust:
            stop = active & (
                (v < tol_v) | (step * v <= stall_v) | (v > BLOWUP * best_before)
            )
        else:
            stop = active & (v < tol)
        lam = sel(active & ~stop, lam - step * h, lam)
        return lam, a_out, v_out, lam_out, used, done | stop, q

    init = (
        lam0,
        jnp.zeros_like(w),
        jnp.full((batch,), jnp.inf, w.dtype),
        lam0,
        jnp.zeros((batch,), jnp.int32),
        jnp.zeros((batch,), bool),
        # the previous dual step's Q of the Gram-space sign (S = M·Q); float32 or float64
        None if inner_sign == "matrix_sign" else jnp.zeros(
            (batch, n, n), jnp.float64 if w.dtype == jnp.float64 else jnp.float32
        ),
    )
    return init, step_fn


# --------------------------------------------------------------------------------------------
# Leaves ↔ tall banks
# --------------------------------------------------------------------------------------------


def _layout(path: str, shape: tuple[int, ...], qkv: str) -> matrices.MatrixView:
    """The leaf's matrices in paper 004's tall layout (Q, K, V apart when ``qkv="split"``)."""
    return matrices.view_of(
        path, shape, split_qkv=qkv == "split", orient="tall", owner="manifold_muon"
    )


def _compute_dtype(dtype: Any) -> Any:
    return jnp.promote_types(dtype, jnp.float32)


def _flatten(tree: Any) -> tuple[list[tuple[str, Any]], Any]:
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return [(groups.path_to_str(p), x) for p, x in leaves], treedef


def _check_sign_method(sign_method: str) -> None:
    if sign_method not in linalg.SIGN_METHODS:
        raise ValueError(
            f"unknown sign_method {sign_method!r}; expected one of {list(linalg.SIGN_METHODS)} "
            f"(jaxspectra.linalg.matrix_sign)"
        )


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def project_to_manifold(
    params: Any,
    manifold: str,
    mask: Any = None,
    retraction: str = "default",
    *,
    qkv: str = "whole",
    sign_method: str = "auto",
) -> Any:
    """Put the (masked) matrices of ``params`` on ``manifold`` (paper 004: once, at init).

    Args:
      params: a pytree of arrays.
      manifold: ``"stiefel"``, ``"dgram"`` or ``"oblique"``.
      mask: ``None`` (every leaf; each must be ≥ 2-D), a pytree of bools like ``params`` (or a
        prefix of it), or a callable ``params -> mask``. Unmasked leaves are returned unchanged.
      retraction: ``"default"`` or, for DGram, ``"sorted"`` (the authors').
      qkv: ``"whole"`` or ``"split"`` (a fused qkv put on the manifold per Q, K, V).
      sign_method: method of :func:`jaxspectra.linalg.matrix_sign`.
    """
    check_retraction(manifold, retraction)
    _check_qkv(qkv)
    _check_sign_method(sign_method)
    if mask is None:
        mask_tree = jax.tree.map(lambda _: True, params)
    else:
        mask_tree = mask(params) if callable(mask) else mask
        mask_tree = jax.tree.map(
            lambda m, sub: jax.tree.map(lambda _: bool(m), sub), mask_tree, params
        )

    def one(path, x, on):
        if not on:
            return x
        p = groups.path_to_str(path)
        lay = _layout(p, jnp.shape(x), qkv)
        x = jnp.asarray(x)
        bank = matrices.to_stack(x.astype(_compute_dtype(x.dtype)), lay)
        out = retractions.retract(bank, manifold, retraction, sign_method=sign_method)
        return matrices.from_stack(out, lay).astype(x.dtype)

    return jax.tree_util.tree_map_with_path(one, params, mask_tree)


def _check_qkv(qkv: str) -> None:
    if qkv not in QKV_MODES:
        raise ValueError(f"unknown qkv mode {qkv!r}; expected one of {list(QKV_MODES)}")


def manifold_muon(
    learning_rate: optax.ScalarOrSchedule,
    manifold: str = "stiefel",
    *,
    momentum: float = 0.95,
    inner_steps: int = 20,
    alpha: float = 0.1,
    tol: float = 1e-6,
    early_stop: bool = True,
    sign_method: str = "auto",
    retraction: str = "default",
    safeguard: bool = False,
    warm_start: bool = False,
    qkv: str = "whole",
    retraction_sign_method: str | None = None,
    weight_decay: float = 0.0,
    stop_rule: str = "robust",
    inner_sign: str = "matrix_sign",
    polish_steps: int = 2,
    one_loop: bool = False,
) -> optax.GradientTransformation:
    """Manifold Muon (paper 004, App. A) as an ``optax.GradientTransformation``.

    Every leaf it sees must be a matrix (``(..., fan_in, fan_out)``; leading axes are a batch of
    matrices); route embeddings, head and 1-D params elsewhere with ``optax.partition`` (see
    ``jaxspectra.optim.module_wise``). No weight decay is applied by default (paper 004: none on
    manifold-managed weights). Put the weights on the manifold first with
    :func:`project_to_manifold`.

    Args:
      learning_rate: η (a scalar or an optax schedule of the step count).
      manifold: ``"stiefel"`` (WᵀW = I), ``"dgram"`` (WᵀW diagonal) or ``"oblique"``
        (diag(WᵀW) = 1).
      momentum: μ of the sum-form Nesterov momentum (``optax.trace(μ, nesterov=True)``).
      inner_steps: K, maximum dual-ascent steps (20 in the paper).
      alpha: dual step size α (0.1 in the paper), annealed α(1 − k/K).
      tol: early-stop threshold on RMS(P(WᵀA + AᵀW)) (1e-6, the authors' default; the robust
        rule raises it to the round-off floor :func:`robust_tolerance`).
      early_stop: stop each matrix once below ``tol`` (the authors' training path).
      stop_rule: ``"robust"`` (default; see :func:`dual_ascent`: keeps the best iterate, a
        tolerance at the round-off floor and ∝ ‖G‖, and a stop when the violation blows up —
        it cannot diverge in float32) or ``"absolute"`` (the authors' RMS(H) < ``tol``; on a
        square 16×16 Stiefel matrix whose skew(WᵀG) has a singular-value pair at 1e-3 of the
        largest its violation grows from round-off to ~0.2 in 20 steps,
        ``tests/optim/test_manifold_muon.py``).
      inner_sign: ``"matrix_sign"`` (default: ``sign_method`` per dual step), ``"gram"`` (the
        sign through the n×n Gram in float32, :mod:`jaxspectra.optim.gram_sign`: fewer FLOPs
        for tall matrices, m ≥ 2n) or ``"gram_warm"`` (each dual step's sign polished from the
        previous one's; approximate, see :func:`dual_ascent`). Beyond the paper; ``sign_method``
        still sets the retraction's sign unless ``retraction_sign_method`` is given.
      polish_steps: polishing steps of ``inner_sign="gram_warm"`` (1–3).
      one_loop: run the dual ascent of every bank (matrix shape) in one ``lax.while_loop``
        (:func:`dual_ascent_banks`; the same result) instead of one loop per bank.
      sign_method: method of :func:`jaxspectra.linalg.matrix_sign` for the inner signs and the
        polar-factor retractions (``"auto"``: its mixed-precision float32 route for the inner
        signs, 1e-4 or an SVD fallback per matrix, and the accurate float32 route for the
        retraction).
      retraction: ``"default"`` (fixes manifold points) or ``"sorted"`` (DGram only: the
        authors' (U Vᵀ)·diag(S)).
      safeguard: return the inner iterate of lowest violation (beyond the paper).
      warm_start: start Λ from the previous step's multiplier (beyond the paper; the first step
        uses Λ₀ = −¼·P(WᵀG + GᵀW)).
      qkv: ``"whole"`` (the authors': a fused qkv is one matrix) or ``"split"`` (Q, K and V each
        constrained separately; the leaf is found by its module name ``qkv``).
      retraction_sign_method: sign method of the retraction's polar factor (``None``: same as
        ``sign_method``, except ``"auto"`` → ``"accurate"``). For ``retraction="sorted"``, ``"svd"`` is the authors' literal SVD;
        any other method uses the polar factor and the Gram's eigenvalues (no SVD).
      weight_decay: λ ≥ 0 of a decoupled decay applied *before* the retraction,
        X = W − η·(A + λ·W), W ← retract(X) (beyond the paper: the scale control paper 004 §4.2
        suggests for DGram weights, whose column scales are otherwise free). It shrinks the
        DGram column norms by (1 − ηλ) per step before the retraction; for Stiefel and oblique,
        whose retraction removes any overall scale, it only shifts the balance between W and
        η·A. ``0.0`` (default) is the step without decay, bit for bit.

    Returns:
      An ``optax.GradientTransformation`` whose ``update(grads, state, params)`` returns
      ``retract(W − η·A) − W`` with state :class:`ManifoldMuonState`.
    """
    check_retraction(manifold, retraction)
    _check_qkv(qkv)
    _check_sign_method(sign_method)
    _check_stop_rule(stop_rule)
    _check_inner_sign(inner_sign, polish_steps)
    # the retraction runs once per step: by default its polar factor is the accurate float32
    # route, so a step at lr = 0 leaves W at float32 round-off (auto's mixed route: ~1e-5)
    ret_sign = ("accurate" if sign_method == "auto" else sign_method) \
        if retraction_sign_method is None else retraction_sign_method
    _check_sign_method(ret_sign)
    if inner_steps < 1:
        raise ValueError(f"inner_steps must be >= 1, got {inner_steps}")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    if alpha <= 0 or tol < 0:
        raise ValueError(f"need alpha > 0 and tol >= 0, got alpha={alpha}, tol={tol}")
    # A Python number is checked now; a traced one (an injected hyper-parameter) is used as is.
    decay = isinstance(weight_decay, (int, float)) and weight_decay != 0
    if isinstance(weight_decay, (int, float)):
        if not weight_decay >= 0:  # also rejects NaN
            raise ValueError(
                f"weight_decay must be >= 0 (decoupled, X = W - lr*(A + wd*W)), got "
                f"{weight_decay}; pass 0.0 for the paper's undecayed manifold weights"
            )
    else:
        decay = True
    trace = optax.trace(decay=momentum, nesterov=True)
    count_swaps = manifold == "dgram" and retraction == "sorted"

    def layouts(params):
        flat, _ = _flatten(params)
        return [_layout(p, jnp.shape(x), qkv) for p, x in flat]

    def init_fn(params):
        flat, treedef = _flatten(params)
        lays = layouts(params)
        dual = None
        if warm_start:
            dual = treedef.unflatten(
                [
                    jnp.zeros(lay.batch_shape + (lay.mn[1],) * 2, _compute_dtype(x.dtype))
                    for lay, (_, x) in zip(lays, flat)
                ]
            )
        viol = treedef.unflatten(
            [jnp.zeros(lay.batch_shape, _compute_dtype(x.dtype)) for lay, (_, x) in zip(lays, flat)]
        )
        zeros_i = lambda: treedef.unflatten(  # noqa: E731
            [jnp.zeros(lay.batch_shape, jnp.int32) for lay in lays]
        )
        return ManifoldMuonState(
            count=jnp.zeros([], jnp.int32),
            momentum=trace.init(params),
            dual=dual,
            violation=viol,
            inner_steps=zeros_i(),
            swaps=zeros_i(),
            swaps_total=zeros_i(),
        )

    def update_fn(grads, state, params=None):
        if params is None:
            raise ValueError("manifold_muon needs params: call update(grads, state, params)")
        g_tree, mom_state = trace.update(grads, state.momentum, params)
        flat_w, treedef = _flatten(params)
        flat_g = treedef.flatten_up_to(g_tree)
        lays = [_layout(p, jnp.shape(x), qkv) for p, x in flat_w]
        lam_prev = treedef.flatten_up_to(state.dual) if warm_start else [None] * len(flat_w)
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate

        # Banks of equal tall shape and compute dtype (jaxspectra.matrices).
        cdts = [_compute_dtype(w.dtype) for _, w in flat_w]
        w_st = [matrices.to_stack(w.astype(c), lay) for (_, w), c, lay in zip(flat_w, cdts, lays)]
        g_st = [matrices.to_stack(g.astype(c), lay) for g, c, lay in zip(flat_g, cdts, lays)]
        plan = matrices.plan_banks(w_st)
        lam_banks = [None] * len(plan.banks)
        if warm_start:
            prev = [lp.reshape((-1,) + lp.shape[-2:]).astype(c) for lp, c in zip(lam_prev, cdts)]
            lam_banks = matrices.to_banks(prev, plan)

        def start(w_b, g_b, lam_prev_b):
            if not warm_start:
                return None
            fresh = -0.25 * tangent_projector(manifold)(mT(w_b) @ g_b + mT(g_b) @ w_b)
            return jnp.where(state.count == 0, fresh, lam_prev_b)

        def finish(w_b, direction):
            a, v, k, lam = direction
            eta = jnp.asarray(lr, w_b.dtype)
            if decay:  # decoupled: X = W − η(A + λW)
                x = w_b - eta * (a + jnp.asarray(weight_decay, w_b.dtype) * w_b)
            else:
                x = w_b - eta * a
            w_new = retractions.retract(x, manifold, retraction, sign_method=ret_sign)
            if count_swaps:
                swaps = rank_changes(x)
            else:
                swaps = jnp.zeros(w_b.shape[:1], jnp.int32)
            return w_new, v, k, lam, swaps

        dual_kw = dict(
            inner_steps=inner_steps,
            alpha=alpha,
            tol=tol,
            early_stop=early_stop,
            safeguard=safeguard,
            sign_method=sign_method,
            stop_rule=stop_rule,
            inner_sign=inner_sign,
            polish_steps=polish_steps,
        )
        w_banks = matrices.to_banks(w_st, plan)
        g_banks = matrices.to_banks(g_st, plan)
        lam0s = [start(w_b, g_b, l_b) for w_b, g_b, l_b in zip(w_banks, g_banks, lam_banks)]
        if one_loop:  # every bank in one while_loop (same result)
            directions = dual_ascent_banks(w_banks, g_banks, manifold, lam0s=lam0s, **dual_kw)
        else:
            directions = [
                dual_ascent(w_b, g_b, manifold, lam0=l0, **dual_kw)
                for w_b, g_b, l0 in zip(w_banks, g_banks, lam0s)
            ]
        results = [finish(w_b, d) for w_b, d in zip(w_banks, directions)]
        per_leaf = matrices.from_banks(results, plan)
        new_w = [matrices.from_stack(r[0], lay) for r, lay in zip(per_leaf, lays)]
        viol = [matrices.per_matrix(r[1], lay) for r, lay in zip(per_leaf, lays)]
        used = [matrices.per_matrix(r[2], lay) for r, lay in zip(per_leaf, lays)]
        lams = [matrices.per_matrix(r[3], lay) for r, lay in zip(per_leaf, lays)]
        swaps = [matrices.per_matrix(r[4], lay) for r, lay in zip(per_leaf, lays)]
        totals = [
            t + s for t, s in zip(treedef.flatten_up_to(state.swaps_total), swaps)
        ]

        updates = [
            (nw - w.astype(nw.dtype)).astype(w.dtype) for nw, (_, w) in zip(new_w, flat_w)
        ]
        new_state = ManifoldMuonState(
            count=optax.safe_increment(state.count),
            momentum=mom_state,
            dual=treedef.unflatten(lams) if warm_start else None,
            violation=treedef.unflatten(viol),
            inner_steps=treedef.unflatten(used),
            swaps=treedef.unflatten(swaps),
            swaps_total=treedef.unflatten(totals),
        )
        return treedef.unflatten(updates), new_state

    return optax.GradientTransformation(init_fn, update_fn)


PAPER004_SIGN = "polar_express"


def paper004_manifold_muon(
    learning_rate: optax.ScalarOrSchedule,
    manifold: str = "stiefel",
    **overrides: Any,
) -> optax.GradientTransformation:
    """Manifold Muon with paper 004's choices (the authors' public code).

    K = 20, α = 0.1, tol = 1e-6 with the per-matrix early stop (``stop_rule="absolute"``: the
    authors' RMS(H) < tol, last iterate kept), μ = 0.95 sum-form Nesterov,
    Polar-Express sign in bf16 (10 steps) for the inner loop and the Stiefel retraction (as their
    ``msign``), the sorted retraction (U Vᵀ)·diag(S) for DGram — exact in their code (an SVD),
    here the ``"accurate"`` polar factor (1e-4) times the Gram's sorted singular values, which is
    the same matrix without a GPU SVD — column normalisation for oblique, no safeguard, no warm
    start, a fused qkv constrained whole. ``overrides`` replace any of these keyword arguments.

    The authors' behaviour, kept: with the bf16 sign as the Stiefel retraction a step at lr = 0
    moves W (‖ΔW‖₂ ≈ 0.1 on a 64×32 matrix) and leaves ‖WᵀW − I‖₂ ≈ 1e-2 (measured in
    ``tests/optim/test_manifold_muon.py``; the library default's float32 retraction leaves it at
    float32 round-off); in float32 the absolute tol = 1e-6 sits at the round-off of a first
    iterate and the dual ascent can diverge (see ``stop_rule``).
    """
    check_manifold(manifold)
    kw: dict[str, Any] = dict(
        momentum=0.95,
        inner_steps=20,
        alpha=0.1,
        tol=1e-6,
        early_stop=True,
        sign_method=PAPER004_SIGN,
        retraction="sorted" if manifold == "dgram" else "default",
        retraction_sign_method="accurate" if manifold == "dgram" else PAPER004_SIGN,
        safeguard=False,
        warm_start=False,
        qkv="whole",
        stop_rule="absolute",
    )
    kw.update(overrides)
    return manifold_muon(learning_rate, manifold, **kw)
