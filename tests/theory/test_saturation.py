"""Paper 004 §4.2 / App. C (jaxspectra.theory.saturation) against jax.jacobian and the SVD."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jaxspectra.theory import saturation as S

EPS = np.finfo(np.float64).eps
RTOL = 1e3 * EPS


def atol(n: int) -> float:
    """J's entries p_i(δ_ij − p_j) carry absolute error ~eps (p − p² cancels near p = 1): ‖J‖_F's
    error is ≤ n·eps-ish; 8·n·eps leaves margin."""
    return 8 * n * EPS


def test_jacobian_fro_matches_closed_form():
    z = np.array([2.0, -1.0, 0.5, 0.0])
    p = np.exp(z - z.max())
    p /= p.sum()
    j = np.diag(p) - np.outer(p, p)
    assert S.softmax_jacobian_fro(z) == pytest.approx(np.linalg.norm(j), rel=RTOL)
    assert S.logit_gap(z) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="n >= 2"):
        S.logit_gap(np.ones(1))


def test_saturation_bound_holds_on_random_rows():
    rng = np.random.default_rng(0)
    for _ in range(60):
        n = int(rng.choice([2, 7, 40]))
        z = rng.standard_normal(n) * rng.uniform(0.1, 20)
        assert S.softmax_jacobian_fro(z) <= S.saturation_bound(S.logit_gap(z), n) + atol(n)
    # worst case for a given gap: the other n−1 logits tied at the gap
    for n in (2, 5, 100):
        for gap in (0.0, 1.0, 5.0, 20.0):
            z = np.r_[gap, np.zeros(n - 1)]
            jf = S.softmax_jacobian_fro(z)
            f = S.saturation_bound(gap, n)
            assert jf <= f + atol(n)
            assert f <= 2 * (n - 1) * math.exp(-gap) * (1 + RTOL)
    # n = 2 is asymptotically tight: ‖J‖_F/f = 2/(2 + e^{−δ}) → 1 (error eps/e^{−δ} ≈ 4e-11 here)
    t = math.exp(-12.0)
    assert S.softmax_jacobian_fro(np.array([12.0, 0.0])) / S.saturation_bound(12.0, 2) == \
        pytest.approx(2 / (2 + t), rel=1e-9)
    assert S.saturation_bound(1e4, 1024) == 0.0  # no overflow at huge gaps
    with pytest.raises(ValueError, match=">= 0"):
        S.saturation_bound(-1.0, 3)


def test_bound_without_the_n_minus_1_factor_fails():
    # negative control: 1024 tokens (a GPT-2 row), 1023 tied at gap 6 — not saturated
    z = np.r_[6.0, np.zeros(1023)]
    jf = S.softmax_jacobian_fro(z)
    assert jf > 40 * 2 * math.exp(-6.0)  # a bound of the form 2e^{−δ} (no n−1) fails by 40×
    assert jf <= S.saturation_bound(6.0, 1024)


def test_logit_bounds():
    rng = np.random.default_rng(1)
    for _ in range(20):
        x = rng.standard_normal((5, 6))
        wq, wk = rng.standard_normal((6, 3)), rng.standard_normal((6, 3))
        r = S.logit_bounds(x, wq, wk, scale=1 / math.sqrt(3))
        assert r["spec"] <= r["spec_bound"] * (1 + RTOL)
        assert r["entry_ratio_max"] <= 1 + RTOL
    with pytest.raises(ValueError, match="W_Q and W_K"):
        S.logit_bounds(np.ones((3, 4)), np.ones((5, 2)), np.ones((5, 2)))


def test_prop41_stiefel_lower_bound_holds_and_is_needed():
    rng = np.random.default_rng(2)
    n, d, dh, R = 6, 8, 4, 1.5
    c = S.prop41_lower_bound(n, R, 1 / math.sqrt(dh))
    worst = np.inf
    for _ in range(30):
        wq = np.linalg.qr(rng.standard_normal((d, dh)))[0]
        wk = np.linalg.qr(rng.standard_normal((d, dh)))[0]
        x = rng.standard_normal((n, d))
        x *= R / np.linalg.norm(x, axis=1, keepdims=True)  # ‖x_i‖ = R, the extreme radius
        # adversarial-ish: a query aligned with W_Q W_Kᵀ's top direction
        u, _, vt = np.linalg.svd(wq @ wk.T)
        x[0], x[1] = R * u[:, 0], R * vt[0]
        row = S.logit_bounds(x, wq, wk, 1 / math.sqrt(dh))["S"][0]
        assert np.max(np.abs(row)) <= R**2 / math.sqrt(dh) * (1 + RTOL)
        worst = min(worst, S.softmax_jacobian_fro(row))
    assert worst >= c > 0
    # negative control: the same bound fails once the weights leave the Stiefel manifold (×5)
    x = np.zeros((n, d))
    x[0, 0] = R
    x[1:, 1] = R
    w = 5 * np.eye(d, dh)
    row = S.logit_bounds(x, w, w, 1 / math.sqrt(dh))["S"][0]
    assert S.softmax_jacobian_fro(row) < c


def test_prop42_dgram_saturates():
    prev = np.inf
    for s in (1.0, 3.0, 10.0, 30.0):
        r = S.prop42_construction(s)
        g = r["gram"]
        assert np.allclose(g, np.diag(np.diag(g)))  # DGram-feasible
        assert np.linalg.norm(r["wq"], 2) == pytest.approx(s)
        assert np.all(np.linalg.norm(r["x"], axis=1) <= 1 + RTOL)
        assert r["jac_fro"] <= S.saturation_bound(r["gap"], 4) + atol(4)
        assert r["jac_fro"] < prev or r["jac_fro"] == 0.0
        prev = r["jac_fro"]
    assert prev < 1e-50
    with pytest.raises(ValueError, match="d >= d_h"):
        S.prop42_construction(1.0, d=2, d_h=3)
