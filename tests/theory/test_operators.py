"""F(p), H_p and the block operator 𝒥 of paper 001 against jax.jacobian / jax.hessian / SVD."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspectra.precision import x64_scope
from jaxspectra.theory.operators import (
    F_matrix,
    block_factors,
    block_operator_J,
    condition_number_on_range,
    example_gradients,
    hp_condition_number,
    hp_factor,
    hp_operator,
    sigma_min_F,
)
from jaxspectra.theory.prompt_attention import loss, make_teacher_student, predict


def _problem(seed=0, N=7, d=5, n=6, sigma_p=1.0, with_W=True):
    data = make_teacher_student(jax.random.key(seed), N=N, d=d, n=n, sigma_p=sigma_p)
    if with_W:
        rng = np.random.default_rng(seed)
        W = jnp.asarray(np.eye(d) + 0.3 * rng.standard_normal((d, d)))
        data["teacher"] = {**data["teacher"], "W": W}
        data["student"] = {**data["student"], "W": W}
        with x64_scope():
            data["y"] = predict(data["teacher"], data["X"])
    return data


@pytest.mark.parametrize("with_W", [False, True])
def test_example_gradients_and_F_match_autodiff(with_W):
    data = _problem(with_W=with_W)
    with x64_scope():
        params, X, y = data["student"], data["X"], data["y"]
        G = example_gradients(params, X)
        ref = jax.jit(jax.jacobian(lambda p: predict({**params, "p": p}, X)))(params["p"])
        np.testing.assert_allclose(G, ref, rtol=1e-12, atol=1e-14)
        F = F_matrix(params, X)
        g = predict(params, X) - y  # ℓ'(f) for ℓ = ½(f-y)²
        grad = jax.jit(jax.grad(lambda p: loss({**params, "p": p}, X, y)))(params["p"])
        np.testing.assert_allclose(F.T @ g, grad, rtol=1e-12, atol=1e-15)  # ∇L = Fᵀg (eq. 10)


@pytest.mark.parametrize("with_W,N,d", [(False, 9, 4), (True, 4, 6)])
def test_hp_equals_N_hessian_at_zero_residual_optimum(with_W, N, d):
    data = _problem(seed=1, N=N, d=d, n=5, with_W=with_W)
    with x64_scope():
        t, X, y = data["teacher"], data["X"], data["y"]
        H = hp_operator(t, X)
        hess = jax.jit(jax.hessian(lambda p: loss({**t, "p": p}, X, y)))(t["p"])
        np.testing.assert_allclose(H, N * hess, rtol=1e-10, atol=1e-13 * float(jnp.abs(H).max()))
        np.testing.assert_allclose(H, H.T, atol=0)
        Fm = F_matrix(t, X)
        np.testing.assert_allclose(H, N**2 * Fm.T @ Fm, rtol=1e-12)
        fac = hp_factor(t, X)
        np.testing.assert_allclose(H, fac.T @ fac, rtol=1e-12)


def test_hp_is_gauss_newton_away_from_optimum():
    """N∇²L - H_p = Σ_i (f_i - y_i) ∇²f_i (the residual term), computed independently."""
    data = _problem(seed=2, N=5, d=4, n=4)
    with x64_scope():
        s, X, y = data["student"], data["X"], data["y"]
        res = predict(s, X) - y
        hess = jax.jit(jax.hessian(lambda p: loss({**s, "p": p}, X, y)))(s["p"])
        resid_term = jax.jit(jax.hessian(lambda p: jnp.dot(jax.lax.stop_gradient(res),
                                                           predict({**s, "p": p}, X))))(s["p"])
        np.testing.assert_allclose(hp_operator(s, X), 5 * hess - resid_term, rtol=1e-10,
                                   atol=1e-12)
        assert float(jnp.abs(resid_term).max()) > 1e-3  # the test has teeth


def test_block_operator_spectrum_equals_hp_and_is_the_attention_space_jacobian():
    N, n, d = 4, 3, 3
    data = _problem(seed=3, N=N, d=d, n=n)
    with x64_scope():
        t, X, y = data["teacher"], data["X"], data["y"]
        B, C = block_factors(t, X)
        Jb = block_operator_J(t, X)
        H = hp_operator(t, X)
        np.testing.assert_allclose(C @ B, H, rtol=1e-12, atol=1e-14)
        # ground truth for eq. 43: the Jacobian of V_i(a) = J(a_i) Σ_j K_i K_jᵀ J(a_j) ∇ℓ̃_j(a_j)
        K = jnp.einsum("Nnd,de->Nne", X, t["W"])
        u = jnp.einsum("Nnd,d->Nn", X, t["v"])

        def V(a_flat):
            a = a_flat.reshape(N, n)
            Ja = jax.vmap(lambda z: jnp.diag(z) - jnp.outer(z, z))(a)
            grad_l = u * (jnp.sum(a * u, axis=1) - y)[:, None]  # ∇ℓ̃_j(a_j) = u_j (a_jᵀu_j - y_j)
            w = jnp.einsum("Nnd,Nnm,Nm->d", K, Ja, grad_l)     # Σ_j K_jᵀ J(a_j) ∇ℓ̃_j
            return jnp.einsum("Nnm,Nmd,d->Nn", Ja, K, w).reshape(-1)

        a_star = jax.nn.softmax(jnp.einsum("Nnd,d->Nn", K, t["p"]), axis=-1).reshape(-1)
        np.testing.assert_allclose(jax.jit(jax.jacobian(V))(a_star), Jb, rtol=1e-10, atol=1e-13)
    ev = np.linalg.eigvals(np.asarray(Jb))
    ev = ev[np.argsort(-ev.real)]
    lam = np.sort(np.linalg.eigvalsh(np.asarray(H)))[::-1]
    r = min(N, d)
    np.testing.assert_allclose(ev[:r].real, lam[:r], rtol=1e-8)
    assert np.abs(ev[:r].imag).max() < 1e-8 * lam[0]
    assert np.abs(ev[r:]).max() < 1e-10 * lam[0]  # the rest of 𝒥's spectrum is zero


def test_remark1_sigma_min_F_vanishes_when_d_lt_N():
    with x64_scope():
        under = _problem(seed=4, N=8, d=5, n=4)
        F = F_matrix(under["student"], under["X"])
        assert float(sigma_min_F(under["student"], under["X"])) == 0.0
        ev = np.linalg.eigvalsh(np.asarray(F @ F.T))  # independent: λ_min(F Fᵀ) ≈ 0
        assert ev[0] < 1e-13 * ev[-1]
        over = _problem(seed=4, N=4, d=6, n=4)
        s = float(sigma_min_F(over["student"], over["X"]))
        F2 = np.asarray(F_matrix(over["student"], over["X"]))
        assert s > 0
        assert s == pytest.approx(np.sqrt(np.linalg.eigvalsh(F2 @ F2.T)[0]), rel=1e-8)


def test_condition_number_on_range_known_spectra():
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    lam = np.array([5.0, 2.0, 1.0, 1e-3, 0.0, 0.0])
    H = (Q * lam) @ Q.T
    c = condition_number_on_range(H)
    assert c.rank == 4 and c.resolved and c.kappa == pytest.approx(5e3, rel=1e-9)
    c = condition_number_on_range(H, rank=6)  # forcing full rank: λ_min lost in round-off
    assert not c.resolved and c.text == "> 1e14, unresolved"
    # a factor with κ(H) = 1e20 (σ ratio 1e10): eigvalsh of H could not see it; the SVD can,
    # but it is beyond max_resolved, so it is reported unresolved
    G = (rng.standard_normal((8, 3)) @ np.diag([1.0, 1e-3, 1e-10]))
    c = condition_number_on_range(G, rank=3, is_factor=True)
    assert not c.resolved and c.kappa > 1e14 and "unresolved" in c.text
    c = condition_number_on_range(G, rank=3, is_factor=True, max_resolved=1e30)
    s = np.linalg.svd(G, compute_uv=False)
    assert c.resolved and c.kappa == pytest.approx((s[0] / s[-1]) ** 2, rel=1e-6)
    # factor route at κ = 1e12: resolved, λ_min to ~1e-8 relative
    U, _ = np.linalg.qr(rng.standard_normal((10, 4)))
    V, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    sig = np.array([1.0, 1e-2, 1e-4, 1e-6])
    c = condition_number_on_range((U * sig) @ V.T, rank=4, is_factor=True)
    assert c.resolved and c.lam_min == pytest.approx(1e-12, rel=1e-6)
    with pytest.raises(ValueError, match="H must be a square"):
        condition_number_on_range(np.ones((2, 3)))
    with pytest.raises(ValueError, match="symmetric"):
        condition_number_on_range(np.array([[1.0, 2.0], [0.0, 1.0]]))


def test_hp_condition_number_on_range_when_singular():
    with x64_scope():
        data = _problem(seed=5, N=3, d=6, n=4, with_W=False)
        c = hp_condition_number(data["teacher"], data["X"])
        H = np.asarray(hp_operator(data["teacher"], data["X"]))
    ev = np.sort(np.linalg.eigvalsh(H))[::-1]
    assert c.rank == 3 and c.resolved
    assert c.kappa == pytest.approx(ev[0] / ev[2], rel=1e-8)
    assert ev[3] < 1e-12 * ev[0]


def test_bad_input():
    data = _problem(seed=6, N=3, d=4, n=3, with_W=False)
    with pytest.raises(ValueError, match="curvature"):
        hp_operator(data["teacher"], data["X"], curvature=np.ones(5))
    with pytest.raises(ValueError, match=r"params\['p'\]"):
        hp_operator({"p": np.ones(3), "v": np.ones(4)}, data["X"])
    with pytest.raises(ValueError, match="X must be 3-D"):
        F_matrix(data["teacher"], np.ones((3, 4)))
    with pytest.raises(ValueError, match="non-finite"):
        hp_operator(data["teacher"], data["X"], curvature=np.nan)
