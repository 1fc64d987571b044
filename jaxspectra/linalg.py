"""Spectral linear algebra: matrix sign / polar factor, stable rank, singular spectra, alignment.

Every function works on the last two axes of its input and treats leading axes as a batch (the
``optax.contrib.MuonDimensionNumbers`` convention for stacked layers and experts), is pure and
``jit``/``vmap``-safe.

Matrix sign (paper 003, Def. 5.1, eq. 13): for ``W = U S Vᵀ`` (reduced SVD, rank r)
``sign(W) = U_r V_rᵀ`` — a *partial isometry*: singular values above a relative threshold map
to 1, the others to 0. :func:`matrix_sign` offers

=================  ==========================================================================
method             what it computes
=================  ==========================================================================
``svd``            the reference: thin SVD, σ_i > ``rank_rtol``·σ_1 → 1, the others → 0.
``qdwh``           ``jax.scipy.linalg.polar(method="qdwh")`` (QR-based dynamically weighted
                   Halley), wide inputs transposed; batches go through ``lax.map`` (``vmap``
                   over QDWH took 4.5 s for 12 768² matrices on an H100).
``newton_schulz``  Muon's quintic (3.4445, −4.7750, 2.0315), 5 steps in bf16 after dividing by
                   ‖X‖_F. It does not converge: singular values end in a band around 1.
``polar_express``  Amsel et al. (2025): 8 optimal quintics (the last repeated), each but the last
                   divided by (1.01, 1.01³, 1.01⁵), input divided by 1.01·‖X‖_F; 10 steps in bf16
                   (paper 004's authors' setting).
``accurate``       Polar-Express polynomials re-derived (:func:`polar_express_coefficients`) for
                   the interval [1e-4/√k, 1] (k = min(m, n)), in float32 with full-precision
                   matmuls, followed by a residual check ‖SSᵀ − I‖₂ ≤ ``tol`` per matrix; when
                   a matrix fails, that matrix (only) falls back to ``svd`` (``lax.cond`` per
                   matrix inside ``lax.map``, so the fallback costs nothing when not taken).
``mixed``          the same greedy Polar-Express design, but covering every singular value above
                   the rank threshold (σ/σ_1 > ``rank_rtol``) after dividing by ‖XXᵀ‖_F^½
                   (≥ σ_1, so σ/scale ≥ rank_rtol/k^¼), each step's k×k polynomial
                   M = aI + bG + cG² built from **bf16×3** products (hi/lo bf16 split, float32
                   accumulation: ≈16 mantissa bits, on tensor cores) and applied as Y ← M·Y
                   in float32 while the design's lower bound l_t < :data:`MIXED_SWITCH` (an
                   ill-conditioned iterate amplifies product round-off by 1/l_t), in bf16×3
                   after; the finishing Newton–Schulz quintic runs in float32 (it sets the final
                   singular values: 1 ± 1e-7 instead of bf16×3's 1 ± 1e-5); then the residual
                   ‖SSᵀ − I‖₂ (:func:`sign_error`) on the device, and failing matrices (only)
                   fall back to ``svd`` as in ``accurate``. float64 input runs ``accurate``.
``auto``           ``mixed`` for ≤32-bit floats, ``accurate`` for float64 (see
                   ``benchmarks/bench_linalg.py``: ``sign_gpt2``).
=================  ==========================================================================

Why not a bf16 phase followed by float32 Newton–Schulz polishing: polishing converges to the
polar factor of the *iterate*, whose singular vectors the bf16 phase has already perturbed (by
≈ u_bf16/(σ_i + σ_j)); measured max-abs errors 2e-2 (init) to 2e-1 (κ = 1e4) on 128×256 against
float64. In ``mixed`` the Gram-side polynomial only rotates the iterate by ≤ |E_ij|·|σ_i − σ_j|/
(d_i + d_j) (E its round-off; d_i the new singular values), so bf16×3 there keeps the
error ~1e-5, while the Y-side product must stay float32 until the iterate is well conditioned
(bf16×3 products there: 3e-4–1e-3 at κ = 1e4; plain-bf16 Grams: 2e-3 at any κ).

Polynomial methods apply an odd polynomial to every singular value, so an exactly zero singular
value stays zero, but a small non-zero one is not thresholded: only ``svd`` (and ``accurate``,
whose residual check sends rank-deficient inputs to ``svd``) return the partial isometry of
Def. 5.1 for rank-deficient inputs. A zero matrix maps to the zero matrix under every method.

Example:
  >>> import jax, jax.numpy as jnp
  >>> w = jax.random.normal(jax.random.PRNGKey(0), (3, 64, 32))
  >>> s, err = matrix_sign(w, method="accurate", return_error=True)
  >>> bool(jnp.allclose(s, matrix_sign(w, method="svd"), atol=1e-4)), bool(err.max() < 1e-4)
  (True, True)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxspectra.matrices import mT, oriented

SIGN_METHODS = ("auto", "svd", "qdwh", "newton_schulz", "polar_express", "accurate", "mixed")

#: Muon's Newton–Schulz quintic (Jordan et al. 2024), applied 5 times.
NEWTON_SCHULZ_COEFFS = (3.4445, -4.7750, 2.0315)

#: Amsel et al. (2025), Algorithm 1: the greedy optimal quintics for [1e-3, 1] with cushion
#: 0.024; :func:`polar_express_coefficients` re-derives them (tests compare to 1e-12).
POLAR_EXPRESS_RAW = (
    (8.28721201814563, -23.595886519098837, 17.300387312530933),
    (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
    (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
    (3.3184196573706015, -2.488488024314874, 0.51004894012372),
    (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
    (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
    (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
    (1.875, -1.25, 0.375),
)
#: With the bf16 safety factor: each triple but the last divided by (1.01, 1.01³, 1.01⁵).
POLAR_EXPRESS_COEFFS = tuple(
    (a / 1.01, b / 1.01**3, c / 1.01**5) for a, b, c in POLAR_EXPRESS_RAW[:-1]
) + (POLAR_EXPRESS_RAW[-1],)

_PE_CUSHION = 0.02407327424182761
DEFAULT_STEPS = {"newton_schulz": 5, "polar_express": 10}
#: The ``accurate`` route's design interval is [ACCURATE_MIN_RATIO/√k, 1] after dividing by
#: ‖X‖_F (σ_min/σ_max ≥ ACCURATE_MIN_RATIO is guaranteed to converge without the fallback).
ACCURATE_MIN_RATIO = 1e-4
ACCURATE_TOL = 1e-4
#: What ``method="auto"`` resolves to for ≤32-bit input (float64: ``accurate``; see
#: ``benchmarks/bench_linalg.py``).
AUTO_METHOD = "mixed"
#: ``mixed``: Y ← M·Y runs in float32 while the design's lower bound l_t is below this, in
#: bf16×3 after (round-off amplification 1/l_t ≤ 20: 20·2⁻¹⁷ ≈ 1.5e-4 relative, on the
#: well-conditioned directions only).
MIXED_SWITCH = 0.05
#: ``mixed``: each polynomial but the finishing ones is evaluated at x/MIXED_SAFETY (Polar
#: Express's bf16 safety factor), so round-off that pushes σ a little above the design interval
#: cannot blow up; finishing steps are Newton–Schulz's quintic (1.875, −1.25, 0.375).
MIXED_SAFETY = 1.01
#: ``mixed``: the design's target 1 − f(l) (float32 round-off then dominates).
MIXED_TARGET = 1e-6


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def _check_matrix(x: Any, name: str = "x") -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim < 2:
        raise ValueError(
            f"{name} must have at least 2 dims (the last two are the matrix), got shape {x.shape}"
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating-point array, got dtype {x.dtype}")
    return x


def _work_dtype(dtype: Any) -> Any:
    """float32 for ≤32-bit floats, float64 for float64 (only exists under x64)."""
    return jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32


def _precision(dtype: Any) -> lax.Precision:
    # fp32 on GPUs defaults to TF32 matmuls (10-bit mantissa): the accurate routes need HIGHEST.
    return lax.Precision.DEFAULT if jnp.dtype(dtype).itemsize < 4 else lax.Precision.HIGHEST


def _mm(a: jax.Array, b: jax.Array, precision: lax.Precision) -> jax.Array:
    return jnp.matmul(a, b, precision=precision)


def default_rank_rtol(shape: Sequence[int], dtype: Any = jnp.float32) -> float:
    """Default relative threshold below which a singular value counts as zero.

    ``4·√max(m, n)·eps`` of the working precision (float32: 1.3e-5 at 768, 2.6e-5 at 3072):
    above the round-off floor of an m×n matrix (≈ √max(m, n)·eps·σ_1) and below the
    σ_min/σ_max = 1e-4 that the ``accurate`` route must resolve.
    """
    m, n = shape[-2], shape[-1]
    return float(4.0 * np.sqrt(max(m, n)) * np.finfo(_work_dtype(dtype)).eps)


# ----------------------------------------------------------------------------------------------
# Polar Express coefficient design (Amsel et al. 2025, §4, Thm 4.1)
# ----------------------------------------------------------------------------------------------


def _optimal_quintic(lo: float, hi: float) -> tuple[float, float, float]:
    """Odd quintic p(x) = ax + bx³ + cx⁵ minimising max |1 − p| on [lo, hi] (Remez).

    The optimum equioscillates at lo < q < r < hi, where q, r are p's critical points.
    """
    if lo / hi >= 1 - 5e-6:  # the interval is a point: Newton–Schulz's quintic scaled to hi
        return 15 / 8 / hi, -10 / 8 / hi**3, 3 / 8 / hi**5
    q, r = (3 * lo + hi) / 4, (lo + 3 * hi) / 4
    e_old = np.inf
    a = b = c = 0.0
    for _ in range(100):
        mat = np.array([[x, x**3, x**5, s] for x, s in ((lo, 1), (q, -1), (r, 1), (hi, -1))])
        a, b, c, e = np.linalg.solve(mat, np.ones(4))
        disc = np.sqrt(max(9 * b * b - 20 * a * c, 0.0))
        q, r = np.sqrt((-3 * b + np.array([-1.0, 1.0]) * disc) / (10 * c))
        if abs(e - e_old) < 1e-15:
            break
        e_old = e
    return float(a), float(b), float(c)


@functools.lru_cache(maxsize=64)
def polar_express_coefficients(
    lower: float, steps: int, cushion: float = _PE_CUSHION
) -> tuple[tuple[float, float, float], ...]:
    """The greedy Polar Express composition for singular values in [lower, 1] (float64, NumPy).

    Step t uses the minimax quintic on [max(l_t, cushion·u_t), u_t], rescaled so that
    p(l_t) + p(u_t) = 2; then l_{t+1} = p(l_t), u_{t+1} = 2 − l_{t+1}. With ``lower=1e-3`` and
    8 steps this reproduces :data:`POLAR_EXPRESS_RAW`.
    """
    lo, hi = float(lower), 1.0
    out = []
    for _ in range(steps):
        a, b, c = _optimal_quintic(max(lo, cushion * hi), hi)
        p = lambda x, a=a, b=b, c=c: a * x + b * x**3 + c * x**5
        s = 2.0 / (p(lo) + p(hi))
        a, b, c = a * s, b * s, c * s
        out.append((a, b, c))
        lo = a * lo + b * lo**3 + c * lo**5
        hi = 2.0 - lo
    return tuple(out)


def composition_lower_bound(coeffs: Sequence[tuple[float, float, float]], x: float) -> float:
    """Apply the scalar polynomials in sequence to ``x`` (float64): the fate of one σ."""
    for a, b, c in coeffs:
        x = a * x + b * x**3 + c * x**5
    return float(x)


@functools.lru_cache(maxsize=64)
def _accurate_coefficients(k: int, target: float) -> tuple[tuple[float, float, float], ...]:
    """Fewest greedy quintics that take [ACCURATE_MIN_RATIO/(1.01·√k), 1] to within ``target``."""
    lower = ACCURATE_MIN_RATIO / (1.01 * np.sqrt(k))
    for steps in range(1, 40):
        co = polar_express_coefficients(lower, steps)
        if 1.0 - composition_lower_bound(co, lower) <= target:
            return co
    raise RuntimeError("polar express design did not converge")  # pragma: no cover


@functools.lru_cache(maxsize=64)
def mixed_schedule(
    lower: float, target: float = MIXED_TARGET
) -> tuple[tuple[tuple[float, float, float], ...], int]:
    """The ``mixed`` route's quintics for σ/scale ∈ [lower, 1] and its float32-product step count.

    Greedy Polar Express (:func:`polar_express_coefficients`) for [lower/s, 1] with every
    triple evaluated at x/s (s = :data:`MIXED_SAFETY`), the fewest steps taking ``lower`` to
    ≥ 1 − 1e-3; then Newton–Schulz quintics (1.875, −1.25, 0.375) until
    1 − f(lower) ≤ ``target`` (cubic convergence). Returns ``(coeffs, n_f32)``: the first
    ``n_f32`` steps have a lower bound l_t < :data:`MIXED_SWITCH` and apply M·Y in float32
    (the last step, always a finishing quintic, runs entirely in float32).
    """
    if not 0.0 < lower < 1.0:
        raise ValueError(f"mixed_schedule: lower must be in (0, 1), got {lower!r}")
    s = MIXED_SAFETY
    lo = lower / s
    co: tuple[tuple[float, float, float], ...] = ()
    for steps in range(1, 40):
        raw = polar_express_coefficients(lo, steps)
        co = tuple((a / s, b / s**3, c / s**5) for a, b, c in raw)
        if 1.0 - composition_lower_bound(co, lower) <= 1e-3:
            break
    else:  # pragma: no cover
        raise RuntimeError("mixed_schedule: the polar express design did not converge")
    while 1.0 - composition_lower_bound(co, lower) > target:
        co = co + ((1.875, -1.25, 0.375),)
    n_f32, x = 0, float(lower)
    for a, b, c in co:
        if x >= MIXED_SWITCH:
            break
        n_f32 += 1
        x = a * x + b * x**3 + c * x**5
    return co, n_f32


# ----------------------------------------------------------------------------------------------
# matrix sign
# ----------------------------------------------------------------------------------------------


def _split_bf16(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    """float32 ``a`` = hi + lo exactly, hi = ``a`` rounded to bf16's 8 mantissa bits (nearest,
    ties to even) by integer arithmetic on the bits — not a float32→bf16→float32 round trip,
    which XLA's GPU pass simplifying FP conversions under ``xla_allow_excess_precision`` may
    delete, and lo with it; returns (hi, bf16(lo)): |lo| ≤ 2⁻⁹|a|, 16 mantissa bits in all."""
    bits = lax.bitcast_convert_type(a.astype(jnp.float32), jnp.uint32)
    bits = bits + jnp.uint32(0x7FFF) + ((bits >> 16) & jnp.uint32(1))
    hi = lax.bitcast_convert_type(bits & jnp.uint32(0xFFFF0000), jnp.float32)
    return hi.astype(jnp.bfloat16), (a - hi).astype(jnp.bfloat16)


def _mm_x3(a: jax.Array, b: jax.Array) -> jax.Array:
    """float32 ``a @ b`` from three bf16 products (hi·hi + hi·lo + lo·hi, float32 accumulation).

    Each float32 operand is split (:func:`_split_bf16`) into hi (truncated, exact in bf16) and
    lo = bf16(a − hi) (16 mantissa bits in all); the dropped lo·lo term and lo's rounding leave
    a relative error ≈ 2⁻¹⁶ per product term — 256× below plain bf16, on bf16 tensor cores.
    """
    ah, al = _split_bf16(a)
    bh, bl = _split_bf16(b)
    d = functools.partial(jnp.matmul, preferred_element_type=jnp.float32)
    return d(ah, bh) + (d(ah, bl) + d(al, bh))


def _mixed_sign(x: jax.Array, rank_rtol: float) -> tuple[jax.Array, jax.Array]:
    """The ``mixed`` route (module docstring) on float32 ``x``; returns (S, ‖SSᵀ − I‖₂)."""
    tall = x.shape[-2] > x.shape[-1]
    y = mT(x) if tall else x
    k = y.shape[-2]
    coeffs, n_f32 = mixed_schedule(float(rank_rtol) / k**0.25)
    eye = jnp.eye(k, dtype=y.dtype)
    tiny = jnp.finfo(y.dtype).tiny
    fro = jnp.sqrt(jnp.sum(jnp.square(y), axis=(-2, -1), keepdims=True))
    y = y / (fro + tiny)  # a zero matrix stays zero
    g = _mm_x3(y, mT(y))
    # ‖G‖_F^½ = (Σσ⁴)^¼ ≥ σ_1: after this σ_1 ≤ 1 and σ_i/σ_1 > rank_rtol ⇒ σ_i ≥ rank_rtol/k^¼
    scale = jnp.sqrt(jnp.sqrt(jnp.sum(jnp.square(g), axis=(-2, -1), keepdims=True)))
    y = y / (scale + tiny)
    g = g / (jnp.square(scale) + tiny)
    hp = _precision(jnp.float32)
    f32 = lambda m, y: _mm(m, y, hp)  # noqa: E731

    def poly(g, abc):
        return abc[0] * eye + abc[1] * g + abc[2] * _mm_x3(g, g)

    def step(product):
        def body(y, abc):
            return product(poly(_mm_x3(y, mT(y)), abc), y), None

        return body

    table = jnp.asarray(np.asarray(coeffs, np.float64), y.dtype)
    last = len(coeffs) - 1  # ≥ 1: the design always ends with a finishing quintic
    # step 0 reuses the scaling Gram; steps 1..last−1 form their Gram in bf16×3
    y = (f32 if n_f32 > 0 else _mm_x3)(poly(g, table[0]), y)
    n1 = max(n_f32, 1)
    y, _ = lax.scan(step(f32), y, table[1:n1])
    y, _ = lax.scan(step(_mm_x3), y, table[n1:last])
    # the finishing step entirely in float32: its Gram's and product's round-off set the final
    # singular values (1 − σ ≈ ½·δG_ii), so bf16×3 there would leave ‖SSᵀ − I‖₂ ≈ 1e-5
    a, b, c = (table[last, i] for i in range(3))
    g = _mm(y, mT(y), hp)
    y = _mm(a * eye + b * g + c * _mm(g, g, hp), y, hp)
    y = mT(y) if tall else y
    return y, sign_error(y)


def _fallback_per_matrix(
    xd: jax.Array, s: jax.Array, err: jax.Array, tol: float, rank_rtol: float
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Send the matrices whose residual is not ≤ ``tol`` (NaN included) to ``svd``, only those.

    ``lax.cond`` per matrix inside ``lax.map``, the whole thing behind one ``lax.cond`` on "any
    failed", so a batch that passes pays nothing (one ill-conditioned matrix in a bank of 48
    must not send all 48 to the SVD). Returns (S, error, fell_back).
    """
    failed = ~(err <= tol)

    def fallback(xd, s, e):
        bshape, mshape = xd.shape[:-2], xd.shape[-2:]

        def one(args):
            xi, si, ei, fi = args
            return lax.cond(fi, lambda: _svd_sign(xi, rank_rtol), lambda: (si, ei))

        so, eo = lax.map(
            one,
            (
                xd.reshape((-1, *mshape)),
                s.reshape((-1, *mshape)),
                e.reshape(-1),
                failed.reshape(-1),
            ),
        )
        return so.reshape(bshape + mshape), eo.reshape(bshape)

    s, err = lax.cond(jnp.any(failed), fallback, lambda xd, s, e: (s, e), xd, s, err)
    return s, err, failed


def _polynomial_sign(
    x: jax.Array,
    coeffs: Sequence[tuple[float, float, float]],
    dtype: Any,
    frob_scale: float,
) -> jax.Array:
    """X ← aX + (bA + cA²)X with A = XXᵀ on the short side, after X /= frob_scale·‖X‖_F."""
    prec = _precision(dtype)
    tall = x.shape[-2] > x.shape[-1]
    if tall:
        x = mT(x)
    xf = x.astype(_work_dtype(x.dtype) if jnp.dtype(dtype).itemsize < 4 else dtype)
    norm = jnp.sqrt(jnp.sum(jnp.square(xf), axis=(-2, -1), keepdims=True))
    # a zero matrix stays zero: 0 / (0 + tiny) = 0
    y = (xf / (frob_scale * norm + jnp.finfo(xf.dtype).tiny)).astype(dtype)

    def step(y, abc):
        a, b, c = abc[0], abc[1], abc[2]
        gram = _mm(y, mT(y), prec)
        poly = b * gram + c * _mm(gram, gram, prec)
        return a * y + _mm(poly, y, prec), None

    # lax.scan over the coefficient table: one compiled step whatever the step count
    table = jnp.asarray(np.asarray(coeffs, np.float64), dtype)
    y, _ = lax.scan(step, y, table)
    return mT(y) if tall else y


def _svd_sign(x: jax.Array, rank_rtol: float) -> tuple[jax.Array, jax.Array]:
    """Partial isometry U_r V_rᵀ (σ_i > rank_rtol·σ_1, σ_1 > 0) and its error ‖SSᵀ − P_r‖₂."""
    u, s, vt = jnp.linalg.svd(x, full_matrices=False)
    keep = ((s > rank_rtol * s[..., :1]) & (s[..., :1] > 0)).astype(x.dtype)
    prec = _precision(x.dtype)
    sign = _mm(u * keep[..., None, :], vt, prec)
    # P_r = projector on the kept singular directions of the short side
    basis = mT(vt) if x.shape[-2] > x.shape[-1] else u
    proj = _mm(basis * keep[..., None, :], mT(basis), prec)
    return sign, sign_error(sign, proj)


def _qdwh_one(x2d: jax.Array) -> jax.Array:
    tall_or_square = x2d.shape[0] >= x2d.shape[1]
    y = x2d if tall_or_square else x2d.T
    # jax's QDWH needs a non-zero input; a zero matrix maps to zero.
    nrm = jnp.max(jnp.abs(y))
    safe = jnp.where(nrm > 0, y / jnp.where(nrm > 0, nrm, 1.0), jnp.eye(*y.shape, dtype=y.dtype))
    u, _ = jax.scipy.linalg.polar(safe, method="qdwh")
    u = jnp.where(nrm > 0, u, jnp.zeros_like(u))
    return u if tall_or_square else u.T


def _qdwh_sign(x: jax.Array) -> jax.Array:
    batch = x.shape[:-2]
    flat = x.reshape((-1,) + x.shape[-2:])
    if flat.shape[0] == 1:
        out = _qdwh_one(flat[0])[None]
    else:
        out = lax.map(_qdwh_one, flat)  # not vmap: batched QDWH is pathologically slow on GPU
    return out.reshape(batch + x.shape[-2:])


def _power_norm_sym(m: jax.Array, iters: int = 24) -> jax.Array:
    """Spectral norm of the symmetric matrices ``m`` (…, k, k) by :func:`power_iteration` with
    M as its own adjoint applied once per step (``iters`` products with M in all; a lower bound
    that converges to ‖m‖₂; fixed pseudo-random start)."""
    k = m.shape[-1]
    v0 = jax.random.normal(jax.random.PRNGKey(17), (k,), dtype=m.dtype)
    v0 = jnp.broadcast_to(v0 / jnp.linalg.norm(v0), m.shape[:-1])
    prec = _precision(m.dtype)
    mv = lambda v: jnp.einsum("...ij,...j->...i", m, v, precision=prec)
    est, _, _ = power_iteration(mv, lambda u: u, v0, iters - 1, batch_ndim=m.ndim - 2)
    return est


def sign_error(s: jax.Array, projector: jax.Array | None = None, iters: int = 24) -> jax.Array:
    """Error estimate of a computed sign ``S``: ‖SSᵀ − P‖₂ on the short side (k×k).

    ``P`` defaults to the identity (a full-rank sign is an isometry on its short side). For
    ``S = U f(Σ) Vᵀ`` this is max_i |f(σ_i)² − 1| ≥ ‖S − sign(X)‖₂ when f ≥ 0 (within a factor
    2 of it when small). Power iteration (``iters`` steps, a lower bound of ‖SSᵀ − P‖₂ that is
    within a few % when several σ share the largest deviation), batched over leading axes.
    It measures how far S is from a (partial) isometry, not the error that rounding the input
    to bf16 adds to the singular *vectors* (for the bf16 methods at σ_min/σ_max ≪ 1e-2 that
    error dominates; compare with ``svd`` to see it).
    """
    sf = s.astype(_work_dtype(s.dtype))
    sf = oriented(sf, "wide")
    g = _mm(sf, mT(sf), _precision(sf.dtype))
    p = jnp.eye(g.shape[-1], dtype=g.dtype) if projector is None else projector
    return _power_norm_sym(g - p, iters)


def matrix_sign(
    x: jax.Array,
    method: str = "auto",
    *,
    steps: int | None = None,
    compute_dtype: Any = None,
    rank_rtol: float | None = None,
    tol: float = ACCURATE_TOL,
    return_error: bool = False,
    return_fallback: bool = False,
) -> jax.Array | tuple[jax.Array, ...]:
    """Matrix sign / polar factor of ``x`` over its last two axes (paper 003, Def. 5.1, eq. 13).

    Args:
      x: ``(..., m, n)`` floating array; leading axes are a batch. Wide matrices are handled by
        transposition (polynomial iterations run on the short side's Gram).
      method: one of :data:`SIGN_METHODS` (see the module docstring).
      steps: iteration count for ``newton_schulz`` (default 5) and ``polar_express`` (default
        10; beyond 8 the last triple repeats). ``accurate`` picks its own; ``mixed`` refuses it.
      compute_dtype: working dtype of the polynomial methods (default bf16 for
        ``newton_schulz``/``polar_express``; float32 — float64 for float64 input — for the
        others). Matmuls in float32/64 use ``Precision.HIGHEST`` (no TF32). ``mixed`` fixes its
        own precisions and refuses it.
      rank_rtol: ``svd`` (and the fallback of ``accurate``/``mixed``) map σ_i ≤ rank_rtol·σ_1
        to 0; ``mixed`` covers every σ_i above it. Default :func:`default_rank_rtol`.
      tol: residual threshold on ‖SSᵀ − I‖₂ of ``accurate``/``mixed`` before a matrix falls
        back to ``svd`` (``np.inf``: never).
      return_error: also return :func:`sign_error` per matrix (shape ``x.shape[:-2]``): ‖SSᵀ −
        P‖₂ with P = I, or for ``svd`` (and fallen-back matrices) the projector on the kept
        singular directions.
      return_fallback: also return a bool array (shape ``x.shape[:-2]``): which matrices the
        residual check sent to the SVD (always False for methods without a check).

    Returns:
      ``S`` with ``x``'s shape and dtype, or the tuple ``(S[, error][, fell_back])``.

    Under ``vmap`` the ``lax.cond`` of the fallback becomes a select (the ``svd`` fallback then
    always runs): pass batches as leading axes instead of vmapping.
    """
    x = _check_matrix(x)
    if method not in SIGN_METHODS:
        raise ValueError(f"unknown matrix_sign method {method!r}; known: {list(SIGN_METHODS)}")
    if method == "auto":
        method = "accurate" if jnp.dtype(x.dtype) == jnp.float64 else AUTO_METHOD
    if steps is not None and (int(steps) != steps or steps < 1):
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if method == "mixed" and (steps is not None or compute_dtype is not None):
        raise ValueError(
            "matrix_sign(method='mixed') chooses its own steps and precisions (bf16x3 Grams, "
            "float32 products); drop steps/compute_dtype, or use method='accurate' or "
            "'polar_express' to set them"
        )
    if method == "mixed" and jnp.dtype(x.dtype) == jnp.float64:
        method = "accurate"  # bf16 splits are meaningless at float64 precision
    if rank_rtol is None:
        rank_rtol = default_rank_rtol(x.shape, _work_dtype(x.dtype))
    if method == "mixed" and not 0.0 < rank_rtol < 1.0:
        raise ValueError(f"matrix_sign(method='mixed') needs 0 < rank_rtol < 1, got {rank_rtol}")
    s, err, fb = _matrix_sign_jit(
        x,
        method=method,
        steps=None if steps is None else int(steps),
        compute_dtype=None if compute_dtype is None else jnp.dtype(compute_dtype),
        rank_rtol=float(rank_rtol),
        tol=float(tol),
        return_error=bool(return_error),
    )
    out = (s,) + ((err,) if return_error else ()) + ((fb,) if return_fallback else ())
    return out[0] if len(out) == 1 else out


@functools.partial(
    jax.jit,
    static_argnames=("method", "steps", "compute_dtype", "rank_rtol", "tol", "return_error"),
)
def _matrix_sign_jit(
    x: jax.Array,
    *,
    method: str,
    steps: int | None,
    compute_dtype: Any,
    rank_rtol: float,
    tol: float,
    return_error: bool,
) -> tuple[jax.Array, jax.Array | None, jax.Array]:
    out_dtype = x.dtype
    work = _work_dtype(x.dtype)
    k = min(x.shape[-2], x.shape[-1])
    err = None
    fell_back = jnp.zeros(x.shape[:-2], bool)

    if method in ("newton_schulz", "polar_express"):
        dtype = jnp.bfloat16 if compute_dtype is None else compute_dtype
        n = steps or DEFAULT_STEPS[method]
        if method == "newton_schulz":
            coeffs, scale = [NEWTON_SCHULZ_COEFFS] * n, 1.0
        else:
            pe = list(POLAR_EXPRESS_COEFFS)
            coeffs, scale = (pe + [pe[-1]] * max(0, n - len(pe)))[:n], 1.01
        s = _polynomial_sign(x, coeffs, dtype, scale).astype(out_dtype)
    elif method == "svd":
        dtype = work if compute_dtype is None else compute_dtype
        s, err = _svd_sign(x.astype(dtype), rank_rtol)
        s = s.astype(out_dtype)
    elif method == "qdwh":
        dtype = work if compute_dtype is None else compute_dtype
        s = _qdwh_sign(x.astype(dtype)).astype(out_dtype)
    else:  # accurate, mixed: a polynomial, its residual, the SVD for the matrices that fail
        if method == "mixed":
            xd = x.astype(jnp.float32)
            s, err = _mixed_sign(xd, rank_rtol)
        else:
            dtype = work if compute_dtype is None else compute_dtype
            target = 1e-7 if jnp.dtype(dtype).itemsize <= 4 else 1e-12
            coeffs = _accurate_coefficients(k, target)
            if steps is not None:
                coeffs = polar_express_coefficients(
                    ACCURATE_MIN_RATIO / (1.01 * np.sqrt(k)), steps
                )
            xd = x.astype(dtype)
            s = _polynomial_sign(xd, coeffs, dtype, 1.01)
            err = sign_error(s)
        # the zero matrix's sign is zero (its residual against P = 0 vanishes)
        zero = jnp.all(xd == 0, axis=(-2, -1))
        err = jnp.where(zero, 0.0, err)
        s, err, fell_back = _fallback_per_matrix(xd, s, err, tol, rank_rtol)
        s = s.astype(out_dtype)

    if not return_error:
        return s, None, fell_back
    if err is None:
        err = sign_error(s)
    return s, err, fell_back


# ----------------------------------------------------------------------------------------------
# spectra, stable rank, power iteration, alignment
# ----------------------------------------------------------------------------------------------


def singular_values(w: jax.Array, method: str = "gram") -> jax.Array:
    """Singular values of ``w`` over its last two axes, descending, shape ``(..., min(m, n))``.

    ``method="gram"`` (default) takes √λ of the short side's Gram matrix (``eigvalsh``; 4–25×
    cheaper than SVD on an H100). Its absolute error is ≈ eps·σ_1²/σ_i, so values below
    ≈ √eps·σ_1 (3e-4·σ_1 in float32) are only resolved to that level; ``method="svd"`` is the
    reference. Computed in float32 (float64 for float64 input).
    """
    w = _check_matrix(w, "w")
    wf = w.astype(_work_dtype(w.dtype))
    if method == "svd":
        return jnp.linalg.svd(wf, compute_uv=False)
    if method != "gram":
        raise ValueError(f"unknown singular_values method {method!r}; known: ['gram', 'svd']")
    wf = oriented(wf, "wide")
    gram = _mm(wf, mT(wf), _precision(wf.dtype))
    lam = jnp.linalg.eigvalsh(gram)[..., ::-1]
    return jnp.sqrt(jnp.clip(lam, 0.0, None))


def spectral_norm(w: jax.Array) -> jax.Array:
    """‖W‖₂ = σ_1 (exact, from the SVD's singular values), shape ``w.shape[:-2]``."""
    return singular_values(w, method="svd")[..., 0]


def frobenius_norm_sq(w: jax.Array) -> jax.Array:
    """‖W‖_F² over the last two axes (float32 or float64)."""
    wf = jnp.asarray(w).astype(_work_dtype(jnp.asarray(w).dtype))
    return jnp.sum(jnp.square(wf), axis=(-2, -1))


def _safe_div(num: jax.Array, den: jax.Array) -> jax.Array:
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


def stable_rank(w: jax.Array) -> jax.Array:
    """srank(W) = ‖W‖_F² / ‖W‖₂² (paper 003, Def. 3.1), exact; 0 for a zero matrix."""
    w = _check_matrix(w, "w")
    return _safe_div(frobenius_norm_sq(w), jnp.square(spectral_norm(w)))


def singular_distribution(w: jax.Array, method: str = "gram") -> jax.Array:
    """Σ̂ = Σ / tr Σ (paper 002, Def. 3.1): singular values normalised to sum 1 (descending)."""
    s = singular_values(w, method)
    return _safe_div(s, jnp.sum(s, axis=-1, keepdims=True))


def _tree_norm(t: Any, batch_ndim: int = 0) -> jax.Array:
    """‖t‖ over every leaf's axes after the first ``batch_ndim`` (shape: the batch)."""
    return jnp.sqrt(
        sum(
            jnp.sum(jnp.square(x), axis=tuple(range(batch_ndim, x.ndim)))
            for x in jax.tree_util.tree_leaves(t)
        )
    )


def _tree_normalise(t: Any, n: jax.Array, batch_ndim: int) -> Any:
    """t / n per batch entry (0 where n = 0), in each leaf's dtype."""

    def one(x):
        nn = n.reshape(n.shape + (1,) * (x.ndim - batch_ndim))
        return _safe_div(x, nn).astype(x.dtype)

    return jax.tree_util.tree_map(one, t)


def power_iteration(
    matvec: Callable[[Any], Any],
    rmatvec: Callable[[Any], Any],
    x0: Any,
    iters: int = 20,
    *,
    key: jax.Array | None = None,
    dtype: Any = jnp.float32,
    batch_ndim: int = 0,
) -> tuple[jax.Array, Any, Any]:
    """Top singular triple (σ, u, v) of a linear operator A given as closures (the one power
    iteration of the library: the Jacobian monitor, :func:`top_singular_pair`, :func:`sign_error`).

    Args:
      matvec: ``v ↦ A v`` (e.g. a ``jax.jvp`` of a layer map); inputs/outputs may be pytrees.
      rmatvec: ``u ↦ Aᵀ u`` (e.g. the ``jax.vjp`` function). For a symmetric A pass the identity
        to iterate v ← Av/‖Av‖ (σ is then |λ|_max).
      x0: a start vector (array or pytree in A's input space), or a shape tuple, in which case
        the start is ``normal(key, shape, dtype)`` (``key`` defaults to ``PRNGKey(0)``).
      iters: number of AᵀA applications.
      batch_ndim: the leading axes of every leaf that index *independent* operators (a batch of
        matrices); norms are taken per batch entry and σ has the batch's shape.

    Returns:
      ``(sigma, u, v)`` with ‖v‖ = ‖u‖ = 1 and A v = σ u (σ a lower bound that converges to
      ‖A‖₂ at the rate (σ_2/σ_1)^(2·iters)). A zero operator gives σ = 0 and u = 0.
    """
    if isinstance(x0, tuple) and all(isinstance(d, int) for d in x0):
        x0 = jax.random.normal(jax.random.PRNGKey(0) if key is None else key, x0, dtype)
    v = _tree_normalise(x0, _tree_norm(x0, batch_ndim), batch_ndim)

    def body(_, v):
        w = rmatvec(matvec(v))
        return _tree_normalise(w, _tree_norm(w, batch_ndim), batch_ndim)

    v = lax.fori_loop(0, iters, body, v)
    av = matvec(v)
    sigma = _tree_norm(av, batch_ndim)
    return sigma, _tree_normalise(av, sigma, batch_ndim), v


def top_singular_pair(
    w: jax.Array, iters: int = 30, key: jax.Array | None = None
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(σ_1, u_1, v_1) of ``w`` (…, m, n) by power iteration on WᵀW; batched over leading axes.

    Returns σ of shape ``(...)``, u ``(..., m)``, v ``(..., n)`` with W v = σ u. σ converges
    to ‖W‖₂ from below at the rate (σ_2/σ_1)^(2·iters); the vectors' sign is arbitrary.
    """
    w = _check_matrix(w, "w")
    wf = w.astype(_work_dtype(w.dtype))
    prec = _precision(wf.dtype)
    mv = lambda v: jnp.einsum("...ij,...j->...i", wf, v, precision=prec)
    rmv = lambda u: jnp.einsum("...ij,...i->...j", wf, u, precision=prec)
    key = jax.random.PRNGKey(0) if key is None else key
    v0 = jax.random.normal(key, wf.shape[:-2] + wf.shape[-1:], wf.dtype)
    return power_iteration(mv, rmv, v0, iters, batch_ndim=wf.ndim - 2)


def spectral_norm_power(w: jax.Array, iters: int = 30, key: jax.Array | None = None) -> jax.Array:
    """‖W‖₂ by power iteration (a lower bound; see :func:`top_singular_pair`)."""
    return top_singular_pair(w, iters, key)[0]


def stable_rank_power(w: jax.Array, iters: int = 30, key: jax.Array | None = None) -> jax.Array:
    """srank(W) with ‖W‖₂ from power iteration: an upper bound that converges to
    :func:`stable_rank` (used by adaptive MSign and the monitors; matvecs only)."""
    w = _check_matrix(w, "w")
    return _safe_div(frobenius_norm_sq(w), jnp.square(spectral_norm_power(w, iters, key)))


def alignment(a: jax.Array, b: jax.Array, method: str = "svd", iters: int = 30) -> jax.Array:
    """Align(A, B) = |v_{A,1}ᵀ u_{B,1}| (paper 003, Def. 3.2) for A (…, m, k), B (…, k, n).

    v_{A,1} is A's top right singular vector and u_{B,1} B's top left singular vector (both in
    ℝᵏ, the space the product AB contracts). ``method="svd"`` (exact) or ``"power"``
    (:func:`top_singular_pair`, ``iters`` steps). Meaningless when σ_1 ≈ σ_2 (the top vector
    is then not unique).
    """
    a = _check_matrix(a, "a")
    b = _check_matrix(b, "b")
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(f"alignment needs A @ B defined, got A {a.shape} and B {b.shape}")
    if method == "svd":
        _, _, vta = jnp.linalg.svd(a.astype(_work_dtype(a.dtype)), full_matrices=False)
        ub, _, _ = jnp.linalg.svd(b.astype(_work_dtype(b.dtype)), full_matrices=False)
        va, ub1 = vta[..., 0, :], ub[..., :, 0]
    elif method == "power":
        _, _, va = top_singular_pair(a, iters)
        _, ub1, _ = top_singular_pair(b, iters)
    else:
        raise ValueError(f"unknown alignment method {method!r}; known: ['svd', 'power']")
    return jnp.abs(jnp.sum(va * ub1.astype(va.dtype), axis=-1))
