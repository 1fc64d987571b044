"""Paper 001's results on random instances, and the counterexamples to its false statements."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspectra.precision import x64_scope
from jaxspectra.theory.operators import block_operator_J, hp_operator
from jaxspectra.theory.prompt_attention import attention_logits, make_teacher_student
from jaxspectra.theory.results import (
    assumption_b_report,
    corollary1_run,
    gradient_bound_22,
    important_subspace,
    kappa_full_space,
    lemma2_pl,
    lemma3_bounds,
    lemma4_constants,
    m_tilde,
    per_example_attention_operators,
    prop1_bounds,
    prop1_counterexample,
    prop1_kappa,
    rho_U_exact,
    rho_U_sampled,
    select_important,
    theorem1_run,
    theorem2_bound,
    value_margins,
)
from jaxspectra.theory.softmax_jacobian import softmax_jacobian


# ---------------------------------------------------------------- Lemma 2, Lemma 4 / Theorem 1
def test_lemma2_holds_on_random_instances_and_fails_as_printed_for_N1():
    with x64_scope():
        for seed, N in ((0, 2), (1, 3), (2, 5)):
            data = make_teacher_student(jax.random.key(seed), N=N, d=6, n=4, sigma_p=1.0)
            r = lemma2_pl(data["student"], data["X"], data["y"])
            assert r["sigma_min_F"] > 0 and r["loss"] > 0
            assert r["lhs"] >= r["rhs"] * (1 - 1e-12) >= r["rhs_paper"] * (1 - 1e-12)
        data = make_teacher_student(jax.random.key(3), N=1, d=6, n=4, sigma_p=1.0)
        r = lemma2_pl(data["student"], data["X"], data["y"])
    # N = 1: ½‖∇L‖² = σ²(F)·L exactly (the derived bound is tight) < the printed 2σ²(F)·L
    assert r["lhs"] == pytest.approx(r["rhs"], rel=1e-10)
    assert r["lhs"] == pytest.approx(0.5 * r["rhs_paper"], rel=1e-10)


def test_gradient_bound_22_loses_sqrt_N_under_dataset_repetition():
    """One example with n = 2, d = 1, X = [[1], [-1]], p = 0, v = 1: r = 1, C_σ = √2, so
    ‖∇L‖ = √(2L) while (22) as printed gives 2√(2L)/√N: violated once the example is repeated
    N ≥ 5 times (∇L and L do not change under repetition)."""
    X1 = np.array([[[1.0], [-1.0]]])
    params = {"p": np.zeros(1), "v": np.ones(1)}
    with x64_scope():
        one = gradient_bound_22(params, X1, np.array([0.7]))
        rep = gradient_bound_22(params, np.repeat(X1, 8, axis=0), np.full(8, 0.7))
    assert rep["grad_norm"] == pytest.approx(one["grad_norm"], rel=1e-12)
    assert one["grad_norm"] == pytest.approx(math.sqrt(2 * 0.5 * 0.7**2), rel=1e-12)
    assert rep["derived"] == pytest.approx(one["derived"], rel=1e-12)
    assert rep["grad_norm"] <= rep["derived"]
    assert rep["grad_norm"] > rep["printed"]  # the printed bound is false


def test_theorem1_linear_rate_near_an_overparameterised_optimum():
    """d ≥ N, p₀ very close to p* (tiny L₀, so C_p is small and the margin holds): GD with Lemma
    4's step keeps L_t ≤ (1-ημ)^t L₀ and ‖p_t‖ ≤ M_p. The margin can only hold when
    C_p < 1/(6 C_σ σ(W)) (σ_min(F) ≤ ‖F‖ ≤ C_σ²σ(W)‖v‖/(2√N) as ‖J‖ ≤ ½, while γ = 2C_σ²σ(W)‖v‖/√N
    once 3C_σσ(W)C_p ≥ 2); since C_p grows with ‖v‖ = α, Lemma 5's "large α" route fails."""
    with x64_scope():
        data = make_teacher_student(jax.random.key(4), N=2, d=6, n=3, sigma_p=0.3)
        t, X, y = data["teacher"], data["X"], data["y"]
        direction = jax.random.normal(jax.random.key(5), (6,), jnp.float64)
        p0 = {**t, "p": t["p"] + 1e-9 * direction}
        run = theorem1_run(p0, X, y, c1=0.5, c2=1.0, steps=200)
        far = lemma4_constants({**t, "p": t["p"] + 1e-3 * direction}, X, y, 0.5, 1.0)
        ratios = []
        for alpha in (1.0, 10.0, 100.0):  # Lemma 5: v = α u with fixed labels
            c_a = lemma4_constants({**p0, "v": alpha * t["v"]}, X, y, 0.5, 1.0)
            ratios.append(c_a["margin"] / c_a["sigma_min_F0"])
    c = run["constants"]
    assert run["margin_holds"]
    # (L₀ ~ 1e-19: the residuals carry ~1e-7 relative round-off)
    assert np.all(run["losses"] <= run["bound"] * (1 + 1e-6))
    assert run["losses"][-1] < run["losses"][0]
    assert np.all(run["p_norms"] <= c["M_p"])
    assert c["C_p"] < 1 / (6 * c["C_sigma"])
    assert c["L_prime_proof_display"] == pytest.approx(c["C_sigma"] * c["L_prime"], rel=1e-12)
    assert far["sigma_min_F0"] < far["margin"]  # further from p*: the margin fails
    # larger α makes the margin fail, and it stays failed (γ/σ_min(F) saturates at a constant)
    assert ratios[0] < 1 < ratios[1] and ratios[2] > 1
    with pytest.raises(ValueError, match="c2"):
        lemma4_constants(t, X, y, 0.5, 1.5)


# ---------------------------------------------------------------- Proposition 1
def test_prop1_counterexample():
    r = prop1_counterexample()
    assert r["kappa"] == pytest.approx(400.0, rel=1e-6)
    assert r["kappa_dense"] == pytest.approx(400.0, rel=1e-6)
    assert r["paper"] == pytest.approx(1e16, rel=1e-5)
    assert r["kappa"] < r["paper"]  # Prop. 1's "κ ≥ (μ/L)(max/min)²" is false
    assert r["lemma1"] <= r["kappa"] <= r["upper"]


def test_prop1_lemma1_bound_on_random_instances():
    rng = np.random.default_rng(0)
    for _ in range(40):
        n = int(rng.integers(3, 8))
        with x64_scope():
            a = np.asarray(jax.nn.softmax(jnp.asarray(rng.standard_normal(n) * 2)))
        A = rng.standard_normal((n, n))
        w = rng.uniform(0.5, 3.0, n)
        Q, _ = np.linalg.qr(A)
        H = (Q * w) @ Q.T  # eigenvalues in [μ, L] ⊂ [0.5, 3]
        mu, L = w.min(), w.max()
        kappa = prop1_kappa(a, H)
        b = prop1_bounds(a, mu, L)
        assert b["lemma1"] * (1 - 1e-9) <= kappa <= b["upper"] * (1 + 1e-9)
        # ground truth: eigenvalues of J²H (nonsymmetric) restricted to 1⊥, by np.linalg.eigvals
        with x64_scope():
            J = np.asarray(softmax_jacobian(a))
        ev = np.sort(np.abs(np.linalg.eigvals(J @ J @ H)))[1:]  # drop the 1-direction's zero
        assert kappa == pytest.approx(ev[-1] / ev[0], rel=1e-6)
    # the model's H_i = u uᵀ is rank one: κ(J²H_i|1⊥) = ∞ (μ_i = 0)
    assert prop1_kappa(a, np.outer(np.arange(n), np.arange(n)) + 0.0) == math.inf


# ---------------------------------------------------------------- Lemma 3
def test_lemma3_bounds_hold_on_random_instances():
    rng = np.random.default_rng(1)
    for _ in range(50):
        N, n = int(rng.integers(1, 5)), int(rng.integers(3, 9))
        scores = rng.standard_normal((N, n)) * rng.uniform(0.5, 5)
        imp = select_important(scores, frac=rng.uniform(0.05, 0.9))
        if np.any(imp.sum(1) == n):
            continue
        b = lemma3_bounds(scores, imp)
        assert b["a_I"] >= b["bound13"] * (1 - 1e-12)
        assert b["a_U"] <= b["bound14"] * (1 + 1e-12)


def test_lemma3_sharper_bound_counterexample_and_its_repair():
    b = lemma3_bounds(np.array([[0.0, -1.0, -100.0]]), np.array([[True, False, False]]))
    assert b["Gamma_max"] == 0 and b["Delta_min"] == 1
    assert b["a_U"] == pytest.approx(math.exp(-1) / (1 + math.exp(-1) + math.exp(-100)))
    assert b["a_U"] == pytest.approx(0.2689, abs=1e-4)
    assert b["sharper"] == pytest.approx(0.2119, abs=1e-4)
    assert b["a_U"] > b["sharper"]  # the printed Γ = 0 bound is false
    assert b["a_U"] <= b["bound14"]  # (14) still holds
    eq = lemma3_bounds(np.array([[0.0, -1.0, -1.0]]), np.array([[True, False, False]]))
    assert eq["a_U"] == pytest.approx(eq["sharper"], rel=1e-12)  # all unimportant at m - Δ


# ---------------------------------------------------------------- Assumption B, Theorem 2
def _assumption_b_instance(seed, N=30, n=6, d=4, s_imp=2, leak=0.05, scale=3.0):
    """Important keys in I = span(e1, e2) (leakage `leak` into U), unimportant ones spread
    into U; p* ∈ I so important tokens score high."""
    rng = np.random.default_rng(seed)
    X = np.zeros((N, n, d))
    g = rng.standard_normal((N, s_imp, 1))  # spread along (1, -1): equal scores, 2-D I
    X[:, :s_imp, :2] = 1.5 + g * np.array([1.0, -1.0]) + 0.05 * rng.standard_normal((N, s_imp, 2))
    X[:, :s_imp, 2:] = leak * rng.standard_normal((N, s_imp, d - 2))
    X[:, s_imp:, :2] = -rng.uniform(0, 1, (N, n - s_imp, 2))
    X[:, s_imp:, 2:] = rng.standard_normal((N, n - s_imp, d - 2))
    params = {"p": np.array([scale, scale] + [0.0] * (d - 2)), "v": rng.standard_normal(d)}
    return params, X


def test_assumption_b_rho_exact_vs_sampled_and_delta():
    params, X = _assumption_b_instance(0)
    with x64_scope():
        scores = np.asarray(attention_logits(params, X))
    imp = select_important(scores)
    assert np.all(imp[:, :2]) and not np.any(imp[:, 2:])  # the 50% rule finds S_i
    Q_I, Q_U = important_subspace(X, imp, var=0.9)
    assert Q_I.shape[1] == 2 and np.allclose(Q_U.T @ Q_I, 0)
    np.testing.assert_allclose(np.abs(Q_U.T @ np.eye(4)[:, 2:]) @ np.ones(2) > 0.1, True)
    rho = rho_U_exact(X, imp, Q_U)
    rho200 = rho_U_sampled(X, imp, Q_U, n_vectors=200)
    rho_many = rho_U_sampled(X, imp, Q_U, n_vectors=20000, seed=1)
    assert 0 < rho < 1  # (B1) holds on this instance
    assert rho200 <= rho * (1 + 1e-12) and rho_many <= rho * (1 + 1e-12)
    assert rho_many > 0.99 * rho  # dense sampling of the 2-D U approaches the exact value
    # δ_i by direct transcription
    u = X @ params["v"]
    a = np.exp(scores - scores.max(1, keepdims=True))
    a /= a.sum(1, keepdims=True)
    mu = (a * u).sum(1)
    ref = np.array([np.min(np.abs(u[i, imp[i]] - mu[i])) for i in range(len(u))])
    np.testing.assert_allclose(value_margins(u, scores, imp), ref, rtol=1e-12)


def test_theorem2_explicit_bound_and_lemma7_lost_factor_N():
    params, X = _assumption_b_instance(1)
    with x64_scope():
        scores = np.asarray(attention_logits(params, X))
        imp = select_important(scores)
        _, Q_U = important_subspace(X, imp)
        b = theorem2_bound(params, X, imp, Q_U)
        M = m_tilde(params, X)
        kappa = kappa_full_space(hp_operator(params, X))
        lam = np.linalg.eigvalsh(M)
        # Lemma 6 and (corrected) Lemma 7 sandwich the extreme eigenvalues of M̃
        assert b["log10_lemma6"] <= np.log10(lam[-1]) + 1e-12
        assert np.log10(lam[0]) <= b["log10_lemma7"] + 1e-12
        assert b["log10_kappa_bound"] <= np.log10(kappa) + 1e-12  # Theorem 2 on all of ℝᵈ
        # Lemma 7 as printed loses N: repeating the dataset k times multiplies λ_min(M̃) by k,
        # while its right-hand side (Σ_U is a mean) stays
        k = 3
        Xk, impk = np.concatenate([X] * k), np.concatenate([imp] * k)
        bk = theorem2_bound(params, Xk, impk, Q_U)
        lam_k = np.linalg.eigvalsh(m_tilde(params, Xk))
    assert lam_k[0] == pytest.approx(k * lam[0], rel=1e-8)
    assert bk["log10_lemma7_printed"] == pytest.approx(b["log10_lemma7_printed"], abs=1e-10)
    assert bk["log10_lemma7"] == pytest.approx(b["log10_lemma7"] + np.log10(k), abs=1e-10)
    # hence for k > 10^(printed RHS - log10 λ_min) repetitions the printed Lemma 7 fails
    k_fail = 10 ** (b["log10_lemma7_printed"] - np.log10(lam[0])) * 2
    assert np.log10(k_fail * lam[0]) > b["log10_lemma7_printed"]
    with pytest.raises(ValueError, match="dim U >= 1"):
        theorem2_bound(params, X, imp, np.zeros((4, 0)))
    with x64_scope():
        rep = assumption_b_report(params, X)
        gauss = make_teacher_student(jax.random.key(0), N=200, d=4, n=4, sigma_p=1.0)
        rep_g = assumption_b_report(gauss["teacher"], gauss["X"])
    assert rep["dim_U"] == 2 and rep["rho_U"] == pytest.approx(b["rho_U"])
    assert rep["theorem2"]["log10_kappa_bound"] == pytest.approx(b["log10_kappa_bound"])
    assert rep["rho_U_sampled"] <= rep["rho_U"] * (1 + 1e-12)
    assert rep_g["dim_U"] == 0 and rep_g["theorem2"] is None  # Gaussian keys: U is trivial


# ---------------------------------------------------------------- Corollary 1
def test_corollary1_rate_has_the_1_over_N():
    N = 20
    with x64_scope():
        data = make_teacher_student(jax.random.key(6), N=N, d=3, n=3, sigma_p=1.0)
        t, X, y = data["teacher"], data["X"], data["y"]
        lam = np.linalg.eigvalsh(np.asarray(hp_operator(t, X)))
        eta = N / lam[-1]  # = 1/λ_max(∇²L)
        e0 = 1e-6 * np.asarray(jax.random.normal(jax.random.key(7), (3,), jnp.float64))
        r = corollary1_run(t, X, y, e0, eta, steps=400)
    assert r["lam_max"] / r["lam_min"] > 3  # a genuinely slow direction
    m, p = r["measured"], r["predicted"]
    assert abs(m[-1]) < 0.5 * abs(m[0])  # it decays measurably over the run
    np.testing.assert_allclose(m, p, rtol=1e-3, atol=1e-6 * abs(m[0]))
    # App. H's (1 - ηλ_min)^t (no 1/N) predicts something else entirely
    assert not np.allclose(r["predicted_paper"][1:], m[1:], rtol=0.1)


# ---------------------------------------------------------------- decoupled regime
def _decoupled(N=3, n=3, seed=0):
    rng = np.random.default_rng(seed)
    d = N * n
    X = np.zeros((N, n, d))
    for i in range(N):  # orthonormal key rows in disjoint coordinate blocks: K_iK_jᵀ = δ_ij I
        X[i, :, i * n:(i + 1) * n] = np.linalg.qr(rng.standard_normal((n, n)))[0]
    return {"p": 2 * rng.standard_normal(d), "v": rng.standard_normal(d)}, X


def test_decoupled_regime_reduces_coupled_hp_to_prop1_form():
    N, n = 3, 3
    params, X = _decoupled(N, n)
    with x64_scope():
        Jb = np.asarray(block_operator_J(params, X)).reshape(N, n, N, n)
        A = np.asarray(per_example_attention_operators(params, X))
        H = np.asarray(hp_operator(params, X))
        a = np.asarray(jax.nn.softmax(attention_logits(params, X), axis=-1))
        J = np.asarray(softmax_jacobian(a))
    u = np.einsum("Nnd,d->Nn", X, params["v"])
    for i in range(N):
        for k in range(N):
            if i != k:
                assert np.abs(Jb[i, :, k, :]).max() == 0.0  # 𝒥 is block diagonal
        np.testing.assert_allclose(Jb[i, :, i, :], A[i], atol=1e-14)
        np.testing.assert_allclose(A[i], J[i] @ J[i] @ np.outer(u[i], u[i]), atol=1e-14)
    # the coupled H_p's non-zero spectrum is the union of the per-example ones
    per = np.sort(np.concatenate([np.linalg.eigvals(A[i]).real for i in range(N)]))[::-1][:N]
    lam = np.sort(np.linalg.eigvalsh(H))[::-1]
    np.testing.assert_allclose(lam[:N], np.sort(per)[::-1], rtol=1e-10)
    assert np.all(np.abs(lam[N:]) < 1e-12 * lam[0])
    # teeth: with coupled keys (a shared coordinate), the union no longer matches
    Xc = X.copy()
    Xc[:, :, 0] += 0.5 * np.random.default_rng(9).standard_normal((N, n))  # shared coordinate
    with x64_scope():
        Ac = np.asarray(per_example_attention_operators(params, Xc))
        lam_c = np.sort(np.linalg.eigvalsh(np.asarray(hp_operator(params, Xc))))[::-1][:N]
    per_c = np.sort(np.concatenate([np.linalg.eigvals(Ac[i]).real for i in range(N)]))[::-1][:N]
    assert not np.allclose(lam_c, per_c, rtol=1e-3)
