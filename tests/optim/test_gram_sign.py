"""Gram-space matrix sign (jaxspectra.optim.gram_sign) against a float64 SVD polar factor and the
tall polynomial iteration of jaxspectra.linalg (same coefficients, so the same function)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from jaxspectra import linalg
from jaxspectra.optim import gram_sign as gs

U32 = 2.0**-24  # float32 unit round-off
PE12 = tuple(linalg.POLAR_EXPRESS_COEFFS) + (linalg.POLAR_EXPRESS_COEFFS[-1],) * 4


def _matrix(rng, m, n, smin, batch=2):
    """``batch`` m×n matrices with singular values geometric in [smin, 1] (and their float64
    SVD polar factor U Vᵀ)."""
    out, polar = [], []
    for _ in range(batch):
        u, _ = np.linalg.qr(rng.standard_normal((m, n)))
        v, _ = np.linalg.qr(rng.standard_normal((n, n)))
        out.append((u * np.geomspace(1.0, smin, n)) @ v.T)
        polar.append(u @ v.T)
    return np.stack(out), np.stack(polar)


@pytest.mark.parametrize("m,n,smin", [(64, 16, 1e-2), (96, 32, 0.1), (32, 32, 1e-2)])
def test_gram_sign_matches_svd_and_the_tall_iteration(m, n, smin):
    """Error budget (float32): the Gram carries ≈ √n·u relative round-off, amplified by κ² on the
    smallest singular value, over 12 steps: 12·√n·u·κ² (1e-4 at n = 16, κ = 100)."""
    x, polar = _matrix(np.random.default_rng(0), m, n, smin)
    s, q, res = gs.gram_sign(jnp.asarray(x, jnp.float32), PE12)
    tol = 12 * np.sqrt(n) * U32 * smin**-2
    np.testing.assert_allclose(np.asarray(s, np.float64), polar, atol=tol)
    # the same polynomial composition as the tall route (float32, same table)
    tall = linalg.matrix_sign(jnp.asarray(x, jnp.float32), "polar_express", steps=12,
                              compute_dtype=jnp.float32)
    np.testing.assert_allclose(np.asarray(s), np.asarray(tall), atol=tol)
    assert s.shape == x.shape and q.shape == (2, n, n)
    assert float(res.max()) < 1e-5  # converged: the iteration's own residual says so


def test_coupled_newton_schulz_inverse_square_root():
    """p(x) = (3 − x)/2 is the coupled Newton–Schulz iteration: Q → (MᵀM)^{-1/2}."""
    x, polar = _matrix(np.random.default_rng(1), 48, 12, 0.25, batch=1)
    s, q, res = gs.gram_sign(jnp.asarray(x, jnp.float32), ((1.5, -0.5, 0.0),) * 40)
    np.testing.assert_allclose(np.asarray(s, np.float64), polar, atol=1e-5)
    w, v = np.linalg.eigh(x[0].T @ x[0])
    np.testing.assert_allclose(np.asarray(q[0], np.float64), (v / np.sqrt(w)) @ v.T, rtol=1e-4,
                               atol=1e-4)


def test_polish_from_own_q_is_a_fixed_point_and_residual_flags_divergence():
    x, polar = _matrix(np.random.default_rng(2), 64, 16, 0.05)
    xj = jnp.asarray(x, jnp.float32)
    s, q, _ = gs.gram_sign(xj, PE12)
    s2, _, res = gs.polish(xj, q, 2)
    np.testing.assert_allclose(np.asarray(s2), np.asarray(s), atol=1e-5)
    assert float(res.max()) < 1e-5
    # negative control: a start far from an isometry diverges and the residual says so
    _, _, bad = gs.polish(xj, 50.0 * q, 2)
    assert np.all(np.asarray(bad) > 1e-3)


def test_zero_matrix_flops_and_bad_input():
    s, _, _ = gs.gram_sign(jnp.zeros((1, 8, 4)), PE12)
    assert np.all(np.asarray(s) == 0)
    assert gs.gram_sign_flops(3072, 768, 10) == 4 * 3072 * 768**2 + 80 * 768**3
    with pytest.raises(ValueError, match="transpose"):
        gs.gram_sign(jnp.ones((4, 8)), PE12)
    with pytest.raises(ValueError, match="steps"):
        gs.polish(jnp.ones((8, 4)), jnp.eye(4), 0)


def test_module_docstring_example():
    import doctest

    assert doctest.testmod(gs, raise_on_error=True).failed == 0
