"""jaxspectra.linalg against independent ground truth (NumPy float64 SVD, closed forms)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspectra import linalg as L

F32_ONLY = not jax.config.jax_enable_x64


def _orth(rng, b, m, k):
    q, _ = np.linalg.qr(rng.standard_normal((b, m, k)))
    return q


def conditioned(seed, b, m, n, ratio):
    """Random U diag(s) Vᵀ with s_1 = 1, s_k = ratio and the rest log-uniform in between."""
    rng = np.random.default_rng(seed)
    k = min(m, n)
    u, v = _orth(rng, b, m, k), _orth(rng, b, n, k)
    s = np.exp(rng.uniform(np.log(ratio), 0.0, (b, k)))
    s[:, 0], s[:, 1] = 1.0, ratio
    return (u * s[:, None, :]) @ np.swapaxes(v, -1, -2)


def ref_sign(x, rtol=None):
    """Float64 NumPy partial isometry U_r V_rᵀ of the (already rounded) input."""
    x = np.asarray(x, np.float64)
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    if rtol is None:
        keep = s > 0
    else:
        keep = s > rtol * s[..., :1]
    return (u * keep[..., None, :]) @ vt


def errs(s, ref):
    d = np.asarray(s, np.float64) - ref
    return np.abs(d).max(), np.linalg.norm(d, ord=2, axis=(-2, -1)).max()


def test_polar_express_design_reproduces_published_coefficients():
    # Amsel et al. (2025) Alg. 1: greedy minimax quintics for [1e-3, 1] with cushion 0.024.
    ours = np.array(L.polar_express_coefficients(1e-3, 8))
    np.testing.assert_allclose(ours, np.array(L.POLAR_EXPRESS_RAW), rtol=1e-8, atol=1e-8)
    # the bf16 safety factor of the issue: all but the last triple divided by 1.01^(1, 3, 5)
    a, b, c = L.POLAR_EXPRESS_COEFFS[0]
    assert np.allclose([a * 1.01, b * 1.01**3, c * 1.01**5], L.POLAR_EXPRESS_RAW[0])
    assert L.POLAR_EXPRESS_COEFFS[-1] == (1.875, -1.25, 0.375)


@pytest.mark.parametrize("method", ["svd", "qdwh", "accurate"])
@pytest.mark.parametrize("shape", [(3, 48, 24), (2, 24, 40)])
def test_accurate_methods_match_float64_svd(method, shape):
    # σ_min/σ_max = 1e-3: max-abs ≤ 1e-4 (measured ≤ 1e-5) and spectral ≤ 1e-4 (≤ 3e-5).
    x = jnp.asarray(conditioned(0, *shape, 1e-3), jnp.float32)
    s, err = L.matrix_sign(x, method, return_error=True)
    assert s.shape == x.shape and s.dtype == x.dtype
    max_abs, spec = errs(s, ref_sign(x))
    assert max_abs <= 1e-4 and spec <= 1e-4, (max_abs, spec)
    assert err.shape == shape[:1] and float(err.max()) <= 1e-4


def test_accurate_polynomial_alone_reaches_1e4_at_condition_1e4():
    # tol=inf disables the SVD fallback: the re-derived polynomials alone must get there.
    x = jnp.asarray(conditioned(1, 3, 64, 32, 1e-4), jnp.float32)
    s, err = L.matrix_sign(x, "accurate", tol=np.inf, return_error=True)
    max_abs, spec = errs(s, ref_sign(x))
    # float32 itself limits the spectral error at κ = 1e4 (the float32 SVD has the same ~1e-4)
    assert max_abs <= 1e-4, max_abs
    assert spec <= 5e-4, spec
    assert float(err.max()) <= 1e-5  # converged: ‖SSᵀ − I‖₂
    # every 10-step polynomial is still far off at this conditioning (the issue's ≥ 3e-2)
    pe = L.matrix_sign(x, "polar_express", compute_dtype=jnp.float32)
    assert errs(pe, ref_sign(x))[1] >= 3e-2  # spectral: σ_min is left at ≈ 0.05


def test_accurate_falls_back_beyond_its_design_interval():
    # σ_min/σ_max = 1e-7 is outside [1e-4/√k, 1]: the residual check must catch it.
    x = conditioned(2, 2, 40, 20, 1e-7)
    xj = jnp.asarray(x, jnp.float32)
    s_poly, err_poly = L.matrix_sign(xj, "accurate", tol=np.inf, return_error=True)
    assert float(err_poly.max()) > 1e-2  # the polynomial alone fails and says so
    s, err = L.matrix_sign(xj, "accurate", return_error=True)
    np.testing.assert_allclose(s, L.matrix_sign(xj, "svd"), atol=1e-6)
    assert float(err.max()) <= 1e-4


@pytest.mark.parametrize("method", ["svd", "accurate"])
def test_rank_deficient_gives_partial_isometry(method):
    rng = np.random.default_rng(3)
    r = 5
    w = rng.standard_normal((2, 40, r)) @ rng.standard_normal((2, r, 24))
    x = jnp.asarray(w, jnp.float32)
    s, err = L.matrix_sign(x, method, return_error=True)
    sv = np.linalg.svd(np.asarray(s, np.float64), compute_uv=False)
    np.testing.assert_allclose(sv[:, :r], 1.0, atol=1e-5)
    np.testing.assert_allclose(sv[:, r:], 0.0, atol=1e-5)
    ref = ref_sign(x, rtol=L.default_rank_rtol(x.shape))
    assert errs(s, ref)[0] <= 1e-5
    np.testing.assert_allclose(L.stable_rank(s), r, rtol=1e-4)
    assert float(err.max()) <= 1e-4  # ‖SSᵀ − P_r‖₂
    # a thin-SVD UVᵀ of all min(m, n) vectors would have stable rank 24 instead
    assert L.default_rank_rtol((40, 24)) < 1e-4


@pytest.mark.parametrize("method", L.SIGN_METHODS)
def test_zero_matrix_maps_to_zero(method):
    s, err = L.matrix_sign(jnp.zeros((2, 6, 4)), method, return_error=True)
    assert np.all(np.asarray(s) == 0) and np.all(np.isfinite(np.asarray(err)))


@pytest.mark.parametrize(
    "method,steps,dtype,band",
    [
        # measured on these matrices: bf16 [0.24, 1.20], fp32 [0.20, 1.20]
        ("newton_schulz", 5, jnp.bfloat16, (0.15, 1.21)),
        ("newton_schulz", 5, jnp.float32, (0.15, 1.21)),
        # measured: bf16 [0.994, 1.009], fp32 1 ± 1e-6
        ("polar_express", 10, jnp.bfloat16, (0.985, 1.015)),
        ("polar_express", 10, jnp.float32, (1 - 1e-4, 1 + 1e-4)),
    ],
)
def test_polynomial_methods_singular_value_band(method, steps, dtype, band):
    # σ_min/σ_max = 1e-3 (the range); the band is where the output's singular values lie.
    x = jnp.asarray(
        np.concatenate([conditioned(4, 4, 64, 32, 1e-3), conditioned(5, 4, 32, 64, 1e-3).mT]),
        jnp.float32,
    )
    s = L.matrix_sign(x, method, steps=steps, compute_dtype=dtype)
    assert s.dtype == jnp.float32
    sv = np.linalg.svd(np.asarray(s, np.float64), compute_uv=False)
    assert band[0] <= sv.min() and sv.max() <= band[1], (sv.min(), sv.max())
    assert L.DEFAULT_STEPS[method] == steps


@pytest.mark.parametrize("method", ["newton_schulz", "polar_express"])
def test_polynomial_iteration_equals_scalar_composition(method):
    # In float32 the matrix iteration applies the scalar polynomials to σ_i/(c·‖X‖_F):
    # ground truth is the float64 composition on the input's singular values.
    x = conditioned(6, 2, 40, 24, 1e-2)
    xj = jnp.asarray(x, jnp.float32)
    s = L.matrix_sign(xj, method, compute_dtype=jnp.float32)
    _, s_in, _ = np.linalg.svd(np.asarray(xj, np.float64), full_matrices=False)
    fro = np.sqrt((s_in**2).sum(-1, keepdims=True))
    if method == "newton_schulz":
        coeffs, c = [L.NEWTON_SCHULZ_COEFFS] * 5, 1.0
    else:
        pe = list(L.POLAR_EXPRESS_COEFFS)
        coeffs, c = pe + [pe[-1]] * 2, 1.01
    expected = np.vectorize(lambda t: L.composition_lower_bound(coeffs, t))(s_in / (c * fro))
    got = np.linalg.svd(np.asarray(s, np.float64), compute_uv=False)
    np.testing.assert_allclose(np.sort(got), np.sort(expected), atol=2e-5)
    # and the singular vectors are the input's: S = U f(Σ) Vᵀ
    u, _, vt = np.linalg.svd(np.asarray(xj, np.float64), full_matrices=False)
    np.testing.assert_allclose(s, (u * expected[:, None, :]) @ vt, atol=2e-5)


def test_error_estimate_bounds_the_true_error():
    # ‖SSᵀ − I‖₂ = max|f(σ)² − 1| ≥ ‖S − sign X‖₂ for f ≥ 0 (fp32 NS-5 has no input rounding)
    x = jnp.asarray(conditioned(7, 3, 32, 16, 1e-2), jnp.float32)
    s, err = L.matrix_sign(x, "newton_schulz", compute_dtype=jnp.float32, return_error=True)
    sv = np.linalg.svd(np.asarray(s, np.float64), compute_uv=False)
    true = np.abs(sv**2 - 1).max(-1)
    assert np.all((err <= true * (1 + 1e-4)) & (err >= 0.95 * true)), (err, true)
    spec = np.linalg.norm(np.asarray(s, np.float64) - ref_sign(x), ord=2, axis=(-2, -1))
    assert np.all(np.asarray(err) >= spec * (1 - 1e-3))


def test_batched_leading_axes_jit_vmap_and_dtypes():
    x = jnp.asarray(conditioned(8, 6, 20, 12, 1e-2).reshape(2, 3, 20, 12), jnp.float32)
    for method in ("svd", "qdwh", "accurate", "newton_schulz"):
        s = jax.jit(lambda x, m=method: L.matrix_sign(x, m))(x)
        per = jnp.stack([L.matrix_sign(x[i, j], method) for i in range(2) for j in range(3)])
        np.testing.assert_allclose(
            s.reshape(6, 20, 12), per, atol=2e-3 if method == "newton_schulz" else 1e-5
        )
    v = jax.vmap(lambda m: L.matrix_sign(m, "polar_express"))(x[0])
    np.testing.assert_allclose(v, L.matrix_sign(x[0], "polar_express"), atol=1e-2)
    xb = x.astype(jnp.bfloat16)
    assert L.matrix_sign(xb, "accurate").dtype == jnp.bfloat16


@pytest.mark.skipif(F32_ONLY, reason="needs JAX_ENABLE_X64=1")
def test_float64_accurate_route():
    x = jnp.asarray(conditioned(9, 2, 30, 20, 1e-4), jnp.float64)
    s = L.matrix_sign(x, "accurate", tol=np.inf)
    assert s.dtype == jnp.float64
    assert errs(s, ref_sign(x))[1] <= 1e-9


def test_bad_input():
    with pytest.raises(ValueError, match="unknown matrix_sign method"):
        L.matrix_sign(jnp.ones((3, 3)), "cholesky")
    with pytest.raises(ValueError, match="at least 2 dims"):
        L.matrix_sign(jnp.ones(3))
    with pytest.raises(TypeError, match="floating"):
        L.matrix_sign(jnp.ones((3, 3), jnp.int32))
    with pytest.raises(ValueError, match="steps"):
        L.matrix_sign(jnp.ones((3, 3)), "newton_schulz", steps=0)
    with pytest.raises(ValueError, match="singular_values method"):
        L.singular_values(jnp.ones((3, 3)), "qr")
    with pytest.raises(ValueError, match="A @ B"):
        L.alignment(jnp.ones((3, 4)), jnp.ones((3, 4)))


# ---------------------------------------------------------------------------- spectra


def test_singular_values_gram_and_svd_vs_numpy():
    x = conditioned(10, 3, 40, 24, 1e-2)
    ref = np.linalg.svd(x, compute_uv=False)
    for method, tol in (("svd", 1e-6), ("gram", 1e-5)):
        got = L.singular_values(jnp.asarray(x, jnp.float32), method)
        assert got.shape == (3, 24)
        assert np.all(np.diff(np.asarray(got), axis=-1) <= 0)  # descending
        np.testing.assert_allclose(got, ref, atol=tol)  # σ_1 = 1: absolute = relative to σ_1
    # wide input, batched over two axes
    xw = np.swapaxes(x, -1, -2).reshape(3, 1, 24, 40)
    np.testing.assert_allclose(
        L.singular_values(jnp.asarray(xw, jnp.float32)), ref[:, None], atol=1e-5
    )
    sd = L.singular_distribution(jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(sd, ref / ref.sum(-1, keepdims=True), atol=1e-6)
    np.testing.assert_allclose(sd.sum(-1), 1.0, rtol=1e-6)


def test_stable_rank_exact_and_power():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((4, 30, 20))
    s = np.linalg.svd(x, compute_uv=False)
    ref = (s**2).sum(-1) / s[:, 0] ** 2
    xj = jnp.asarray(x, jnp.float32)
    np.testing.assert_allclose(L.stable_rank(xj), ref, rtol=1e-5)
    est = L.stable_rank_power(xj, iters=200)
    np.testing.assert_allclose(est, ref, rtol=1e-3)
    assert np.all(np.asarray(est) >= ref * (1 - 1e-5))  # power iteration: an upper bound
    np.testing.assert_allclose(L.spectral_norm(xj), s[:, 0], rtol=1e-5)
    # rank-one: srank = 1; zero matrix: 0 (no NaN)
    one = jnp.outer(jnp.arange(1.0, 5.0), jnp.ones(3))
    np.testing.assert_allclose(L.stable_rank(one), 1.0, rtol=1e-5)
    assert float(L.stable_rank(jnp.zeros((3, 3)))) == 0.0
    assert float(L.stable_rank_power(jnp.zeros((3, 3)))) == 0.0


def test_top_singular_pair_vs_svd():
    x = conditioned(12, 3, 30, 20, 1e-2)  # σ_1 = 1, σ_2 ≤ ~0.9 (log-uniform): fast convergence
    x[:, :, :] *= np.array([2.0, 3.0, 0.5])[:, None, None]
    u, s, vt = np.linalg.svd(x)
    sig, uu, vv = L.top_singular_pair(jnp.asarray(x, jnp.float32), iters=300)
    np.testing.assert_allclose(sig, s[:, 0], rtol=1e-5)
    np.testing.assert_allclose(np.abs(np.sum(uu * u[:, :, 0], -1)), 1.0, atol=1e-4)
    np.testing.assert_allclose(np.abs(np.sum(vv * vt[:, 0, :], -1)), 1.0, atol=1e-4)
    np.testing.assert_allclose(np.einsum("bij,bj->bi", x, vv), sig[:, None] * uu, atol=1e-5)


def test_power_iteration_on_jvp_vjp_closures():
    # A linear map on a pytree input, given only through jvp/vjp (how the Jacobian monitor uses it)
    rng = np.random.default_rng(13)
    a = jnp.asarray(rng.standard_normal((7, 6)), jnp.float32)
    b = jnp.asarray(rng.standard_normal((7, 4)), jnp.float32)
    f = lambda p: a @ p["x"] + b @ p["y"]
    p0 = {"x": jnp.zeros(6), "y": jnp.zeros(4)}
    mv = lambda v: jax.jvp(f, (p0,), (v,))[1]
    _, vjp = jax.vjp(f, p0)
    rmv = lambda u: vjp(u)[0]
    sig, u, v = jax.jit(lambda x0: L.power_iteration(mv, rmv, x0, iters=300))(
        {"x": jnp.ones(6), "y": jnp.ones(4)}
    )
    dense = np.concatenate([a, b], axis=1)
    uu, ss, vt = np.linalg.svd(dense)
    np.testing.assert_allclose(sig, ss[0], rtol=1e-5)
    vflat = np.concatenate([v["x"], v["y"]])
    assert abs(abs(vflat @ vt[0]) - 1) < 1e-4 and abs(abs(np.asarray(u) @ uu[:, 0]) - 1) < 1e-4
    sig2, _, _ = L.power_iteration(lambda v: a @ v, lambda u: a.T @ u, (6,), iters=300)
    np.testing.assert_allclose(sig2, np.linalg.norm(np.asarray(a), 2), rtol=1e-5)


@pytest.mark.parametrize("method", ["svd", "power"])
def test_alignment_on_constructed_matrices(method):
    # A = Q diag(3, 1, .5, .2) Pᵀ has v_{A,1} = P[:, 0]; B's top left vector is
    # cos θ · P[:, 0] + sin θ · P[:, 1], so Align(A, B) = |cos θ| (paper 003, Def. 3.2).
    rng = np.random.default_rng(14)
    k = 4
    thetas = np.array([0.0, 0.3, 1.0, np.pi / 2, 2.5])
    a_list, b_list = [], []
    for th in thetas:
        q, p = _orth(rng, 1, 5, k)[0], _orth(rng, 1, k, k)[0]
        a_list.append(q @ np.diag([3.0, 1.0, 0.5, 0.2]) @ p.T)
        rot = np.eye(k)
        rot[:2, :2] = [[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]]
        ub = p @ rot  # orthonormal, first column at angle θ to P[:, 0]
        vb = _orth(rng, 1, 6, k)[0]
        b_list.append(ub @ np.diag([2.0, 1.0, 0.4, 0.1]) @ vb.T)
    a, b = jnp.asarray(np.stack(a_list), jnp.float32), jnp.asarray(np.stack(b_list), jnp.float32)
    got = L.alignment(a, b, method=method, iters=200)
    np.testing.assert_allclose(got, np.abs(np.cos(thetas)), atol=1e-4)
    assert got.shape == (5,)


def test_accurate_fallback_is_per_matrix():
    """One ill-conditioned matrix in a batch goes to the SVD; the others keep the polynomial."""
    key = jax.random.PRNGKey(3)
    k1, k2, k3 = jax.random.split(key, 3)
    n = 16
    u, _ = jnp.linalg.qr(jax.random.normal(k1, (3, n, n)))
    v, _ = jnp.linalg.qr(jax.random.normal(k2, (3, n, n)))
    s = jnp.stack([jnp.geomspace(1.0, 1e-2, n), jnp.geomspace(1.0, 1e-9, n),
                   jnp.geomspace(1.0, 1e-3, n)])
    x = jnp.einsum("bik,bk,bjk->bij", u, s, v)
    s_poly, e_poly = L.matrix_sign(x, "accurate", tol=np.inf, return_error=True)
    s_acc, e_acc = L.matrix_sign(x, "accurate", return_error=True)
    s_svd, _ = L.matrix_sign(x, "svd", return_error=True)
    assert e_poly[1] > L.ACCURATE_TOL  # the polynomial fails on the 1e-9 matrix ...
    np.testing.assert_allclose(s_acc[1], s_svd[1], atol=1e-5)  # ... which goes to the SVD
    for i in (0, 2):  # the others are left as the polynomial computed them
        np.testing.assert_array_equal(np.asarray(s_acc[i]), np.asarray(s_poly[i]))
        assert float(e_acc[i]) == float(e_poly[i])
