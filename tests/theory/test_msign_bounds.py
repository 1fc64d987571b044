"""Paper 003 §4 / App. B (jaxspectra.theory.msign_bounds) against SVD, dense products, jax.jacobian.

Tolerances: every quantity is a float64 SVD/product of ≤ 64×64 matrices, so relative error is a
few hundred ulps at most; ``RTOL = 1e3·eps64`` (≈ 2e-13) is used for identities and for the slack
of inequalities."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

from jaxspectra.theory import msign_bounds as B

RTOL = 1e3 * np.finfo(np.float64).eps


def test_thm44_matches_svd():
    rng = np.random.default_rng(0)
    for shape in [(5, 3), (3, 7), (16, 16)]:
        w = rng.standard_normal(shape) * rng.uniform(0.1, 10)
        assert B.spectral_from_stable_rank(w) == pytest.approx(np.linalg.svd(w)[1][0], rel=RTOL)
    assert B.spectral_from_stable_rank(np.zeros((2, 2))) == 0.0
    # the printed eq. 5 without its square root is wrong: F/srank ≠ ‖W‖₂ for srank ≠ 1
    w = np.diag([3.0, 2.0, 1.0])
    srank = np.sum(w**2) / 9.0
    assert abs(np.linalg.norm(w) / srank - 3.0) > 0.5
    with pytest.raises(ValueError, match="2-D"):
        B.spectral_from_stable_rank(np.ones(3))


def test_lemma_b1_on_random_pairs():
    rng = np.random.default_rng(1)
    for _ in range(50):
        a, b = rng.standard_normal((4, 6)), rng.standard_normal((6, 5))
        assert np.linalg.norm(a @ b, 2) >= B.lemma_b1_bound(a, b) * (1 - RTOL)
    # equality when A's top right vector is B's top left vector and the rest is orthogonal
    a, b = np.diag([3.0, 1.0]), np.diag([2.0, 1.0])
    assert B.lemma_b1_bound(a, b) == pytest.approx(6.0) == np.linalg.norm(a @ b, 2)
    with pytest.raises(ValueError, match="undefined"):
        B.align(np.ones((2, 3)), np.ones((2, 3)))


def test_align_against_definition():
    u, _, vt = np.linalg.svd(np.array([[2.0, 1.0], [0.0, 1.0]]))
    a = np.array([[2.0, 1.0], [0.0, 1.0]])
    b = np.outer([1.0, 0.0], [0.0, 1.0]) * 5
    assert B.align(a, b) == pytest.approx(abs(vt[0] @ np.array([1.0, 0.0])), rel=RTOL)


def test_thm42_counterexample_fails_printed_bound():
    ce = B.thm42_counterexample()
    assert ce["M"] == pytest.approx(2.0, rel=RTOL) and ce["a"] == pytest.approx(1 / math.sqrt(2))
    assert ce["bound"] == pytest.approx(4.0, rel=RTOL)
    assert ce["true_norm"] == pytest.approx(2.0, rel=RTOL)
    assert ce["true_norm"] < ce["bound"]  # the theorem's verdict fails here
    # the alignment eq. 24 needs is with the partial product: 1/√10 < a
    assert ce["chained_alignments"][1] == pytest.approx(1 / math.sqrt(10), rel=RTOL)
    assert not B.thm42_condition_holds(ce["jacobians"], ce["a"])
    assert ce["chained_bound"] <= ce["true_norm"] * (1 + RTOL)


def test_chained_bound_always_holds_and_condition_implies_eq4():
    rng = np.random.default_rng(2)
    for _ in range(40):
        L = int(rng.integers(2, 6))
        js = [rng.standard_normal((4, 4)) for _ in range(L)]
        true = np.linalg.norm(B.product(js), 2)
        assert B.chained_bound(js) <= true * (1 + RTOL)
        M = min(np.linalg.norm(j, 2) for j in js)
        a = min(B.chained_alignments(js))
        assert B.thm42_condition_holds(js, a)
        assert B.thm42_bound(M, a, L) <= true * (1 + RTOL)


def test_aligned_chain_has_requested_norms_and_alignment():
    js = B.aligned_chain(jax.random.key(0), L=4, d=6, M=1.5, a=0.8)
    M, a = B.thm42_inputs(js)
    assert M == pytest.approx(1.5, rel=1e-12) and a == pytest.approx(0.8, rel=1e-12)
    with pytest.raises(ValueError, match="0 < a"):
        B.aligned_chain(jax.random.key(0), L=2, d=6, M=1.0, a=0.0)


def test_thm42_bad_input_and_order():
    with pytest.raises(ValueError, match="a > 0"):
        B.thm42_bound(2.0, 0.0, 3)
    with pytest.raises(ValueError, match="application order"):
        B.product([np.ones((3, 2)), np.ones((2, 2))])


def _attn_inputs(seed, n=4, d=6, dk=4):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, d)), rng.standard_normal((d, dk)), rng.standard_normal((d, dk)),
            rng.standard_normal((d, dk)), rng.standard_normal((dk, d)))


def test_thm45_corrected_bounds_hold():
    for seed in range(4):
        h, wq, wk, wv, wo = _attn_inputs(seed)
        for c in (0.5, 2.0):
            r = B.attention_bounds(c * h, wq, wk, wv, wo)
            assert r["dA_norm"] <= r["eq54"] * (1 + RTOL)
            assert r["dY_norm"] <= r["eq55"] * (1 + RTOL)


def test_thm45_eq7_as_printed_fails_without_norm_h():
    # H → cH, W_Q, W_K → W/c keeps S (hence χ) fixed: ‖∂A/∂H‖ ∝ 1/c, printed eq. 7 ∝ 1/c²
    h, wq, wk, wv, wo = _attn_inputs(0)
    r = B.attention_bounds(100 * h, wq / 100, wk / 100, wv, wo)
    assert r["dA_norm"] > r["eq7_printed"]
    assert r["dY_norm"] > r["eq6_printed"] or r["dA_norm"] > r["eq7_printed"]
    assert r["dA_norm"] <= r["eq54"] * (1 + RTOL)


def test_thm45_margin_must_be_of_the_scaled_logits():
    # H = (1, −1)ᵀ, W_Q = W_K = 2e₁ᵀ, d_k = 64: S = 4[[1, −1], [−1, 1]], margin 8 in S but 1 in the
    # softmax's argument S/8 (p = 0.73, far from saturated). χ from S (e^{−8}) under-counts the slope.
    dk = 64
    h = np.array([[1.0], [-1.0]])
    wq = np.zeros((1, dk))
    wq[0, 0] = 2.0
    r = B.attention_bounds(h, wq, wq, np.ones((1, 1)), np.ones((1, 1)))
    assert r["gamma_S"] == pytest.approx(8.0) and r["gamma_scaled"] == pytest.approx(1.0)
    assert r["dA_norm"] > 100 * r["eq54_margin_S"]  # printed margin: the bound fails
    assert r["dY_norm"] > r["eq6_printed"]  # Theorem 4.5 as printed (eqs. 6–7) fails here
    assert r["dA_norm"] <= r["eq54"] * (1 + RTOL)  # the proof's margin: it holds
    assert r["dY_norm"] <= r["eq55"] * (1 + RTOL)


def test_activation_lipschitz_closed_forms():
    from scipy.stats import norm

    lg, zg = B.activation_lipschitz("gelu")
    # GELU' = Φ(z) + zφ(z), maximal where φ(z)(2 − z²) = 0: z = √2
    assert zg == pytest.approx(math.sqrt(2), abs=2e-4)
    assert lg == pytest.approx(norm.cdf(math.sqrt(2)) + math.sqrt(2) * norm.pdf(math.sqrt(2)),
                               abs=1e-7)
    ls, zs = B.activation_lipschitz("silu")
    assert ls == pytest.approx(1.0998, abs=1e-4) and 2.3 < zs < 2.5
    with pytest.raises(ValueError, match="unknown activation"):
        B.activation_lipschitz("tanhh")


def test_thm46_mlp_bound():
    rng = np.random.default_rng(3)
    lg, _ = B.activation_lipschitz("gelu")
    for _ in range(5):
        w1, w2 = rng.standard_normal((5, 12)), rng.standard_normal((12, 5))
        x = rng.standard_normal(5) * 3
        bound = B.mlp_bound(w1, w2, lg)
        assert bound == pytest.approx(lg * np.linalg.norm(w1, 2) * np.linalg.norm(w2, 2), rel=RTOL)
        assert B.mlp_jacobian_norm(x, w1, w2, "gelu") <= bound * (1 + RTOL)
    # negative control: a Lipschitz constant below sup|φ'| is violated at a point where φ' peaks
    w1 = np.eye(1) * math.sqrt(2)
    assert B.mlp_jacobian_norm(np.ones(1), w1 / math.sqrt(2), np.eye(1)) > B.mlp_bound(
        w1 / math.sqrt(2), np.eye(1), 1.0)


def test_thm410_low_rank_gradients():
    rng = np.random.default_rng(4)
    n, d, dk, r = 8, 6, 5, 2
    h = rng.standard_normal((n, r)) @ rng.standard_normal((r, d))
    ht = rng.standard_normal((n, r)) @ rng.standard_normal((r, d))
    ws = [rng.standard_normal((d, dk)) for _ in range(3)] + [rng.standard_normal((dk, d))]
    g = B.attention_weight_grads(h, ht, *ws)
    assert all(B.numerical_rank(x, 1e-10) <= r for x in g.values())
    # negative control: full-rank states give full-rank (> r) gradients
    g = B.attention_weight_grads(rng.standard_normal((n, d)), rng.standard_normal((n, d)), *ws)
    assert all(B.numerical_rank(x, 1e-10) > r for x in g.values())


def test_thm412_condition_and_its_reverse():
    s = np.array([3.0, 2.0, 1.0])
    c_yes = np.array([-3.0, -1.0, -0.2])  # c1/ci = 3, 15 > s1/si = 1.5, 3
    c_no = np.array([-1.0, -1.0, -1.0])   # uniform: c1/ci = 1 < s1/si
    assert B.thm412_condition(s, c_yes) and not B.thm412_condition(s, c_no)
    for eta in (1e-3, 0.5):
        before, after = B.srank_after_step(jax.random.key(1), s, c_yes, eta)
        assert after < before
        before, after = B.srank_after_step(jax.random.key(1), s, c_no, eta)
        assert after > before
    with pytest.raises(ValueError, match="descending"):
        B.thm412_condition(np.array([1.0, 2.0]), np.array([-1.0, -1.0]))
