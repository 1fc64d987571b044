"""Spectral monitor vs float64 NumPy SVD / dense Gram; ΔΣ resolution; host and optax forms."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxspectra.monitors import spectral as sp


def _ref_stats(w: np.ndarray) -> dict[str, np.ndarray]:
    """Independent float64 reference: SVD for σ, the explicit short-side Gram for its parts."""
    w = np.asarray(w, np.float64)
    sv = np.linalg.svd(w, compute_uv=False)
    g = w @ w.T if w.shape[0] < w.shape[1] else w.T @ w
    off = g - np.diag(np.diag(g))
    fro = np.sqrt((w * w).sum())
    return {"sigma_max": sv[0], "fro": fro, "stable_rank": fro**2 / sv[0] ** 2,
            "gram_offdiag": np.linalg.norm(off), "gram_diag": np.diag(g), "sv": sv}


def _ref_delta(w0, w1):
    s0 = np.linalg.svd(np.asarray(w0, np.float64), compute_uv=False)
    s1 = np.linalg.svd(np.asarray(w1, np.float64), compute_uv=False)
    return np.linalg.norm(s1 / s1.sum() - s0 / s0.sum())


def _decaying(key, m, n, ratio=1e-3):
    """A matrix with σ_i decaying geometrically from 1 to ``ratio`` (trained-weight-like)."""
    k1, k2 = jax.random.split(key)
    k = min(m, n)
    u, _ = np.linalg.qr(np.asarray(jax.random.normal(k1, (m, k))))
    v, _ = np.linalg.qr(np.asarray(jax.random.normal(k2, (n, k))))
    s = ratio ** (np.arange(k) / (k - 1))
    return (u * s) @ v.T


@pytest.mark.parametrize("shape", [(24, 10), (10, 24), (3, 12, 12)])
def test_matrix_stats_vs_float64(shape):
    w = np.asarray(jax.random.normal(jax.random.PRNGKey(1), shape)) * 0.3
    got = jax.jit(sp.matrix_stats)(jnp.asarray(w, jnp.float32))
    flat = w.reshape((-1,) + shape[-2:])
    for i, wi in enumerate(flat):
        ref = _ref_stats(wi)
        for k, v in ref.items():
            g = np.asarray(got[k]).reshape((len(flat),) + np.shape(v))[i]
            np.testing.assert_allclose(g, v, rtol=2e-5, atol=2e-5, err_msg=k)


def test_gram_offdiag_zero_on_dgram_matrix():
    """Orthogonal columns scaled freely (paper 004's DGram manifold): offdiag(WᵀW) = 0."""
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(20, 6)))
    w = q * np.array([3.0, 2, 1, 0.5, 0.2, 0.1])
    st = sp.matrix_stats(jnp.asarray(w, jnp.float32))
    assert float(st["gram_offdiag"]) < 1e-5
    np.testing.assert_allclose(np.asarray(st["gram_diag"]), [9, 4, 1, 0.25, 0.04, 0.01],
                               rtol=1e-5)


@pytest.mark.parametrize("shape,ratio", [((256, 64), 1e-2), ((96, 384), 1e-3),
                                          ((192, 192), 1e-3)])
def test_delta_sigma_resolution(shape, ratio):
    """Paper 002's floor is ~1e-4: on pairs one small step apart, the fp32 Gram route's ΔΣ
    must agree with a float64 SVD's of the same float32 weights to far below that: < 1e-5
    (measured ≤ 4.8e-6 here with σ spanning 1e-3, the Gram route's eps·σ₁²/σᵢ error on the
    small σ; ≤ 1.1e-6 on 768×768)."""
    key = jax.random.PRNGKey(shape[0])
    for j, scale in enumerate((3e-4, 3e-3)):
        w0 = _decaying(jax.random.fold_in(key, j), *shape, ratio=ratio)
        step = np.asarray(jax.random.normal(jax.random.fold_in(key, 100 + j), shape))
        w1 = w0 + scale * step / np.linalg.norm(step) * np.linalg.norm(w0)
        # the weights a float32 run holds; the reference is their float64 SVD
        w0, w1 = w0.astype(np.float32), w1.astype(np.float32)
        ref = _ref_delta(w0, w1)
        s0 = sp.matrix_stats(jnp.asarray(w0, jnp.float32))["sv"]
        s1 = sp.matrix_stats(jnp.asarray(w1, jnp.float32))["sv"]
        got = float(sp.delta_sigma(s0, s1))
        assert 1e-6 < ref < 1e-2  # the pair spans the paper's regime around 1e-4
        assert abs(got - ref) < 1e-5, (scale, got, ref)
        # the host route (NumPy fp32) resolves it as well
        h0 = sp.matrix_stats_np(w0.astype(np.float32))["sv"]
        h1 = sp.matrix_stats_np(w1.astype(np.float32))["sv"]
        assert abs(float(sp.delta_sigma(h0.astype(np.float64), h1.astype(np.float64))) - ref) \
            < 1e-5


def _params(key):
    k = jax.random.split(key, 6)
    return {
        "embed": {"embedding": jax.random.normal(k[0], (40, 12))},
        "block_0": {"attn": {"qkv": {"kernel": jax.random.normal(k[1], (12, 36))},
                             "o": {"kernel": jax.random.normal(k[2], (12, 12))}},
                    "mlp": {"fc": {"kernel": jax.random.normal(k[3], (12, 24))}},
                    "ln_1": {"scale": jnp.ones(12)}},
        "block_1": {"moe": {"up": {"kernel": jax.random.normal(k[4], (3, 12, 8))}}},
        "head": {"kernel": jax.random.normal(k[5], (12, 40))},
    }


def test_spectral_metrics_names_and_values():
    p = _params(jax.random.PRNGKey(0))
    m = jax.jit(sp.spectral_metrics)(p)
    qkv = np.asarray(p["block_0"]["attn"]["qkv"]["kernel"])
    for name, part in zip("qkv", np.split(qkv, 3, axis=1)):
        ref = _ref_stats(part)
        np.testing.assert_allclose(m[f"spectral/attention/block_0/{name}/stable_rank"],
                                   ref["stable_rank"], rtol=1e-4)
    up = np.asarray(p["block_1"]["moe"]["up"]["kernel"])
    np.testing.assert_allclose(m["spectral/mlp/block_1/up/e2/sigma_max"],
                               _ref_stats(up[2])["sigma_max"], rtol=1e-5)
    mlp_max = max(float(m[k]) for k in m if k.startswith("spectral/mlp/block_")
                  and k.endswith("/sigma_max"))
    assert float(m["spectral/mlp/max_sigma"]) == pytest.approx(mlp_max)
    assert "spectral/embedding/top/embed/sv" in m and "spectral/head/top/head/fro" in m
    assert not any("ln_1" in k for k in m)
    with pytest.raises(ValueError, match="unknown parameter group"):
        sp.spectral_metrics(p, groups=("attn",))


def test_host_monitor_pairs_and_async():
    p0 = jax.tree.map(np.asarray, _params(jax.random.PRNGKey(0)))
    p1 = jax.tree.map(lambda x: x * (1 + 0.01 * np.sin(np.arange(x.size)).reshape(x.shape)), p0)
    mon = sp.HostSpectralMonitor(every=5)
    assert [t for t in range(12) if mon.wants(t)] == [0, 1, 5, 6, 10, 11]
    mon.submit(5, p0)
    mon.submit(6, p1)
    mon.submit(10, p1)  # its partner never comes: stats only, at close()
    out = mon.poll()
    out += mon.close()
    got = dict(out)
    assert sorted(got) == [5, 10]
    o0 = p0["block_0"]["attn"]["o"]["kernel"]
    o1 = p1["block_0"]["attn"]["o"]["kernel"]
    assert got[5]["spectral/attention/block_0/o/delta_sigma"] == pytest.approx(
        _ref_delta(o0, o1), abs=2e-6)
    assert "spectral/attention/block_0/o/delta_sigma" not in got[10]
    dev = sp.spectral_metrics(jax.tree.map(jnp.asarray, p0))
    for k in ("spectral/mlp/block_0/fc/stable_rank", "spectral/attention/max_sigma"):
        assert got[5][k] == pytest.approx(float(dev[k]), rel=1e-4)
    with pytest.raises(ValueError, match="every"):
        sp.HostSpectralMonitor(every=1)


def test_optax_spectral_monitor_one_step_delta():
    p = _params(jax.random.PRNGKey(3))
    g = jax.tree.map(lambda x: jnp.cos(x), p)
    tx = optax.chain(optax.sgd(0.05), sp.spectral_monitor(every=2))
    s = tx.init(p)
    upd = jax.jit(tx.update)
    u, s = upd(g, s, p)
    p1 = optax.apply_updates(p, u)
    o0 = np.asarray(p["block_0"]["attn"]["o"]["kernel"])
    o1 = np.asarray(p1["block_0"]["attn"]["o"]["kernel"])
    ds = optax.tree.get(s, "delta_sigma")
    assert float(ds["spectral/attention/block_0/o"]) == pytest.approx(_ref_delta(o0, o1),
                                                                      abs=2e-6)
    assert int(optax.tree.get(s, "step")) == 0
    rec = float(optax.tree.get(s, "sigma_max")["spectral/attention/block_0/o"])
    u2, s2 = upd(g, s, p1)  # count 1: not a record step, the state keeps step 0's values
    assert int(optax.tree.get(s2, "step")) == 0
    assert float(optax.tree.get(s2, "sigma_max")["spectral/attention/block_0/o"]) == rec
    _, s3 = upd(g, s2, optax.apply_updates(p1, u2))
    assert int(optax.tree.get(s3, "step")) == 2
    with pytest.raises(ValueError, match="params"):
        sp.spectral_monitor().update(g, sp.spectral_monitor().init(p))


def test_host_monitor_bounded_queue_skips_under_a_slow_consumer(capsys):
    """A consumer that cannot keep up (its compute blocks until released): at most
    ``max_pending`` measurements are in flight, the rest are skipped — ``wants`` says False
    for t and t+1, so nothing is copied — and counted in the results and at close."""
    import threading

    gate = threading.Event()

    class Slow(sp.HostSpectralMonitor):
        def _compute(self, params):
            gate.wait(timeout=30)
            return super()._compute(params)

    p = jax.tree.map(np.asarray, _params(jax.random.PRNGKey(0)))
    mon = Slow(every=2, max_pending=2)
    submitted = []
    for t in range(20):  # measurements due at 0, 2, …, 18: ten of them
        if mon.wants(t):
            assert mon.wants(t)  # asking twice does not change (or count) the decision
            mon.submit(t, p)
            submitted.append(t)
        assert len(mon._open) <= 2 and len(mon._pending) <= 4  # the bound holds throughout
    assert submitted == [0, 1, 2, 3]
    assert (mon.accepted, mon.skipped) == (2, 8)
    gate.set()
    out = dict(mon.close())
    assert sorted(out) == [0, 2]
    assert out[2]["spectral_host/skipped"] == 8
    assert "spectral/attention/block_0/o/delta_sigma" in out[0]
    assert "skipped 8 of 10 measurements" in capsys.readouterr().err
    # a consumer that keeps up skips nothing: the queue drains between measurements
    fast = sp.HostSpectralMonitor(every=2, max_pending=1)
    res = []
    for t in range(8):
        if fast.wants(t):
            fast.submit(t, p)
            if t % 2:  # both copies finished before the next measurement is due
                fast._pending[t - 1].result(), fast._pending[t].result()
                res += fast.poll()
    res += fast.close()
    assert fast.skipped == 0 and [s for s, _ in res] == [0, 2, 4, 6]
    with pytest.raises(ValueError, match="max_pending"):
        sp.HostSpectralMonitor(every=2, max_pending=0)
