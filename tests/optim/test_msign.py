"""msign against a NumPy float64 transcription of paper 003's Algorithm 1 (eq. 13–14)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxspectra import linalg
from jaxspectra.optim.msign import MSignState, msign, msign_targets, n_matrices

D = 8


#: The default sign (``auto`` = linalg's ``mixed`` route) is within 1e-4 max-abs of the float64
#: polar factor; R(W) = ‖W‖_F·S/‖S‖_F multiplies that by ‖W‖_F/‖S‖_F ≈ 1 for these N(0, 1/d)
#: weights (measured errors ≤ 3e-5).
RESTORE_TOL = 1e-4


def make_params(seed=0, zero_q=False):
    rng = np.random.default_rng(seed)
    f = lambda *s: jnp.asarray(rng.standard_normal(s) / np.sqrt(s[-2]), jnp.float32)
    qkv = f(D, 3 * D)
    if zero_q:
        qkv = qkv.at[:, :D].set(0.0)
    return {
        "params": {
            "embed": {"embedding": f(20, D)},
            "block_0": {
                "ln_1": {"scale": jnp.ones(D)},
                "attn": {"qkv": {"kernel": qkv}, "o": {"kernel": f(D, D)}},
                "mlp": {
                    "fc": {"kernel": f(D, 2 * D), "bias": jnp.zeros(2 * D)},
                    "proj": {"kernel": f(2 * D, D)},
                },
            },
            "stack": {"attn": {"o": {"kernel": f(3, D, D)}}},  # stacked layers: 3 matrices
            "head": {"kernel": f(D, 20)},
        }
    }


def grads_like(params, seed):
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda x: jnp.asarray(rng.standard_normal(x.shape), x.dtype), params
    )


def np_restore(w):
    """Alg. 1: F·UVᵀ/‖UVᵀ‖_F (float64, rank from a 1e-9 relative threshold)."""
    w = np.asarray(w, np.float64)
    if not np.any(w):
        return w
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    keep = s > 1e-9 * s[0]
    sign = (u[:, keep]) @ vt[keep]
    return np.linalg.norm(w) * sign / np.linalg.norm(sign)


def np_restore_leaf(path, w):
    w = np.asarray(w, np.float64)
    if path.endswith("qkv/kernel"):
        return np.concatenate([np_restore(p) for p in np.split(w, 3, axis=-1)], axis=-1)
    if w.ndim == 3:
        return np.stack([np_restore(m) for m in w])
    return np_restore(w)


def flat(tree):
    return {
        jax.tree_util.keystr(p, simple=True, separator="/"): x
        for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def run(tx, params, steps, lr=0.1):
    """Apply sgd(lr) + tx for `steps` steps; return per-step (params_before, base_u, final_u)."""
    base = optax.sgd(lr)
    chain = optax.chain(base, tx)
    state = chain.init(params)
    bstate = base.init(params)
    hist = []
    update, base_update = jax.jit(chain.update), jax.jit(base.update)
    for t in range(steps):
        g = grads_like(params, 100 + t)
        bu, bstate = base_update(g, bstate, params)
        u, state = update(g, state, params)
        hist.append((params, bu, u))
        params = optax.apply_updates(params, u)
    return hist, state


def test_matches_algorithm1_fires_on_multiples_of_period_and_only_on_targets():
    params = make_params()
    period = 3
    hist, state = run(msign(period=period, targets="blocks", method="svd"), params, 7)
    targeted = {"params/block_0/attn/qkv/kernel", "params/block_0/attn/o/kernel",
                "params/block_0/mlp/fc/kernel", "params/block_0/mlp/proj/kernel",
                "params/stack/attn/o/kernel"}  # fmt: skip
    for t, (w, bu, u) in enumerate(hist):
        w, bu, u = flat(w), flat(bu), flat(u)
        for path in w:
            if t % period == 0 and path in targeted:
                new = np.asarray(w[path] + u[path], np.float64)
                ref = np_restore_leaf(path, np.asarray(w[path], np.float64) + np.asarray(bu[path]))
                np.testing.assert_allclose(new, ref, atol=RESTORE_TOL, err_msg=f"{path} step {t}")
                assert not np.array_equal(np.asarray(u[path]), np.asarray(bu[path]))
            else:  # untouched: the base update, bit for bit
                np.testing.assert_array_equal(u[path], bu[path], err_msg=f"{path} step {t}")
    assert isinstance(state[1], MSignState)
    assert int(state[1].count) == 7
    n_mats = 3 + 1 + 1 + 1 + 3  # q, k, v, o, fc, proj, 3 stacked o
    assert int(state[1].restorations) == 3 * n_mats  # steps 0, 3, 6
    assert int(state[1].restored["params/block_0/attn/qkv/kernel"].sum()) == 9


def test_preserves_frobenius_and_raises_stable_rank_to_rank():
    rng = np.random.default_rng(1)
    r = 3
    w = jnp.asarray(rng.standard_normal((16, r)) @ rng.standard_normal((r, 12)), jnp.float32)
    w = w + 1e-3 * jnp.outer(jnp.ones(16), jnp.arange(12.0))  # still rank ≤ 4, srank ≈ 1–2
    rank = int(np.linalg.matrix_rank(np.asarray(w, np.float64), tol=1e-4 * np.linalg.norm(w, 2)))
    params = {"block_0": {"attn": {"o": {"kernel": w}}}}
    for method in ("svd", "auto"):
        tx = msign(period=5, targets="attention", method=method)
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        u, _ = jax.jit(tx.update)(zeros, tx.init(params), params)
        new = optax.apply_updates(params, u)["block_0"]["attn"]["o"]["kernel"]
        np.testing.assert_allclose(jnp.linalg.norm(new), jnp.linalg.norm(w), rtol=1e-5)
        assert float(linalg.stable_rank(w)) < rank - 0.5
        np.testing.assert_allclose(linalg.stable_rank(new), rank, rtol=1e-4)


def test_zero_matrix_stays_zero_and_zero_q_part():
    params = {"params": {"block_0": make_params(zero_q=True)["params"]["block_0"]}}
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    tx = msign(period=4)
    u, state = jax.jit(tx.update)(zeros, tx.init(params), params)  # LR 0 at step 0: u = 0, W_Q = 0
    new = optax.apply_updates(params, u)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(new))
    qkv = new["params"]["block_0"]["attn"]["qkv"]["kernel"]
    assert bool(jnp.all(qkv[:, :D] == 0))
    np.testing.assert_allclose(qkv[:, D:], np_restore_leaf("qkv/kernel", params["params"]["block_0"]["attn"]["qkv"]["kernel"])[:, D:], atol=RESTORE_TOL)  # fmt: skip
    zero_tree = {"block_0": {"attn": {"o": {"kernel": jnp.zeros((4, 4))}}}}
    u, st = jax.jit(tx.update)(zero_tree, tx.init(zero_tree), zero_tree)
    assert bool(jnp.all(u["block_0"]["attn"]["o"]["kernel"] == 0))
    assert int(st.restorations) == 0  # a zero matrix is not counted as restored


def test_jit_pmap_and_sharded_params_match_one_device():
    params = {"block_0": make_params(2)["params"]["block_0"]}
    g = grads_like(params, 7)
    tx = optax.chain(optax.sgd(0.1), msign(period=2, targets="all_2d"))
    state = tx.init(params)
    ref_u, ref_state = jax.jit(tx.update)(g, state, params)  # one device (device 0)
    assert int(ref_state[1].restorations) == 6  # q, k, v, o, fc, proj
    flat_p, flat_g = flat(params), flat(g)
    for path, u in flat(ref_u).items():  # and it is Algorithm 1
        if flat_p[path].ndim == 2:
            w = np.asarray(flat_p[path], np.float64)
            new = np_restore_leaf(path, w - 0.1 * np.asarray(flat_g[path]))
            np.testing.assert_allclose(w + np.asarray(u), new, atol=RESTORE_TOL, err_msg=path)

    n = jax.local_device_count()
    rep = lambda t: jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (n,) + x.shape), t)
    pu, _ = jax.pmap(tx.update)(rep(g), rep(state), rep(params))
    for a, b in zip(jax.tree_util.tree_leaves(ref_u), jax.tree_util.tree_leaves(pu)):
        for d in range(n):
            np.testing.assert_allclose(b[d], a, atol=RESTORE_TOL)  # layouts reorder round-off

    mesh = Mesh(np.array(jax.devices()[: min(n, 4)]), ("fsdp",))

    def shard(x):
        ok = x.ndim >= 1 and x.shape[0] % mesh.size == 0
        return jax.device_put(x, NamedSharding(mesh, PartitionSpec("fsdp" if ok else None)))

    sp, sg = jax.tree_util.tree_map(shard, params), jax.tree_util.tree_map(shard, g)
    assert len(sp["block_0"]["attn"]["o"]["kernel"].sharding.device_set) == mesh.size
    su, _ = jax.jit(tx.update)(sg, tx.init(sp), sp)
    for a, b in zip(jax.tree_util.tree_leaves(ref_u), jax.tree_util.tree_leaves(su)):
        np.testing.assert_allclose(b, a, atol=RESTORE_TOL)


def test_adaptive_triggers_only_when_stable_rank_collapses():
    rng = np.random.default_rng(3)
    n = 12
    w0 = jnp.asarray(np.linalg.qr(rng.standard_normal((n, n)))[0], jnp.float32)  # srank = n
    spike = jnp.asarray(np.outer(rng.standard_normal(n), rng.standard_normal(n)), jnp.float32)
    spike = spike / jnp.linalg.norm(spike, 2)
    params = {"block_0": {"attn": {"o": {"kernel": w0}}}}
    tx = msign(targets="attention", adaptive=True, check_every=5, tau=0.5, method="svd")
    state = tx.init(params)
    update = jax.jit(tx.update)
    sranks, fired = [], []
    for t in range(30):
        # steps 0–9: small noise (srank stays high); from step 10 a growing rank-one spike
        amp = 0.0 if t < 10 else 0.6
        u = {"block_0": {"attn": {"o": {"kernel": amp * spike + 1e-3 * jnp.asarray(rng.standard_normal((n, n)), jnp.float32)}}}}  # fmt: skip
        before = int(state.restorations)
        u2, state = update(u, state, params)
        params = optax.apply_updates(params, u2)
        fired.append(int(state.restorations) - before)
        sranks.append(float(linalg.stable_rank(params["block_0"]["attn"]["o"]["kernel"])))
    fire_steps = [t for t, f in enumerate(fired) if f]
    # reference n at step 0; srank(W + k·0.6·spike) < n/2 first at k = 2 (step 11), checked at 15
    assert fire_steps and all(t % 5 == 0 for t in fire_steps), fire_steps
    assert fire_steps[0] == 15, (fire_steps, sranks)
    assert all(t >= 10 for t in fire_steps)
    assert sranks[15] > 0.99 * n  # restored to full stable rank
    ref = float(state.srank_ref["block_0/attn/o/kernel"][0])
    assert abs(ref - n) < 1e-2 * n  # reference = stable rank just after the last restoration
    assert int(state.restored["block_0/attn/o/kernel"][0]) == len(fire_steps)


def test_adaptive_zero_init_gets_a_reference_once_it_moves():
    params = {"block_0": {"attn": {"q": {"kernel": jnp.zeros((6, 6))}}}}
    tx = msign(targets="attention", adaptive=True, check_every=1)
    state, update = tx.init(params), jax.jit(tx.update)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    _, state = update(zeros, state, params)
    assert float(state.srank_ref["block_0/attn/q/kernel"][0]) == 0.0
    u = {"block_0": {"attn": {"q": {"kernel": jnp.eye(6)}}}}
    _, state = update(u, state, params)
    np.testing.assert_allclose(state.srank_ref["block_0/attn/q/kernel"][0], 6.0, rtol=1e-3)
    assert int(state.restorations) == 0


def test_target_presets():
    params = make_params()
    sel = lambda t: sorted(p for p, v in flat(msign_targets(params, t)).items() if v)
    everything_2d = sorted(p for p, x in flat(params).items() if x.ndim >= 2)
    assert sel("all_2d") == everything_2d
    assert "params/embed/embedding" in sel("all_2d") and "params/head/kernel" in sel("all_2d")
    assert sel("attention") == ["params/block_0/attn/o/kernel", "params/block_0/attn/qkv/kernel",
                                "params/stack/attn/o/kernel"]  # fmt: skip
    assert sel("mlp") == ["params/block_0/mlp/fc/kernel", "params/block_0/mlp/proj/kernel"]
    assert sel("blocks") == sorted(sel("attention") + sel("mlp"))
    assert sel(["attention", "mlp"]) == sel("blocks")
    assert sel(lambda p, x: p.endswith("head/kernel")) == ["params/head/kernel"]
    assert n_matrices("params/block_0/attn/qkv/kernel", (D, 3 * D)) == 3
    assert n_matrices("params/stack/attn/o/kernel", (3, D, D)) == 3


def test_bad_input():
    params = make_params()
    for period in (0, -5, 2.5):
        with pytest.raises(ValueError, match="period"):
            msign(period=period)
    with pytest.raises(ValueError, match="unknown msign target preset"):
        msign(targets="attn").init(params)
    with pytest.raises(ValueError, match="matches no parameter"):
        msign(targets="mlp").init({"block_0": {"attn": {"o": {"kernel": jnp.ones((3, 3))}}}})
    mask = jax.tree_util.tree_map(lambda x: True, params)
    with pytest.raises(ValueError, match="params/block_0/ln_1/scale"):
        msign(targets=mask).init(params)
    with pytest.raises(ValueError, match="params/block_0/mlp/fc/bias"):
        msign(targets=lambda p, x: "mlp" in p).init(params)
    with pytest.raises(ValueError, match="selects no parameter"):
        msign(targets=lambda p, x: False).init(params)
    with pytest.raises(ValueError, match="unknown msign method"):
        msign(method="eig")
    with pytest.raises(ValueError, match="tau"):
        msign(adaptive=True, tau=0.0)
    tx = msign()
    with pytest.raises(ValueError, match="needs params"):
        tx.update(params, tx.init(params))
    bad_qkv = {"attn": {"qkv": {"kernel": jnp.ones((4, 7))}}}
    with pytest.raises(ValueError, match="qkv"):
        tx.init(bad_qkv)
        tx.update(bad_qkv, tx.init(bad_qkv), bad_qkv)
