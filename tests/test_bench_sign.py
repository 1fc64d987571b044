"""benchmarks/bench_linalg.py's sign_gpt2 pieces: its inputs, its float64 reference and its
criterion, which must be able to fail (negative control: bf16 Polar Express)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspectra import linalg
from jaxspectra.benchmarks import bench_linalg as B


def test_gpt2_like_inputs():
    x = B.gpt2_like(jax.random.PRNGKey(0), 2, 32, 48, "trained")
    sv = np.linalg.svd(np.asarray(x, np.float64), compute_uv=False)
    np.testing.assert_allclose(sv[:, 0] / sv[:, -1], B.TRAINED_KAPPA, rtol=1e-2)
    w = B.gpt2_like(jax.random.PRNGKey(1), 1, 64, 64, "init")
    assert w.shape == (1, 64, 64) and abs(float(jnp.std(w)) - 0.02) < 2e-3
    with pytest.raises(ValueError, match="spectrum"):
        B.gpt2_like(jax.random.PRNGKey(0), 1, 4, 4, "heavy")


def test_criterion_meets_mixed_and_fails_bf16_polar_express():
    x = B.gpt2_like(jax.random.PRNGKey(2), 2, 32, 48, "trained")
    rows = []
    for method in ("mixed", "polar_express"):
        s, fb = linalg.matrix_sign(x, method, return_fallback=True)
        rows.append({"shape": "2x32x48", "spectrum": "trained", "method": method,
                     "max_abs_err_f64": B.f64_max_abs_error(s, x),
                     "fallbacks": int(jnp.sum(fb))})  # fmt: skip
    assert B.criterion_failures(rows, "mixed") == []
    assert B.criterion_failures(rows, "polar_express") == ["2x32x48 trained"]  # can fail
    # a fallback alone also fails it, and so does NaN
    rows.append({"shape": "s", "spectrum": "init", "method": "m", "max_abs_err_f64": 0.0,
                 "fallbacks": 1})  # fmt: skip
    rows.append({"shape": "t", "spectrum": "init", "method": "m",
                 "max_abs_err_f64": float("nan"), "fallbacks": 0})  # fmt: skip
    assert B.criterion_failures(rows, "m") == ["s init", "t init"]
    # the reference itself: an orthonormal-row matrix is its own sign (float32 rounding only)
    q, _ = jnp.linalg.qr(jax.random.normal(jax.random.PRNGKey(3), (1, 48, 32)))
    q = jnp.swapaxes(q, -1, -2)
    assert B.f64_max_abs_error(q, q) <= 32 * float(jnp.finfo(jnp.float32).eps)
