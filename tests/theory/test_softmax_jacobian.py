"""Softmax Jacobian and Lemma 1 (paper 001 eq. 5-7) against jax.jacobian and eigvalsh."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspectra.precision import x64_scope
from jaxspectra.theory.softmax_jacobian import (
    lemma1_bounds,
    lemma1_log10_bounds_from_logits,
    softmax_jacobian,
    softmax_jacobian_eigvals,
    softmax_jacobian_from_logits,
    tangent_condition_number,
)


def _random_logits(seed, batch, n, spread=3.0):
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.1, spread, size=(batch, 1))
    return rng.standard_normal((batch, n)) * scale


def test_matches_jax_jacobian_of_softmax_batched():
    w = _random_logits(0, 12, 7).reshape(3, 4, 7)  # (examples, heads, n)
    with x64_scope():
        w = jnp.asarray(w)
        ours = softmax_jacobian_from_logits(w)
        ref = jax.vmap(jax.vmap(jax.jacobian(jax.nn.softmax)))(w)
        assert ours.shape == (3, 4, 7, 7) and ours.dtype == jnp.float64
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-15)
        # batched == per-vector
        np.testing.assert_allclose(softmax_jacobian(jax.nn.softmax(w[1, 2])), ours[1, 2], atol=0)


def test_lemma1_psd_null_vector_interlacing_and_bounds_seeded_sweep():
    """Lemma 1 on 300 random z (n = 2..9): PSD, J1 = 0, z̃_k ≤ λ_{k+1} ≤ z̃_{k+1}, bounds."""
    for n in (2, 3, 5, 9):
        w = _random_logits(n, 75, n, spread=6.0)
        with x64_scope():
            z = jax.nn.softmax(jnp.asarray(w), axis=-1)
            J = softmax_jacobian(z)
            dense = np.linalg.eigvalsh(np.asarray(J))  # independent ground truth
            lam = np.asarray(softmax_jacobian_eigvals(z))
            kappa = np.asarray(tangent_condition_number(z))
            lo, hi = map(np.asarray, lemma1_bounds(z))
        zs = np.sort(np.asarray(z), axis=-1)
        np.testing.assert_allclose(np.asarray(J), np.swapaxes(np.asarray(J), -1, -2), atol=0)
        assert dense.min() > -1e-15                                   # PSD
        np.testing.assert_allclose(np.asarray(J) @ np.ones(n), 0.0, atol=4e-16)  # J1 = 0 (round-off)
        np.testing.assert_allclose(lam, dense, rtol=1e-9, atol=1e-15)  # secular == eigvalsh
        assert np.all(lam[:, 0] == 0)
        tol = 1e-12 * zs
        assert np.all(lam[:, 1:] >= zs[:, :-1] - tol[:, :-1])      # z̃_k ≤ λ_{k+1}
        assert np.all(lam[:, 1:] <= zs[:, 1:] + tol[:, 1:])        # λ_{k+1} ≤ z̃_{k+1}
        assert np.all((zs[:, 0] > 0) & (zs[:, -1] < 1))
        np.testing.assert_allclose(kappa, dense[:, -1] / dense[:, 1], rtol=1e-8)
        assert np.all(lo <= kappa * (1 + 1e-12)) and np.all(kappa <= hi * (1 + 1e-12))


def test_lemma1_bound_indexing_is_tight():
    """Both bounds bracket κ with the 1-based ascending indices (lower z̃_{n-1}/z̃_2, upper
    z̃_n/z̃_1); the upper one is loose by > 100× here, so it cannot serve as an estimate of κ
    (App. J's κ(J²) ≈ (max a/min a)² uses it as one)."""
    z = np.array([1e-6, 1e-3, 1e-3, 1e-3, 1.0])
    z = z / z.sum()
    with x64_scope():
        kappa = float(tangent_condition_number(z))
        lo, hi = (float(b) for b in lemma1_bounds(z))
    assert lo <= kappa <= hi
    assert hi / kappa > 100  # the upper bound is loose here: z̃_n/z̃_1 is not a lower bound


def test_extreme_sparsity_relative_accuracy():
    """One dominant token, others 1e-8 (n = 20): λ₂ = 1e-8 (18-fold), κ(J|1⊥) = 20 (to 1e-6);
    entries of 1e-200 stay exact where eigvalsh has only absolute accuracy."""
    n = 20
    z = np.full(n, 1e-8)
    z[0] = 1 - (n - 1) * 1e-8
    with x64_scope():
        lam = np.asarray(softmax_jacobian_eigvals(z))
        kappa = float(tangent_condition_number(z))
        z2 = np.array([1e-200, 0.5 - 1e-200, 0.5])
        lam2 = np.asarray(softmax_jacobian_eigvals(z2))
    np.testing.assert_allclose(lam[1:-1], 1e-8, rtol=1e-12)
    # closed form for the last eigenvalue: λ = n·1e-8·z0/(z0 + (n-1)·1e-8)
    np.testing.assert_allclose(lam[-1], n * 1e-8 * z[0] / (z[0] + (n - 1) * 1e-8), rtol=1e-12)
    np.testing.assert_allclose(kappa, 20.0, rtol=1e-6)
    # z = (ε, ½-ε, ½): for λ ≪ ½ the secular equation reads ε/(λ-ε) - 2 = 0, so λ₂ = 1.5ε
    np.testing.assert_allclose(lam2[1], 1.5e-200, rtol=1e-12)


def test_log10_bounds_from_logits_beyond_float64():
    w = np.array([0.0, -100.0, -400.0, -900.0])  # ratios up to e^900 ≈ 1e391: overflow float64
    with x64_scope():
        lo, hi = (float(b) for b in lemma1_log10_bounds_from_logits(w))
        z = jax.nn.softmax(jnp.asarray(w[:3]))
        lo3, hi3 = (float(np.log10(b)) for b in lemma1_bounds(z))
        lo3l, hi3l = (float(b) for b in lemma1_log10_bounds_from_logits(w[:3]))
    assert lo == pytest.approx(300 / np.log(10)) and hi == pytest.approx(900 / np.log(10))
    assert lo3 == pytest.approx(lo3l) and hi3 == pytest.approx(hi3l)


def test_bad_input():
    with pytest.raises(ValueError, match="z"):
        softmax_jacobian(jnp.array(0.3))
    with pytest.raises(ValueError, match="non-finite"):
        tangent_condition_number(np.array([0.5, np.nan]))
    with pytest.raises(ValueError, match="n >= 2"):
        lemma1_bounds(np.array([1.0]))
    with pytest.raises(ValueError, match="non-negative"):
        softmax_jacobian_eigvals(np.array([1.5, -0.5]))
