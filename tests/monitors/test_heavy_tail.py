"""Heavy-tail α: the vectorised estimator vs a direct NumPy loop transcription on synthetic
power laws (and the true exponent within sampling error)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspectra.monitors import heavy_tail as ht

_fit = jax.jit(ht.powerlaw_fit)


def _np_fit(values, min_tail=10):
    """Clauset–Shalizi–Newman, transcribed with explicit loops (float64)."""
    x = np.sort(np.asarray(values, np.float64))
    n = len(x)
    best = (np.inf, np.nan, np.nan, 0)
    for i in range(n):
        xmin = x[i]
        if xmin <= 0 or n - i < min_tail:
            continue
        tail = x[i:]
        s = sum(np.log(t / xmin) for t in tail)
        if s <= 0:
            continue
        alpha = 1 + len(tail) / s
        d = 0.0
        for k, t in enumerate(tail):
            cdf = 1 - (t / xmin) ** (1 - alpha)
            d = max(d, abs(cdf - k / len(tail)), abs(cdf - (k + 1) / len(tail)))
        if d < best[0]:
            best = (d, alpha, xmin, len(tail))
    return {"ks": best[0], "alpha": best[1], "xmin": best[2], "n_tail": best[3]}


def _sample(rng, n, alpha, xmin=1.0, bulk=0):
    """Pure power law (plus ``bulk`` uniform values below x_min, a Marchenko–Pastur stand-in)."""
    tail = xmin * (1 - rng.uniform(size=n)) ** (-1 / (alpha - 1))
    return np.concatenate([tail, rng.uniform(0.05, xmin, size=bulk)])


@pytest.mark.parametrize("alpha,bulk", [(2.0, 0), (3.5, 0), (2.5, 100)])
def test_matches_numpy_transcription(alpha, bulk):
    rng = np.random.default_rng(int(alpha * 10) + bulk)
    x = _sample(rng, 200, alpha, bulk=bulk)
    ref = _np_fit(x)
    with jax.enable_x64(True):
        got = _fit(jnp.asarray(x, jnp.float64))
    for k in ("alpha", "xmin", "ks", "n_tail"):
        np.testing.assert_allclose(float(got[k]), ref[k], rtol=1e-9, err_msg=k)
    # the estimate recovers the true exponent within sampling error (~(α−1)/√n)
    assert abs(ref["alpha"] - alpha) < 4 * (alpha - 1) / np.sqrt(ref["n_tail"])
    # float32 (the default route) picks the same x_min and α to float32 accuracy
    got32 = _fit(jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(float(got32["alpha"]), ref["alpha"], rtol=1e-3)


def test_batched_and_degenerate():
    rng = np.random.default_rng(0)
    xs = np.stack([_sample(rng, 120, 2.5), _sample(rng, 120, 4.0)])
    got = jax.jit(ht.powerlaw_fit)(jnp.asarray(xs, jnp.float32))
    for i in range(2):
        np.testing.assert_allclose(float(got["alpha"][i]), _np_fit(xs[i])["alpha"], rtol=1e-3)
    few = ht.powerlaw_fit(jnp.array([0.0, 0.0, 1.0, 2.0]))  # < min_tail positive values
    assert np.isnan(float(few["alpha"])) and float(few["n_tail"]) == 0
    with pytest.raises(ValueError, match="min_tail"):
        ht.powerlaw_fit(jnp.ones(20), min_tail=1)


def test_heavy_tail_stats_of_a_matrix():
    rng = np.random.default_rng(1)
    lam = np.sort(_sample(rng, 60, 3.0))[::-1]
    q1, _ = np.linalg.qr(rng.normal(size=(80, 60)))
    q2, _ = np.linalg.qr(rng.normal(size=(60, 60)))
    w = (q1 * np.sqrt(lam)) @ q2.T  # eigenvalues of WᵀW are lam
    st = ht.heavy_tail_stats(jnp.asarray(w, jnp.float32))
    ref = _np_fit(lam)
    np.testing.assert_allclose(float(st["alpha"]), ref["alpha"], rtol=2e-3)
    np.testing.assert_allclose(float(st["log_spectral_norm"]), np.log10(lam.max()), rtol=1e-4)
    np.testing.assert_allclose(float(st["alpha_weighted"]), ref["alpha"] * np.log10(lam.max()),
                               rtol=2e-3)
    np.testing.assert_allclose(float(st["log_norm"]), np.log10(lam.sum()), rtol=1e-4)
    m = ht.heavy_tail_metrics({"block_0": {"mlp": {"fc": {"kernel": jnp.asarray(w)}}}})
    assert float(m["heavy_tail/mlp/block_0/fc/alpha"]) == pytest.approx(float(st["alpha"]))
