"""Muon: optax.contrib.muon's documented differences from paper 004, and paper_muon against a NumPy
float64 transcription of the authors' update."""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxspectra.optim import muon as muon_mod
from jaxspectra.optim.muon import paper_muon, scale_by_sign, svd_sign

_DN = {"w": optax.contrib.MuonDimensionNumbers()}


def _np_sign(x):
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    return u @ vt


def _rand(key, shape, dtype=jnp.float32):
    return jax.random.normal(jax.random.PRNGKey(key), shape, dtype)


# ----------------------------------------------------------------------------- optax's Muon


def test_optax_ns_coeffs_row_check_is_inverted():
    """optax 0.2.8 checks ``n_rows <= ns_steps`` where it means ``>=``."""
    params = {"w": _rand(0, (6, 4))}
    g = {"w": _rand(1, (6, 4))}
    # Enough rows (5 >= 3) and yet it refuses:
    with pytest.raises(ValueError, match="Not enough coeffs"):
        optax.contrib.muon(0.1, ns_coeffs="dion", ns_steps=3).init(params)

    # Too few rows (5 < 8) and it runs silently, with 5 steps, not 8:
    def upd(steps):
        tx = optax.contrib.muon(0.1, ns_coeffs="dion", ns_steps=steps)
        return tx.update(g, tx.init(params), params)[0]["w"]

    u8, u5 = upd(8), upd(5)
    np.testing.assert_array_equal(np.asarray(u8), np.asarray(u5))
    # ... whereas 8 genuine steps (the last row repeated 3 more times) give something else.
    rows = np.asarray(optax.contrib._muon._DION_NS_COEFFS)
    rows8 = np.concatenate([rows, np.repeat(rows[-1:], 3, axis=0)])
    x = np.asarray(u5)
    tx8 = optax.contrib.muon(0.1, ns_coeffs=tuple(map(tuple, rows8)), ns_steps=8)
    u8_true = tx8.update(g, tx8.init(params), params)[0]["w"]
    assert np.max(np.abs(np.asarray(u8_true) - x)) > 1e-4


def test_optax_muon_shape_scaling():
    """Difference 1: optax scales by sqrt(max(1, fan_out/fan_in)); paper 004 does not."""
    params = {"w": _rand(0, (4, 16))}
    g = {"w": _rand(1, (4, 16))}
    tx = optax.contrib.muon(1.0)
    u = tx.update(g, tx.init(params), params)[0]["w"]
    core = optax.contrib.scale_by_muon(weight_dimension_numbers=_DN)
    o = core.update(g, core.init(params), params)[0]["w"]
    np.testing.assert_allclose(np.asarray(u), -2.0 * np.asarray(o), rtol=1e-6)


def test_optax_muon_ema_momentum_vs_sum_form():
    """Difference 2: with identity NS coefficients (f(X) = X) scale_by_muon returns its
    normalised Nesterov input, which is the bias-corrected EMA mix, not the sum form."""
    beta = 0.95
    params = {"w": jnp.zeros((5, 3), jnp.float32)}
    gs = [_rand(i, (5, 3)) for i in range(3)]
    core = optax.contrib.scale_by_muon(
        ns_coeffs=(1.0, 0.0, 0.0), beta=beta, weight_dimension_numbers=_DN
    )
    st = core.init(params)
    m = np.zeros((5, 3))
    buf = np.zeros((5, 3))
    for t, g in enumerate(gs, start=1):
        out, st = core.update({"w": g}, st, params)
        gn = np.asarray(g, np.float64)
        m = beta * m + (1 - beta) * gn
        ema = beta * m / (1 - beta ** (t + 1)) + (1 - beta) * gn / (1 - beta**t)
        np.testing.assert_allclose(np.asarray(out["w"]), ema / np.linalg.norm(ema), atol=1e-5)
        buf = beta * buf + gn
        summ = gn + beta * buf
        cos = np.sum(ema * summ) / np.linalg.norm(ema) / np.linalg.norm(summ)
        if t == 1:
            assert cos == pytest.approx(1.0, abs=1e-12)
        else:  # the bias corrections re-weight g against the buffer
            assert cos < 1 - 1e-4


def test_optax_ns5_is_not_a_sign():
    """Difference 3: NS-5's singular values spread around 1 (measured band on a well-conditioned
    32x16 Gaussian: within [0.6, 1.3] (measured 0.71-1.13), spread > 0.1); the exact sign has all ones."""
    x = _rand(3, (32, 16))
    o = optax.contrib._muon.orthogonalize_via_newton_schulz(x, jnp.asarray((3.4445, -4.7750, 2.0315)))
    s = np.linalg.svd(np.asarray(o), compute_uv=False)
    assert 0.6 < s.min() and s.max() < 1.3
    assert s.max() - s.min() > 0.1


def test_optax_muon_batched_dimension_numbers():
    """Stacked (L, m, n) kernels are orthogonalised per matrix, leading axis a batch axis."""
    w = _rand(0, (3, 8, 8))
    params = {"w": w, "b": jnp.zeros((8,))}
    g = {"w": _rand(1, (3, 8, 8)), "b": jnp.ones((8,))}
    tx = muon_mod.optax_muon(1.0)
    u = tx.update(g, tx.init(params), params)[0]
    for i in range(3):
        tx1 = optax.contrib.muon(1.0)
        p1 = {"w": w[i]}
        u1 = tx1.update({"w": g["w"][i]}, tx1.init(p1), p1)[0]["w"]
        np.testing.assert_allclose(np.asarray(u["w"][i]), np.asarray(u1), atol=1e-6)


# ----------------------------------------------------------------------------- paper 004's Muon


def _np_paper_muon(w0, grads, lr, mu, wd):
    """NumPy float64 transcription of the authors' unconstrained Muon (papers/README.md)."""
    w = w0.astype(np.float64).copy()
    buf = np.zeros_like(w)
    out = []
    for g in grads:
        g = g.astype(np.float64)
        buf = mu * buf + g
        G = g + mu * buf
        w = w * (1 - lr * wd) - lr * _np_sign(G)
        out.append(w.copy())
    return out


@pytest.mark.parametrize("shape", [(8, 4), (4, 8)])
def test_paper_muon_matches_numpy(shape):
    lr, mu, wd = 0.05, 0.95, 0.1
    w0 = np.asarray(_rand(0, shape))
    grads = [np.asarray(_rand(10 + i, shape)) for i in range(4)]
    ref = _np_paper_muon(w0, grads, lr, mu, wd)
    tx = paper_muon(lr, momentum=mu, weight_decay=wd, sign_method=svd_sign)
    p = {"w": jnp.asarray(w0)}
    st = tx.init(p)
    step = jax.jit(tx.update)
    for g, r in zip(grads, ref):
        u, st = step({"w": jnp.asarray(g)}, st, p)
        p = optax.apply_updates(p, u)
        np.testing.assert_allclose(np.asarray(p["w"]), r, atol=2e-5)


def test_paper_muon_with_schedule_and_zero_grad():
    sched = optax.linear_schedule(0.0, 0.1, 10)
    tx = paper_muon(sched, sign_method=svd_sign)
    p = {"w": jnp.ones((4, 4))}
    st = tx.init(p)
    u, st = tx.update({"w": jnp.zeros((4, 4))}, st, p)
    # Step 0: LR 0 and zero gradient: exactly zero update, no NaN.
    assert np.all(np.asarray(u["w"]) == 0)
    u, st = tx.update({"w": jnp.zeros((4, 4))}, st, p)
    # Zero gradient: only the decay acts (η = 0.01 at step 1).
    np.testing.assert_allclose(np.asarray(u["w"]), -0.01 * 0.1 * np.ones((4, 4)), rtol=1e-5)


def test_paper_muon_default_sign_is_polar_express():
    """The string path goes through jaxspectra.linalg.matrix_sign (Polar Express, bf16 by
    default, as the authors ran it)."""
    from jaxspectra.linalg import matrix_sign

    p = {"w": _rand(0, (8, 4))}
    g = {"w": _rand(1, (8, 4))}
    tx = paper_muon(0.1, weight_decay=0.0)
    u = jax.jit(tx.update)(g, tx.init(p), p)[0]["w"]
    want = -0.1 * matrix_sign(1.95 * g["w"], method="polar_express")
    np.testing.assert_allclose(np.asarray(u), np.asarray(want), atol=1e-6)
    s = np.linalg.svd(np.asarray(u) / -0.1, compute_uv=False)
    assert np.all(np.abs(s - 1) < 0.1)  # a bf16 sign: within 10 % of 1


def test_scale_by_sign_rejects_1d_and_batches():
    tx = scale_by_sign(svd_sign)
    with pytest.raises(ValueError, match="'block_0/ln/scale'.*>= 2 dims"):
        tx.update({"block_0": {"ln": {"scale": jnp.ones(3)}}}, tx.init(None))
    x = _rand(0, (2, 5, 3))
    out = tx.update({"w": x}, tx.init(None))[0]["w"]
    for i in range(2):
        np.testing.assert_allclose(np.asarray(out[i]), _np_sign(np.asarray(x[i])), atol=1e-5)


def test_paper_muon_bad_args():
    with pytest.raises(ValueError, match="momentum"):
        paper_muon(0.1, momentum=1.0)
    with pytest.raises(ValueError, match="weight_decay"):
        paper_muon(0.1, weight_decay=-1.0)


def test_docstring_examples():
    assert doctest.testmod(muon_mod, raise_on_error=True).failed == 0
