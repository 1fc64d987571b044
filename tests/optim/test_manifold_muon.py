"""Manifold Muon (paper 004, App. A) against independent ground truth.

* closed form: square Stiefel W (even n) → A = W·sign(skew(WᵀG));
* cvxpy: max ⟨G, A⟩ s.t. σ_max(A) ≤ 1, P(WᵀA + AᵀW) = 0 on 8×4 matrices;
* the NumPy float64 transcription in ``_manifold_reference.py`` (one and two optimiser steps);
* manifold invariants over several steps, retraction fixed points, jit / pmap / NamedSharding
  equivalence, and bad-input errors.
"""

from __future__ import annotations

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxspectra.optim import manifold_muon as mm
from jaxspectra.optim import retractions
from jaxspectra.precision import x64_scope

_spec = importlib.util.spec_from_file_location(
    "_manifold_reference", pathlib.Path(__file__).with_name("_manifold_reference.py")
)
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)

MANIFOLDS = ("stiefel", "dgram", "oblique")
ACCURATE = "svd"  # float64 ground-truth sign for the comparisons with NumPy / cvxpy


def _on_manifold(rng, shape, manifold, scales=None):
    """A random point of ``manifold`` (NumPy float64), any orientation."""
    x = rng.standard_normal(shape)
    wide = shape[0] < shape[1]
    t = x.T if wide else x
    t = ref.np_retract(t, manifold)
    if manifold == "dgram":
        t = t * (scales if scales is not None else rng.uniform(0.5, 2.0, t.shape[1]))
    return t.T if wide else t


def _step(opt, params, grads, state=None):
    state = opt.init(params) if state is None else state
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state


# ------------------------------------------------------------------------------------------------
# Building blocks
# ------------------------------------------------------------------------------------------------


def test_optax_trace_nesterov_is_sum_form():
    """optax.trace(μ, nesterov=True): buf ← μ·buf + g, G = g + μ·buf (paper 004's momentum)."""
    mu = 0.95
    tr = optax.trace(decay=mu, nesterov=True)
    g1, g2 = jnp.array([1.0, -2.0]), jnp.array([0.5, 3.0])
    s = tr.init(g1)
    out1, s = tr.update(g1, s)
    out2, s = tr.update(g2, s)
    buf1 = g1
    buf2 = mu * buf1 + g2
    np.testing.assert_allclose(out1, g1 + mu * buf1, rtol=1e-6)
    np.testing.assert_allclose(out2, g2 + mu * buf2, rtol=1e-6)
    np.testing.assert_allclose(s.trace, buf2, rtol=1e-6)


def test_square_stiefel_closed_form():
    """Even n: the constrained maximiser is A = W·sign(skew(WᵀG)) (tangent at Λ₀, unique)."""
    rng = np.random.default_rng(0)
    n = 6
    w = ref.np_sign(rng.standard_normal((2, n, n)))
    g = rng.standard_normal((2, n, n))
    skew = 0.5 * (np.swapaxes(w, 1, 2) @ g - np.swapaxes(g, 1, 2) @ w)
    expected = np.stack([w[i] @ ref.np_sign(skew[i]) for i in range(2)])
    with x64_scope():
        for early_stop in (True, False):
            a, v, k, _ = mm.dual_ascent(
                jnp.asarray(w), jnp.asarray(g), "stiefel", sign_method=ACCURATE,
                early_stop=early_stop,
            )
            np.testing.assert_allclose(np.asarray(a), expected, atol=1e-10)
            assert np.all(np.asarray(v) < 1e-12)  # no round-off growth without the stop either
            assert np.all(np.asarray(k) == (1 if early_stop else 20))
    # its value is the nuclear norm of skew(WᵀG) (max of ⟨S, B⟩ over ‖B‖₂ ≤ 1)
    nuc = [np.linalg.svd(skew[i], compute_uv=False).sum() for i in range(2)]
    np.testing.assert_allclose(np.sum(g * expected, axis=(1, 2)), nuc, rtol=1e-12)


def test_square_stiefel_odd_n_uses_partial_isometry():
    """Odd n: skew(WᵀG) is singular; the partial-isometry sign keeps A tangent (thin UVᵀ would not)."""
    rng = np.random.default_rng(1)
    n = 5
    w = ref.np_sign(rng.standard_normal((n, n)))
    g = rng.standard_normal((n, n))
    with x64_scope():
        a, v, k, _ = mm.dual_ascent(
            jnp.asarray(w)[None], jnp.asarray(g)[None], "stiefel", sign_method=ACCURATE
        )
    assert float(v[0]) < 1e-10 and int(k[0]) == 1
    a = np.asarray(a[0])
    np.testing.assert_allclose(w.T @ a + a.T @ w, 0, atol=1e-10)
    np.testing.assert_allclose(np.linalg.svd(a, compute_uv=False), [1, 1, 1, 1, 0], atol=1e-10)


@pytest.mark.parametrize(
    "manifold,steps,alpha,atol",
    [("stiefel", 400, 0.1, 2e-4), ("oblique", 400, 0.1, 2e-4), ("dgram", 4000, 0.3, 2e-4)],
)
def test_tall_direction_matches_cvxpy(manifold, steps, alpha, atol):
    """8×4: dual ascent (run long, exact sign) reaches the convex solver's maximiser."""
    rng = np.random.default_rng(2)
    w = _on_manifold(rng, (8, 4), manifold, scales=np.array([0.5, 2.0, 1.0, 1.5]))
    g = rng.standard_normal((8, 4))
    a_cvx, val = ref.cvxpy_direction(w, g, manifold)
    with x64_scope():
        a, v, k, _ = mm.dual_ascent(
            jnp.asarray(w)[None], jnp.asarray(g)[None], manifold, inner_steps=steps,
            alpha=alpha, tol=1e-9, sign_method=ACCURATE,
        )
    a = np.asarray(a[0])
    assert float(v[0]) < 1e-5
    np.testing.assert_allclose(np.sum(g * a), val, rtol=1e-5)
    np.testing.assert_allclose(a, a_cvx, atol=atol)
    # at the paper's K = 20 the direction is still far from feasible (what the metrics report)
    with x64_scope():
        _, v20, k20, _ = mm.dual_ascent(
            jnp.asarray(w)[None], jnp.asarray(g)[None], manifold, sign_method=ACCURATE
        )
    assert float(v20[0]) > 1e-3 and int(k20[0]) == 20


# ------------------------------------------------------------------------------------------------
# One optimiser step == the NumPy float64 transcription
# ------------------------------------------------------------------------------------------------

CASES = [
    ("stiefel", (8, 4), {}),
    ("stiefel", (4, 8), {"safeguard": True}),
    ("stiefel", (6, 6), {}),
    ("dgram", (8, 4), {}),
    ("dgram", (4, 8), {"retraction": "sorted"}),
    ("dgram", (8, 4), {"early_stop": False, "safeguard": True}),
    ("oblique", (8, 4), {"inner_steps": 7, "alpha": 0.3}),
]


@pytest.mark.parametrize("manifold,shape,kw", CASES)
def test_two_steps_match_numpy_float64(manifold, shape, kw):
    rng = np.random.default_rng(3)
    w0 = _on_manifold(rng, shape, manifold)
    grads = [rng.standard_normal(shape) for _ in range(2)]
    lr = 0.05
    with x64_scope():
        opt = mm.manifold_muon(lr, manifold, sign_method=ACCURATE, **kw)
        params = {"blk": {"kernel": jnp.asarray(w0)}}
        state = opt.init(params)
        w_ref, buf = w0, np.zeros(shape)
        for g in grads:
            params, state = _step(opt, params, {"blk": {"kernel": jnp.asarray(g)}}, state)
            w_ref, buf, v_ref, k_ref = ref.np_manifold_muon_step(w_ref, g, buf, lr, manifold, **kw)
            np.testing.assert_allclose(np.asarray(params["blk"]["kernel"]), w_ref, atol=1e-7)
            np.testing.assert_allclose(float(state.violation["blk"]["kernel"]), v_ref, rtol=1e-5,
                                       atol=1e-12)
            assert int(state.inner_steps["blk"]["kernel"]) == k_ref
        np.testing.assert_allclose(np.asarray(state.momentum.trace["blk"]["kernel"]), buf, atol=1e-12)


def test_warm_start_continues_from_previous_multiplier():
    rng = np.random.default_rng(4)
    w0 = _on_manifold(rng, (8, 4), "dgram")
    g1, g2 = rng.standard_normal((2, 8, 4))
    with x64_scope():
        opt = mm.manifold_muon(0.05, "dgram", sign_method=ACCURATE, warm_start=True)
        p = {"k": jnp.asarray(w0)}
        p1, s1 = _step(opt, p, {"k": jnp.asarray(g1)})
        lam1 = np.asarray(s1.dual["k"])
        # step 1 is the cold start; step 2 must start from Λ stored at step 1
        w1, buf, _, _ = ref.np_manifold_muon_step(w0, g1, np.zeros((8, 4)), 0.05, "dgram")
        np.testing.assert_allclose(np.asarray(p1["k"]), w1, atol=1e-7)
        _, lam_ref = ref.np_direction(w0, g1 * 1.95, "dgram")[::3]
        np.testing.assert_allclose(lam1, lam_ref, atol=1e-9)
        p2, s2 = _step(opt, p1, {"k": jnp.asarray(g2)}, s1)
        buf2 = 0.95 * buf + g2
        a, v, k, _ = ref.np_direction(w1, g2 + 0.95 * buf2, "dgram", lam0=lam1)
        np.testing.assert_allclose(np.asarray(p2["k"]), ref.np_retract(w1 - 0.05 * a, "dgram"),
                                   atol=1e-7)
        np.testing.assert_allclose(float(s2.violation["k"]), v, rtol=1e-5)


# ------------------------------------------------------------------------------------------------
# Manifold invariants, retractions, metrics
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "manifold,method,bound",
    [
        ("stiefel", "accurate", 1e-5),
        ("dgram", "accurate", 1e-5),
        # bf16 Polar Express (paper 004's msign) as the retraction: measured 1.4e-2 / 3.6e-3
        ("stiefel", "polar_express", 3e-2),
        ("dgram", "polar_express", 1e-2),
    ],
)
def test_iterates_stay_on_manifold_float32(manifold, method, bound):
    """‖WᵀW − I‖_max (Stiefel) / off-diag of the normalised Gram (DGram) after 5 float32 steps."""
    rng = np.random.default_rng(5)
    params = {"mlp": {"fc": {"kernel": jnp.asarray(rng.standard_normal((3, 16, 8)), jnp.float32)}}}
    params = mm.project_to_manifold(params, manifold, sign_method=method)
    opt = mm.manifold_muon(0.1, manifold, sign_method=method)
    state = opt.init(params)
    step = jax.jit(lambda g, s, p: _step(opt, p, g, s))
    for _ in range(5):
        g = {"mlp": {"fc": {"kernel": jnp.asarray(rng.standard_normal((3, 16, 8)), jnp.float32)}}}
        params, state = step(g, state, params)
    w = np.asarray(params["mlp"]["fc"]["kernel"], np.float64)
    gram = np.swapaxes(w, 1, 2) @ w
    if manifold == "stiefel":
        err = np.abs(gram - np.eye(8)).max()
    else:
        d = np.sqrt(np.einsum("bii->bi", gram))
        err = np.abs(gram / d[:, :, None] / d[:, None, :] - np.eye(8)).max()
    assert err <= bound
    if method == "polar_express":  # bf16 does not reach the accurate bound
        assert err > 1e-4
    assert state.violation["mlp"]["fc"]["kernel"].shape == (3,)
    assert state.inner_steps["mlp"]["fc"]["kernel"].dtype == jnp.int32


def test_dgram_default_retraction_fixes_points_and_sorted_reorders():
    rng = np.random.default_rng(6)
    q = ref.np_sign(rng.standard_normal((8, 4)))
    x = jnp.asarray(q * np.array([0.5, 2.0, 1.0, 1.5]), jnp.float32)
    same = retractions.retract(x, "dgram", sign_method=ACCURATE)
    np.testing.assert_allclose(np.asarray(same), np.asarray(x), atol=1e-6)
    srt_svd = np.asarray(retractions.retract(x, "dgram", "sorted", sign_method="svd"))
    np.testing.assert_allclose(srt_svd, ref.np_retract(np.asarray(x, np.float64), "dgram", "sorted"),
                               atol=1e-5)
    for srt in (srt_svd, np.asarray(retractions.retract(x, "dgram", "sorted"))):  # SVD-free path
        np.testing.assert_allclose(np.linalg.norm(srt, axis=0), [2.0, 1.5, 1.0, 0.5], rtol=1e-5)
        gram = srt.T @ srt
        np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0, atol=1e-5)
    np.testing.assert_allclose(retractions.retract(x, "dgram", "sorted"), srt_svd, atol=1e-5)
    # Stiefel and oblique retractions fix their manifold points too
    np.testing.assert_allclose(retractions.retract(jnp.asarray(q, jnp.float32), "stiefel",
                                                   sign_method=ACCURATE), q, atol=1e-6)
    ob = q / np.linalg.norm(q, axis=0) * 1.0
    np.testing.assert_allclose(retractions.retract(jnp.asarray(ob, jnp.float32), "oblique"), ob,
                               atol=1e-6)
    # a generic point lands on DGram: diagonal Gram
    y = np.asarray(retractions.retract(jnp.asarray(rng.standard_normal((8, 4)), jnp.float32),
                                       "dgram", sign_method=ACCURATE))
    gy = y.T @ y
    np.testing.assert_allclose(gy - np.diag(np.diag(gy)), 0, atol=1e-5)


def _np_rank_changes(x: np.ndarray) -> int:
    """NumPy float64 count: columns of tall x not at their descending column-norm rank."""
    order = np.argsort(-np.linalg.norm(np.asarray(x, np.float64), axis=0), kind="stable")
    return int(np.sum(order != np.arange(x.shape[1])))


def test_rank_changes_matches_numpy():
    rng = np.random.default_rng(11)
    q = ref.np_sign(rng.standard_normal((8, 4)))
    cases = {(2.0, 1.5, 1.0, 0.5): 0, (2.0, 1.0, 1.5, 0.5): 2, (0.5, 2.0, 1.0, 1.5): 3,
             (1.0, 1.0, 1.0, 1.0): 0}  # ties keep their index order (stable sort)
    for norms, want in cases.items():
        x = q * np.array(norms)
        assert _np_rank_changes(x) == want
        assert int(mm.rank_changes(jnp.asarray(x, jnp.float32))) == want
    bank = rng.standard_normal((5, 9, 6))
    np.testing.assert_array_equal(np.asarray(mm.rank_changes(jnp.asarray(bank, jnp.float32))),
                                  [_np_rank_changes(b) for b in bank])


def test_sorted_retraction_counts_swaps_of_the_pre_retraction_point():
    """W = Q·diag(2, 1.5, 1.2, 1) sorted; G = −q₃e₃ᵀ is tangent (WᵀG diagonal), so A = −q₃e₃ᵀ
    exactly and X = W − ηA lengthens column 3 by η: it overtakes column 2 (1.2) iff η > 0.2."""
    rng = np.random.default_rng(12)
    q = ref.np_sign(rng.standard_normal((8, 4)))
    w0 = q * np.array([2.0, 1.5, 1.2, 1.0])
    g = -np.outer(q[:, 3], np.eye(4)[3])
    with x64_scope():
        for lr, want in ((0.1, [0, 0]), (0.25, [2, 2])):
            opt = mm.manifold_muon(lr, "dgram", retraction="sorted", sign_method=ACCURATE)
            params, state = {"k": jnp.asarray(w0)}, None
            w_ref, buf = w0, np.zeros_like(w0)
            for step, n_swaps in enumerate(want):
                x = w_ref + lr * np.outer(q[:, 3], np.eye(4)[3])  # W − η·A, A = −q₃e₃ᵀ
                assert _np_rank_changes(x) == n_swaps
                params, state = _step(opt, params, {"k": jnp.asarray(g)}, state)
                w_ref, buf, _, _ = ref.np_manifold_muon_step(w_ref, g, buf, lr, "dgram",
                                                             retraction="sorted")
                np.testing.assert_allclose(np.asarray(params["k"]), w_ref, atol=1e-7)
                assert int(state.swaps["k"]) == n_swaps
                assert int(state.swaps_total["k"]) == sum(want[: step + 1])
        # the default DGram retraction and the other manifolds record 0
        for manifold, ret in (("dgram", "default"), ("stiefel", "default")):
            opt = mm.manifold_muon(0.25, manifold, retraction=ret, sign_method=ACCURATE)
            _, st = _step(opt, {"k": jnp.asarray(w0)}, {"k": jnp.asarray(g)})
            assert int(st.swaps["k"]) == 0 and int(st.swaps_total["k"]) == 0


def test_weight_decay_zero_is_bit_identical():
    rng = np.random.default_rng(13)
    w0 = jnp.asarray(_on_manifold(rng, (8, 4), "dgram"), jnp.float32)
    g = {"k": jnp.asarray(rng.standard_normal((8, 4)), jnp.float32)}
    outs = []
    for kw in ({}, {"weight_decay": 0.0}, {"weight_decay": jnp.float32(0.0)}):  # last: traced path
        opt = mm.paper004_manifold_muon(0.05, "dgram", sign_method="svd", **kw)
        outs.append(np.asarray(_step(opt, {"k": w0}, g)[0]["k"]))
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


def test_weight_decay_single_step_by_hand():
    """X = W − η(A + λW) before the retraction. Closed form: W = Q·diag(2, 1.5, 1.2, 1) and
    G = −q₃e₃ᵀ (tangent, so A = −q₃e₃ᵀ); X stays on DGram, which the default retraction fixes:
    W₁ = (1 − ηλ)·W + η·q₃e₃ᵀ. Then a random case against the NumPy direction + retraction."""
    rng = np.random.default_rng(14)
    q = ref.np_sign(rng.standard_normal((8, 4)))
    norms = np.array([2.0, 1.5, 1.2, 1.0])
    e3 = np.eye(4)[3]
    lr, wd = 0.05, 0.3
    with x64_scope():
        opt = mm.manifold_muon(lr, "dgram", sign_method=ACCURATE, weight_decay=wd)
        p, _ = _step(opt, {"k": jnp.asarray(q * norms)}, {"k": jnp.asarray(-np.outer(q[:, 3], e3))})
        want = (1 - lr * wd) * q * norms + lr * np.outer(q[:, 3], e3)
        np.testing.assert_allclose(np.asarray(p["k"]), want, atol=1e-12)
        np.testing.assert_allclose(np.linalg.norm(np.asarray(p["k"]), axis=0),
                                   (1 - lr * wd) * norms + lr * e3, atol=1e-12)
        for manifold, ret in (("dgram", "sorted"), ("stiefel", "default")):
            w0 = _on_manifold(rng, (8, 4), manifold)
            g = rng.standard_normal((8, 4))
            opt = mm.manifold_muon(lr, manifold, retraction=ret, sign_method=ACCURATE,
                                   weight_decay=wd)
            p, _ = _step(opt, {"k": jnp.asarray(w0)}, {"k": jnp.asarray(g)})
            a, _, _, _ = ref.np_direction(w0, g * 1.95, manifold)  # G = g + μ·g at step 1
            want = ref.np_retract(w0 - lr * (a + wd * w0), manifold, ret)
            np.testing.assert_allclose(np.asarray(p["k"]), want, atol=1e-7)
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        mm.manifold_muon(0.1, "dgram", weight_decay=-0.1)


def test_qkv_split_and_whole_and_mask():
    rng = np.random.default_rng(7)
    params = {
        "block_0": {
            "attn": {"qkv": {"kernel": jnp.asarray(rng.standard_normal((4, 12)), jnp.float32)}},
            "ln_1": {"scale": jnp.ones(4)},
        }
    }
    mask = {"block_0": {"attn": True, "ln_1": False}}
    split = mm.project_to_manifold(params, "stiefel", mask, qkv="split", sign_method=ACCURATE)
    whole = mm.project_to_manifold(params, "stiefel", lambda p: jax.tree.map(lambda x: x.ndim == 2, p),
                                   sign_method=ACCURATE)  # a callable mask
    assert split["block_0"]["ln_1"]["scale"] is params["block_0"]["ln_1"]["scale"]
    ws = np.asarray(split["block_0"]["attn"]["qkv"]["kernel"])
    for part in np.split(ws, 3, axis=1):
        np.testing.assert_allclose(part.T @ part, np.eye(4), atol=1e-5)
    ww = np.asarray(whole["block_0"]["attn"]["qkv"]["kernel"])
    np.testing.assert_allclose(ww @ ww.T, np.eye(4), atol=1e-5)  # wide: rows orthonormal
    opt = mm.manifold_muon(0.1, "stiefel", sign_method=ACCURATE, qkv="split")
    attn = {"qkv": split["block_0"]["attn"]["qkv"]}
    new, state = _step(opt, attn, jax.tree.map(jnp.ones_like, attn))
    assert state.violation["qkv"]["kernel"].shape == (3,)
    for part in np.split(np.asarray(new["qkv"]["kernel"]), 3, axis=1):
        np.testing.assert_allclose(part.T @ part, np.eye(4), atol=1e-5)


def test_works_inside_optax_partition_and_schedule():
    rng = np.random.default_rng(8)
    params = {
        "attn": {"o": {"kernel": jnp.asarray(rng.standard_normal((4, 4)), jnp.float32)}},
        "ln": {"scale": jnp.ones(4)},
    }
    params = mm.project_to_manifold(params, "stiefel", {"attn": True, "ln": False},
                                    sign_method=ACCURATE)
    sched = optax.linear_schedule(0.0, 0.1, 10)
    opt = optax.partition(
        {"mm": mm.manifold_muon(sched, "stiefel", sign_method=ACCURATE), "adam": optax.adam(1e-3)},
        {"attn": "mm", "ln": "adam"},
    )
    grads = jax.tree.map(jnp.ones_like, params)
    new, state = _step(opt, params, grads)
    # the schedule is 0 at step 0: the first update leaves the manifold weight unchanged
    np.testing.assert_allclose(new["attn"]["o"]["kernel"], params["attn"]["o"]["kernel"], atol=1e-6)
    # metrics are reachable through the partition state (square Stiefel: exact at step 1)
    assert int(optax.tree.get(state, "inner_steps")["attn"]["o"]["kernel"]) == 1
    assert float(optax.tree.get(state, "violation")["attn"]["o"]["kernel"]) < 1e-5


# ------------------------------------------------------------------------------------------------
# jit, pmap, sharding
# ------------------------------------------------------------------------------------------------


def _batched_problem(n_dev):
    rng = np.random.default_rng(9)
    w = _on_manifold(rng, (8, 4), "stiefel")
    ws = np.stack([ref.np_retract(rng.standard_normal((8, 4)), "stiefel") for _ in range(n_dev)])
    gs = rng.standard_normal((n_dev, 8, 4))
    params = {"stack": jnp.asarray(ws, jnp.float32), "wide": jnp.asarray(w.T, jnp.float32)}
    grads = {"stack": jnp.asarray(gs, jnp.float32),
             "wide": jnp.asarray(rng.standard_normal((4, 8)), jnp.float32)}
    return params, grads


def test_jit_pmap_and_sharding_match_one_device(n_devices):
    assert n_devices == 8
    opt = mm.manifold_muon(0.05, "stiefel", sign_method=ACCURATE, inner_steps=5)
    params, grads = _batched_problem(n_devices)
    state = opt.init(params)
    eager, s_eager = opt.update(grads, state, params)
    jitted, s_jit = jax.jit(opt.update)(grads, state, params)
    for k in params:
        np.testing.assert_allclose(jitted[k], eager[k], atol=1e-6)
    # pmap: one matrix of the stack per device
    one = {"stack": params["stack"]}
    pm_params = {"stack": one["stack"]}  # leading axis = devices, each (8, 4)
    pm_state = jax.pmap(opt.init)(pm_params)
    pm_up, pm_state = jax.pmap(opt.update)({"stack": grads["stack"]}, pm_state, pm_params)
    np.testing.assert_allclose(pm_up["stack"], eager["stack"], atol=1e-5)
    np.testing.assert_allclose(pm_state.violation["stack"], s_eager.violation["stack"], atol=1e-5)
    # NamedSharding over the stacked axis
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("d",))
    shard = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("d"))
    repl = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    put = lambda t: {"stack": jax.device_put(t["stack"], shard),
                     "wide": jax.device_put(t["wide"], repl)}
    sp, sg = put(params), put(grads)
    sh_up, sh_state = jax.jit(opt.update)(sg, opt.init(sp), sp)
    for k in params:
        np.testing.assert_allclose(sh_up[k], eager[k], atol=1e-6)
    np.testing.assert_array_equal(sh_state.inner_steps["stack"], s_eager.inner_steps["stack"])


# ------------------------------------------------------------------------------------------------
# Preset and bad input
# ------------------------------------------------------------------------------------------------


def test_paper004_preset_is_the_authors_algorithm():
    """With an exact sign swapped in, paper004_manifold_muon('dgram') == the NumPy transcription
    (sorted)."""
    rng = np.random.default_rng(10)
    w0 = _on_manifold(rng, (4, 8), "dgram")
    g = rng.standard_normal((4, 8))
    with x64_scope():
        opt = mm.paper004_manifold_muon(0.05, "dgram", sign_method=ACCURATE)
        p, s = _step(opt, {"k": jnp.asarray(w0)}, {"k": jnp.asarray(g)})
    w1, _, v, k = ref.np_manifold_muon_step(w0, g, np.zeros((4, 8)), 0.05, "dgram",
                                            retraction="sorted")
    np.testing.assert_allclose(np.asarray(p["k"]), w1, atol=1e-7)
    assert int(s.inner_steps["k"]) == k and s.dual is None
    assert isinstance(mm.paper004_manifold_muon(0.02, "stiefel"), optax.GradientTransformation)


def test_bad_input_errors():
    with pytest.raises(ValueError, match="unknown manifold 'sphere'"):
        mm.manifold_muon(0.1, "sphere")
    with pytest.raises(ValueError, match="unknown manifold"):
        mm.project_to_manifold({"w": jnp.ones((2, 2))}, "grassmann")
    with pytest.raises(ValueError, match="sorted"):
        mm.manifold_muon(0.1, "stiefel", retraction="sorted")
    with pytest.raises(ValueError, match="unknown retraction"):
        mm.manifold_muon(0.1, "dgram", retraction="cayley")
    with pytest.raises(ValueError, match="qkv"):
        mm.manifold_muon(0.1, "dgram", qkv="fused")
    with pytest.raises(ValueError, match="inner_steps"):
        mm.manifold_muon(0.1, "dgram", inner_steps=0)
    opt = mm.manifold_muon(0.1, "stiefel", sign_method=ACCURATE)
    params = {"block_0": {"ln_1": {"scale": jnp.ones(4)}}}
    with pytest.raises(ValueError, match="block_0/ln_1/scale"):
        opt.init(params)
    good = {"w": jnp.eye(4)}
    with pytest.raises(ValueError, match="needs params"):
        opt.update(good, opt.init(good))
    with pytest.raises(ValueError, match="block_0/ln_1/scale"):
        mm.project_to_manifold(params, "stiefel")


def test_unknown_sign_method_is_rejected():
    with pytest.raises(ValueError, match="bogus"):
        mm.manifold_muon(0.1, "stiefel", sign_method="bogus")


# ------------------------------------------------------------------------------------------------
# Robust dual ascent (issue 25, item 4) and the retraction's accuracy at lr = 0
# ------------------------------------------------------------------------------------------------


def _skew_gap_case(seed: int, n: int = 16, gap: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Square Stiefel W and G = W·S with S skew, singular-value pairs geometric in [gap, 1]."""
    rng = np.random.default_rng(seed)
    w, _ = np.linalg.qr(rng.standard_normal((n, n)))
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    blk = np.zeros((n, n))
    for i, s in enumerate(np.geomspace(1.0, gap, n // 2)):
        blk[2 * i, 2 * i + 1], blk[2 * i + 1, 2 * i] = s, -s
    return w, w @ (q @ blk @ q.T)


def _diverged(v_first: np.ndarray, v_final: np.ndarray) -> np.ndarray:
    """The criterion, fixed before the runs: the returned direction's violation exceeds 100 ×
    the first iterate's (which is at round-off: Λ₀ is exact for a square Stiefel W)."""
    return v_final > 100.0 * v_first


def test_absolute_rule_diverges_in_float32_and_robust_rule_does_not():
    """Issue 25 item 4: square 16×16 Stiefel, skew(WᵀG) with a singular-value pair at 1e-3 of
    the largest, float32, accurate sign. The authors' rule (RMS(H) < 1e-6) misses the first
    iterate's round-off (~1e-6) and the undamped dual step amplifies it; the default keeps the
    best iterate and stops. Seeds are searched in order, so the failing case is built."""
    import functools

    w, g = zip(*[_skew_gap_case(seed) for seed in range(8)])
    w, g = jnp.asarray(np.stack(w), jnp.float32), jnp.asarray(np.stack(g), jnp.float32)
    run = lambda rule, k: jax.jit(functools.partial(  # noqa: E731
        mm.dual_ascent, manifold="stiefel", sign_method="accurate", stop_rule=rule,
        inner_steps=k))(w, g)
    # the first iterate (K = 1 takes one sign, no update): its violation is round-off only
    v_first = np.asarray(run("absolute", 1)[1])
    assert np.all(v_first < 1e-5)
    _, v_abs, k_abs, _ = run("absolute", 20)
    bad = _diverged(v_first, np.asarray(v_abs))
    assert bad.any(), "no seed in 0..7 reproduces the divergence: the case is not built"
    assert np.asarray(v_abs)[bad].min() > 1e-2 and np.all(np.asarray(k_abs)[bad] == 20)
    _, v_rob, k_rob, _ = run("robust", 20)
    assert not _diverged(v_first, np.asarray(v_rob)).any()
    np.testing.assert_array_less(np.asarray(v_rob), v_first * (1 + 1e-6))
    assert np.asarray(k_rob).max() <= 3  # the stop fires: round-off floor or blow-up


def test_diverged_criterion_negative_control():
    """The verdict can fail: a final violation 1e3 × the first is flagged, an equal one is not."""
    assert _diverged(np.array([1e-6]), np.array([1e-3]))[0]
    assert not _diverged(np.array([1e-6]), np.array([1e-6]))[0]


def test_robust_tolerance_from_round_off():
    u32, ubf = 2.0**-24, 2.0**-8
    assert mm.robust_tolerance(16, "accurate") == pytest.approx(4 * (u32 + 4 * u32))
    assert mm.robust_tolerance(768, "polar_express") == pytest.approx(
        4 * (ubf + np.sqrt(768) * u32))
    with pytest.raises(ValueError, match="stop_rule"):
        mm.manifold_muon(0.1, "stiefel", stop_rule="never")


@pytest.mark.parametrize("shape", [(16, 48)])  # wide: transposed to 48×16 and back
def test_retraction_accuracy_at_lr_zero_default_vs_paper004(shape):
    """At lr = 0 a step is W ← retract(W). The default's float32 retraction keeps ‖WᵀW − I‖₂ at
    float32 round-off (≤ 4·√m·eps); paper004's bf16 Polar-Express retraction (the authors')
    leaves ≈ 1e-2 and moves W (measured 1.5e-2 and ‖ΔW‖₂ 0.03-0.1)."""
    rng = np.random.default_rng(11)
    p = mm.project_to_manifold({"w": jnp.asarray(rng.standard_normal(shape), jnp.float32)},
                               "stiefel", sign_method="svd")
    g = {"w": jnp.asarray(1e-2 * rng.standard_normal(shape), jnp.float32)}
    m, n = max(shape), min(shape)

    def orth_err_and_move(opt):
        u, _ = opt.update(g, opt.init(p), p)
        w = np.asarray(optax.apply_updates(p, u)["w"], np.float64)
        w = w if w.shape[0] >= w.shape[1] else w.T
        return (np.linalg.norm(w.T @ w - np.eye(n), 2),
                np.linalg.norm(np.asarray(u["w"], np.float64), 2))

    e_def, d_def = orth_err_and_move(mm.manifold_muon(0.0, "stiefel"))
    e_pap, d_pap = orth_err_and_move(mm.paper004_manifold_muon(0.0, "stiefel"))
    eps32 = float(np.finfo(np.float32).eps)
    assert e_def <= 4 * np.sqrt(m) * eps32 and d_def <= 4 * np.sqrt(m) * eps32
    assert 1e-3 < e_pap < 5e-2 and d_pap > 1e-2


# ------------------------------------------------------------------------------------------------
# Faster variants (issue 25, item 2): Gram-space sign, warm-started polish, early stops that fire
# ------------------------------------------------------------------------------------------------


def _tall_case(manifold, m=48, n=16, scale=0.1, batch=3, seed=1):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((batch, m, n)), jnp.float32)
    w = retractions.retract(x, manifold, sign_method="svd")
    return w, jnp.asarray(scale * rng.standard_normal((batch, m, n)), jnp.float32)


def _dual(w, g, manifold, **kw):
    import functools

    return jax.jit(functools.partial(mm.dual_ascent, manifold=manifold, **kw))(w, g)


@pytest.mark.parametrize("manifold", ["stiefel", "dgram"])
def test_gram_inner_sign_matches_plain_dual_ascent(manifold):
    """inner_sign='gram' vs the plain algorithm with the accurate float32 sign, K = 20, in a
    contracting regime (G entries 0.1; at 0.01 the DGram iteration is chaotic and float32
    round-off alone separates runs). Each sign is within ACCURATE_TOL = 1e-4 of the exact one
    and the contracting iteration does not amplify it: A and Λ agree to 2·1e-4."""
    w, g = _tall_case(manifold)
    a0, v0, k0, l0 = _dual(w, g, manifold, sign_method="accurate", stop_rule="absolute")
    a1, v1, k1, l1 = _dual(w, g, manifold, sign_method="accurate", stop_rule="absolute",
                           inner_sign="gram")
    np.testing.assert_allclose(np.asarray(a1), np.asarray(a0), atol=2e-4)
    np.testing.assert_allclose(np.asarray(l1), np.asarray(l0), atol=2e-4)
    np.testing.assert_allclose(np.asarray(v1), np.asarray(v0), rtol=1e-3, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(k1), np.asarray(k0))


def test_gram_warm_inner_sign_is_close_to_plain():
    """The warm start's sign is sign(M)·R with R a rotation first order in the change of M
    between dual steps: its directions are orthonormal to WARM_RESIDUAL (1e-3), the objective
    ⟨G, A⟩ is within 1e-3 of the plain algorithm's (measured 1e-4) and so is the violation."""
    w, g = _tall_case("stiefel")
    a0, v0, _, _ = _dual(w, g, "stiefel", sign_method="accurate", stop_rule="absolute")
    a1, v1, _, _ = _dual(w, g, "stiefel", sign_method="accurate", stop_rule="absolute",
                         inner_sign="gram_warm", polish_steps=2)
    obj0, obj1 = (np.asarray(jnp.sum(a * g, axis=(1, 2))) for a in (a0, a1))
    assert np.all(obj1 >= (1 - 1e-3) * obj0)
    ata = np.asarray(jnp.swapaxes(a1, 1, 2) @ a1, np.float64)
    assert np.abs(ata - np.eye(16)).max() <= 2 * mm.WARM_RESIDUAL
    np.testing.assert_allclose(np.asarray(v1), np.asarray(v0), atol=1e-3)
    with pytest.raises(ValueError, match="polish_steps"):
        mm.manifold_muon(0.1, "stiefel", inner_sign="gram_warm", polish_steps=5)
    with pytest.raises(ValueError, match="inner_sign"):
        mm.manifold_muon(0.1, "stiefel", inner_sign="cholesky")


def test_robust_early_stop_fires_on_square_stiefel_with_the_bf16_sign():
    """Square 64×64 Stiefel, G entries 2e-3 (GPT-2's momentum scale), paper 004's bf16 sign:
    the authors' rule never stops (20 signs each) and some violations end > 0.1; the robust
    rule stops at its round-off floor (1.6e-2 in bf16) and returns a lower violation."""
    w, g = _tall_case("stiefel", m=64, n=64, scale=2e-3, batch=4, seed=2)
    _, v_abs, k_abs, _ = _dual(w, g, "stiefel", sign_method="polar_express",
                               stop_rule="absolute")
    _, v_rob, k_rob, _ = _dual(w, g, "stiefel", sign_method="polar_express")
    assert np.all(np.asarray(k_abs) == 20) and np.asarray(v_abs).max() > 0.1
    assert np.asarray(k_rob).mean() < 10
    assert np.all(np.asarray(v_rob) <= np.asarray(v_abs))


def test_manifold_muon_gram_option_one_step_matches_plain():
    rng = np.random.default_rng(12)
    p = mm.project_to_manifold(
        {"mlp": {"fc": {"kernel": jnp.asarray(rng.standard_normal((16, 48)), jnp.float32)}}},
        "stiefel", sign_method="svd")
    g = jax.tree.map(lambda x: jnp.asarray(0.1 * rng.standard_normal(x.shape), jnp.float32), p)
    outs = []
    for inner in ("matrix_sign", "gram"):
        opt = mm.manifold_muon(0.05, "stiefel", sign_method="accurate", inner_sign=inner)
        p1, st = _step(opt, p, g)
        outs.append((p1["mlp"]["fc"]["kernel"], st.inner_steps["mlp"]["fc"]["kernel"]))
    np.testing.assert_allclose(np.asarray(outs[1][0]), np.asarray(outs[0][0]), atol=2e-5)
    assert int(outs[1][1]) == int(outs[0][1]) >= 1


@pytest.mark.parametrize("kw", [{"sign_method": "svd"},
                                {"sign_method": "polar_express", "stop_rule": "absolute"}])
def test_one_loop_over_all_banks_equals_one_loop_per_bank(kw):
    """dual_ascent_banks runs every bank in one while_loop; each matrix takes the same steps, so
    the update is the per-bank one bit for bit (two shapes: a square bank stops early)."""
    rng = np.random.default_rng(13)
    params = {"attn": {"o": {"kernel": jnp.asarray(rng.standard_normal((16, 16)), jnp.float32)}},
              "mlp": {"fc": {"kernel": jnp.asarray(rng.standard_normal((2, 16, 48)),
                                                   jnp.float32)}}}
    params = mm.project_to_manifold(params, "stiefel", sign_method="svd")
    g = jax.tree.map(lambda x: jnp.asarray(2e-3 * rng.standard_normal(x.shape), jnp.float32),
                     params)
    outs = []
    for one_loop in (False, True):
        opt = mm.manifold_muon(0.05, "stiefel", one_loop=one_loop, **kw)
        p1, st = jax.jit(lambda g, p, opt=opt: _step(opt, p, g))(g, params)
        outs.append((p1, st.inner_steps, st.violation))
    for a, b in zip(jax.tree.leaves(outs[0]), jax.tree.leaves(outs[1])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="as many"):
        mm.dual_ascent_banks([jnp.eye(2)[None]], [], "stiefel")
