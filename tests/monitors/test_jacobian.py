"""Jacobian monitor vs dense ``jax.jacfwd`` Jacobians on a tiny model; Thm 4.2 counterexample."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspectra.models import get_model
from jaxspectra.monitors import jacobian as jm


def test_theorem_4_2_counterexample():
    """u = (1,1)/√2, v = (1,−1)/√2, J₁ = 2ue₁ᵀ, J₂ = diag(2,1), J₃ = 2e₁vᵀ: M = 2, a = 1/√2,
    the bound (aM)^L/a = 4 but ‖J₃J₂J₁‖ = 2 — the monitor records both, side by side."""
    u = jnp.array([1.0, 1.0]) / jnp.sqrt(2.0)
    v = jnp.array([1.0, -1.0]) / jnp.sqrt(2.0)
    e1 = jnp.array([1.0, 0.0])
    mats = [2 * jnp.outer(u, e1), jnp.diag(jnp.array([2.0, 1.0])), 2 * jnp.outer(e1, v)]
    fns = [lambda x, m=m: m @ x for m in mats]
    st = jm.chain_jacobian_stats(fns, jnp.array([0.3, -0.7]), iters=50)
    np.testing.assert_allclose(st["norms"], [2, 2, 2], rtol=1e-5)
    np.testing.assert_allclose(st["aligns"], [1 / np.sqrt(2)] * 2, rtol=1e-5)
    assert float(st["thm42_bound"]) == pytest.approx(4.0, rel=1e-5)
    assert float(st["total_norm"]) == pytest.approx(2.0, rel=1e-5)
    dense = np.linalg.norm(np.asarray(mats[2] @ mats[1] @ mats[0]), 2)
    assert dense == pytest.approx(2.0) and float(st["total_norm"]) < float(st["thm42_bound"])


def test_block_jacobians_vs_jacfwd():
    model, cfg = get_model("gpt-tiny", n_layers=3, d_model=8, n_heads=2, d_mlp=16)
    tokens = jax.random.randint(jax.random.PRNGKey(2), (1, 3), 0, cfg.vocab_size)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), tokens)
    # perturb the weights away from init so the blocks' top singular values are well separated
    params = jax.tree.map(lambda x: x * 6.0 if x.ndim == 2 else x, params)
    h = model.apply(params, tokens, method="embed")
    fns = jm.model_block_maps(model, params, cfg.n_layers)


    def total(z):
        for f in fns:
            z = f(z)
        return z

    @jax.jit
    def dense_jacobians(x):
        out = []
        for f in fns:
            out.append(jax.jacfwd(f)(x).reshape(x.size, x.size))
            x = f(x)
        return out, jax.jacfwd(total)(h).reshape(h.size, h.size)

    blocks, jt = dense_jacobians(h)
    dense, us, vs = [], [], []
    for j in blocks:
        uu, ss, vt = np.linalg.svd(np.asarray(j, np.float64))
        assert ss[1] < 0.9 * ss[0]  # a gap, so the top pair is well defined
        dense.append(ss[0])
        us.append(uu[:, 0])
        vs.append(vt[0])
    m = jax.jit(lambda p: jm.jacobian_metrics(model, p, tokens, cfg.n_layers, iters=60,
                                              early_layers=2))(params)
    for i in range(cfg.n_layers):
        assert float(m[f"jacobian/block_{i}/norm"]) == pytest.approx(dense[i], rel=1e-4)
    for i in range(cfg.n_layers - 1):
        want = abs(vs[i + 1] @ us[i])
        assert float(m[f"jacobian/block_{i}/align_next"]) == pytest.approx(want, abs=2e-3)
    assert float(m["jacobian/mean_align"]) == pytest.approx(
        np.mean([abs(vs[i + 1] @ us[i]) for i in range(cfg.n_layers - 1)]), abs=2e-3)
    jt = np.asarray(jt, np.float64)
    assert float(m["jacobian/total_norm"]) == pytest.approx(np.linalg.norm(jt, 2), rel=1e-4)
    assert float(m["jacobian/thm42_bound"]) == pytest.approx(
        float(jm.thm42_bound(jnp.asarray(dense), jnp.asarray(
            [abs(vs[i + 1] @ us[i]) for i in range(cfg.n_layers - 1)]))), rel=2e-3)
    # Fig. 1 left: geometric mean of the early blocks' weight stable ranks
    sr = []
    for path, w in jax.tree_util.tree_flatten_with_path(params)[0]:
        name = jax.tree_util.keystr(path)
        if w.ndim == 2 and ("block_0" in name or "block_1" in name):
            s = np.linalg.svd(np.asarray(w, np.float64), compute_uv=False)
            sr.append((s**2).sum() / s[0] ** 2)
    assert float(m["jacobian/early_srank_geomean"]) == pytest.approx(
        np.exp(np.mean(np.log(sr))), rel=2e-2)


def test_jvp_safe_switches_attention_to_xla():
    """cuDNN attention has no jvp rule: the Jacobian monitor must probe through XLA attention."""
    from jaxspectra.models import get_model
    from jaxspectra.monitors.jacobian import jvp_safe

    module, cfg = get_model("gpt-tiny", attention_impl="cudnn")
    safe = jvp_safe(module)
    assert safe.config.attention_impl == "xla" and module.config.attention_impl == "cudnn"
    xla_module, _ = get_model("gpt-tiny", attention_impl="xla")
    assert jvp_safe(xla_module) is xla_module
