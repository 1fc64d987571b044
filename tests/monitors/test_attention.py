"""Attention monitor vs dense float64 eigh of the softmax Jacobian and a NumPy aggregation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspectra.models import get_model
from jaxspectra.monitors import attention as at

_stats = at.softmax_row_stats  # jitted


def _dense_row(s):
    """float64 reference of one row over all of its keys (dense eigh on 1⊥)."""
    s = np.asarray(s, np.float64)
    a = np.exp(s - s.max())
    a /= a.sum()
    n = len(a)
    j = np.diag(a) - np.outer(a, a)
    basis = np.linalg.svd(np.eye(n) - 1.0 / n)[0][:, : n - 1]  # orthonormal basis of 1⊥
    ev = np.linalg.eigvalsh(basis.T @ j @ basis)
    srt = np.sort(s)[::-1]
    return {"log10_R": np.log10(a.max() / a.min()), "entropy": -(a * np.log(a)).sum(),
            "max_logit": s.max(), "logit_gap": srt[0] - srt[1],
            "jac_fro": np.linalg.norm(j), "log10_kappa": np.log10(ev.max() / ev.min()),
            "log10_kappa_bound": 2 * np.log10(a.max() / a.min())}


@pytest.mark.parametrize("scale", [0.3, 2.0, 4.0])
def test_row_stats_vs_dense_eigh(scale):
    rng = np.random.default_rng(int(scale * 10))
    s = rng.normal(size=(5, 14)) * scale
    s[1, 3] = s[1, 7]  # ties are fine
    with jax.enable_x64(True):
        got = _stats(jnp.asarray(s, jnp.float64))
        for r in range(s.shape[0]):
            ref = _dense_row(s[r])
            for k, v in ref.items():
                np.testing.assert_allclose(float(got[k][r]), v, rtol=1e-7, atol=1e-10,
                                           err_msg=f"{k} row {r}")
    got32 = _stats(jnp.asarray(s, jnp.float32))
    for r in range(s.shape[0]):
        ref = _dense_row(s[r])
        np.testing.assert_allclose(float(got32["log10_kappa"][r]), ref["log10_kappa"],
                                   atol=2e-4)
        assert float(got32["log10_kappa"][r]) <= ref["log10_kappa_bound"] + 1e-5


def test_kappa_far_below_the_papers_bound():
    """Erratum (paper 001 Prop. 1 / App. J): one dominant token, 19 others at 1e-8: the exact
    κ(J) on 1⊥ is 20 (κ(J²) = 400) while (max a / min a)² is 1e16."""
    a = np.full(20, 1e-8)
    a[0] = 1 - 19e-8
    s = np.log(a)
    with jax.enable_x64(True):
        got = _stats(jnp.asarray(s[None], jnp.float64))
    ref = _dense_row(s)
    assert float(got["log10_kappa"][0]) == pytest.approx(ref["log10_kappa"], abs=1e-6)
    assert 10 ** float(got["log10_kappa"][0]) == pytest.approx(20.0, rel=1e-5)
    assert float(got["log10_kappa_bound"][0]) == pytest.approx(16.0, abs=1e-6)


def test_masked_rows():
    s = np.random.default_rng(0).normal(size=(4, 4))
    mask = np.tril(np.ones((4, 4), bool))
    got = _stats(jnp.asarray(s, jnp.float32), jnp.asarray(mask))
    assert np.isnan(float(got["log10_kappa"][0])) and np.isnan(float(got["logit_gap"][0]))
    assert float(got["log10_kappa"][1]) == pytest.approx(0.0, abs=1e-5)  # two keys: κ = 1
    ref = _dense_row(s[3])
    np.testing.assert_allclose(float(got["log10_kappa"][3]), ref["log10_kappa"], atol=1e-4)
    ref2 = _dense_row(s[2, :3])
    np.testing.assert_allclose(float(got["entropy"][2]), ref2["entropy"], rtol=1e-5)


@pytest.mark.parametrize("name", ["gpt-tiny", "llama-tiny"])
def test_model_logits_and_app_k_aggregation(name):
    model, cfg = get_model(name)
    tokens = jax.random.randint(jax.random.PRNGKey(1), (3, 6), 0, cfg.vocab_size)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), tokens)
    logits = at.sown_attention_logits(model, params, tokens)
    _, aux = model.apply(params, tokens, return_attention=True)
    mask = np.tril(np.ones((6, 6), bool))
    for lg, p in zip(logits, aux["attention"]):  # the captured scores are the model's
        np.testing.assert_allclose(jax.nn.softmax(jnp.where(mask, lg, -jnp.inf), -1), p,
                                   atol=1e-6)
    if name != "gpt-tiny":  # RoPE path: the captured logits are enough
        return
    mon = at.AttentionMonitor(model, tokens, every=5)
    m, _ = jax.jit(mon.__call__)(params, None, ())
    # paper 001 App. K: R per row → mean over rows, heads, examples, layers (NumPy, float64)
    lg = np.stack([np.asarray(x, np.float64) for x in logits])  # [L, B, H, T, T]
    r = np.zeros(lg.shape[:4])
    for idx in np.ndindex(*lg.shape[:4]):
        t = idx[3]
        row = lg[idx][: t + 1]
        r[idx] = np.exp(row.max() - row.min())
    r = r[..., 1:]  # rows with ≥ 2 keys
    want = r.mean(-1).mean(2).mean(1).mean(0)
    assert float(m["attention/log10_R"]) == pytest.approx(np.log10(want), abs=1e-4)
    np.testing.assert_allclose(float(m["attention/layer_1/head_0/log10_R"]),
                               np.log10(r[1, :, 0].mean()), atol=1e-4)
    ent = np.array([[[[_dense_row(lg[l, b, h, t, : t + 1])["entropy"] for t in range(1, 6)]
                      for h in range(lg.shape[2])] for b in range(3)] for l in range(2)])
    assert float(m["attention/entropy"]) == pytest.approx(ent.mean(), rel=1e-4)
    m0 = jax.jit(at.attention_metrics, static_argnames=("causal", "rows"))(logits, rows=-1)  # last row only (a [CLS]-style probe)
    assert float(m0["attention/log10_R"]) == pytest.approx(
        np.log10(r[..., -1].mean(2).mean(1).mean(0)), abs=1e-4)
