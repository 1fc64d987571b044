"""Module-wise assignment: routing by parameter group, paper 004's five assignments against NumPy
transcriptions of its settings (AdamW + Muon schedules), manifold placement at init."""

import doctest
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxspectra.optim import module_wise as mw
from jaxspectra.optim.module_wise import (
    ASSIGNMENTS,
    module_labels,
    module_wise,
    paper004,
    paper004_init,
    paper004_schedules,
)

D = 8


def gpt_params(seed=0, dtype=jnp.float32):
    shapes = {
        "embed": {"embedding": (16, D)},
        "pos_embed": {"embedding": (8, D)},
        "block_0": {
            "ln_1": {"scale": (D,)},
            "attn": {"qkv": {"kernel": (D, 3 * D)}, "o": {"kernel": (D, D)}},
            "ln_2": {"scale": (D,)},
            "mlp": {"fc": {"kernel": (D, 4 * D), "bias": (4 * D,)}, "proj": {"kernel": (4 * D, D)}},
        },
        "ln_f": {"scale": (D,)},
        "head": {"kernel": (D, 16)},
    }
    leaves, treedef = jax.tree.flatten(shapes, is_leaf=lambda x: isinstance(x, tuple))
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return treedef.unflatten(
        [0.3 * jax.random.normal(k, s, dtype) for k, s in zip(keys, leaves)]
    )


def grads_like(params, seed):
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(1000 + seed), len(leaves))
    return treedef.unflatten([jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)])


def _flat(tree):
    return {
        "/".join(str(k.key) for k in p): np.asarray(x)
        for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


ATTN = {"block_0/attn/qkv/kernel", "block_0/attn/o/kernel"}
MLP = {"block_0/mlp/fc/kernel", "block_0/mlp/proj/kernel"}


def test_labels():
    labels = _flat(module_labels(gpt_params()))
    for path, lab in labels.items():
        want = "attention" if path in ATTN else "mlp" if path in MLP else "rest"
        assert lab == want, path
    assert labels["block_0/mlp/fc/bias"] == "rest"


def test_module_wise_routing_and_default_adamw_decay():
    params = gpt_params()
    tx = module_wise(attention=optax.sgd(1.0), mlp=optax.sgd(2.0), rest_learning_rate=0.1)
    zeros = jax.tree.map(jnp.zeros_like, params)
    ones = jax.tree.map(jnp.ones_like, params)
    st = tx.init(params)
    u = _flat(tx.update(ones, st, params)[0])
    assert np.all(u["block_0/attn/o/kernel"] == -1.0)
    assert np.all(u["block_0/mlp/proj/kernel"] == -2.0)
    # Default rest = AdamW(b=(0.9, 0.95), wd 0.1 on >= 2-D only). Zero gradient: only the decay.
    u0 = _flat(tx.update(zeros, st, params)[0])
    p = _flat(params)
    np.testing.assert_allclose(u0["embed/embedding"], -0.1 * 0.1 * p["embed/embedding"], rtol=1e-6)
    np.testing.assert_allclose(u0["head/kernel"], -0.1 * 0.1 * p["head/kernel"], rtol=1e-6)
    assert np.all(u0["ln_f/scale"] == 0) and np.all(u0["block_0/mlp/fc/bias"] == 0)


def test_module_wise_errors():
    with pytest.raises(ValueError, match="rest_learning_rate"):
        module_wise(attention=optax.sgd(1.0))
    tx = module_wise(attention=optax.sgd(1.0), rest=optax.sgd(1.0))
    bad = {"block_0": {"self_attention": {"query": {"kernel": jnp.ones((4, 4))}}}}
    with pytest.raises(ValueError, match=r"no parameter belongs to group\(s\) \['attention'\].*query"):
        tx.init(bad)
    module_wise(attention=optax.sgd(1.0), rest=optax.sgd(1.0), strict=False).init(bad)
    with pytest.raises(ValueError, match="unknown paper-004 assignment 'hetero2'; known"):
        paper004("hetero2", 100)
    with pytest.raises(ValueError, match="no manifold options"):
        paper004("unconstrained_muon", 100, inner_steps=5)


def test_paper004_schedules_closed_form():
    lr_a, lr_m = paper004_schedules(50_000)
    for t in (0, 500, 1000, 10_000, 25_500, 50_000):
        if t < 1000:
            ref = 6e-4 * t / 1000
        else:
            ref = 6e-5 + 0.5 * (6e-4 - 6e-5) * (1 + math.cos(math.pi * (t - 1000) / 49_000))
        assert float(lr_a(t)) == pytest.approx(ref, rel=1e-5, abs=1e-12)
        assert float(lr_m(t)) == pytest.approx(0.02 * ref / 6e-4, rel=1e-5, abs=1e-12)
    assert float(lr_m(1000)) == pytest.approx(0.02)
    assert float(lr_m(50_000)) == pytest.approx(0.002)


# ----------------------------------------------------------------------------- NumPy reference


def _np_sign(x):
    u, _, vt = np.linalg.svd(x, full_matrices=False)
    return u @ vt


def _np_lr(t, total, warm, peak=6e-4, floor=6e-5):
    if t < warm:
        return peak * t / warm
    r = min(1.0, (t - warm) / (total - warm))
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * r))


def _np_paper004_unconstrained(params, grads_seq, total, warm):
    """NumPy float64 transcription: Muon (sum-form Nesterov, sign, W(1 - η wd) - η sign) on the
    attention/MLP kernels at 0.02·lr(t)/6e-4; torch-style AdamW (0.9, 0.95, eps 1e-8, wd 0.1 on
    2-D) elsewhere at lr(t)."""
    p = {k: v.astype(np.float64) for k, v in _flat(params).items()}
    st = {k: np.zeros_like(v) for k, v in p.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v2 = {k: np.zeros_like(v) for k, v in p.items()}
    for t, grads in enumerate(grads_seq):
        lr = _np_lr(t, total, warm)
        g = {k: x.astype(np.float64) for k, x in _flat(grads).items()}
        for k in p:
            if k in ATTN | MLP:
                st[k] = 0.95 * st[k] + g[k]
                G = g[k] + 0.95 * st[k]
                eta = 0.02 * lr / 6e-4
                p[k] = p[k] * (1 - eta * 0.1) - eta * _np_sign(G)
            else:
                m[k] = 0.9 * m[k] + 0.1 * g[k]
                v2[k] = 0.95 * v2[k] + 0.05 * g[k] ** 2
                mh = m[k] / (1 - 0.9 ** (t + 1))
                vh = v2[k] / (1 - 0.95 ** (t + 1))
                wd = 0.1 if p[k].ndim >= 2 else 0.0
                p[k] = p[k] - lr * (mh / (np.sqrt(vh) + 1e-8) + wd * p[k])
    return p


def _run(tx, params, grads_seq):
    st = tx.init(params)
    step = jax.jit(tx.update)
    for g in grads_seq:
        u, st = step(g, st, params)
        params = optax.apply_updates(params, u)
    return params, st


def test_paper004_unconstrained_matches_numpy():
    params = gpt_params()
    total, warm = 20, 2
    grads_seq = [grads_like(params, s) for s in range(4)]
    ref = _np_paper004_unconstrained(params, grads_seq, total, warm)
    tx = paper004("unconstrained_muon", total, warmup_steps=warm, sign_method="svd")
    out, _ = _run(tx, params, grads_seq)
    assert paper004_init("unconstrained_muon", params) is params
    for k, v in _flat(out).items():
        np.testing.assert_allclose(v, ref[k], atol=5e-5, err_msg=k)


def _stiefel_err(w):
    w = np.asarray(w, np.float64)
    if w.shape[0] < w.shape[1]:
        w = w.T
    return np.max(np.abs(w.T @ w - np.eye(w.shape[1])))


def _dgram_err(w):
    w = np.asarray(w, np.float64)
    if w.shape[0] < w.shape[1]:
        w = w.T
    gram = w.T @ w
    return np.max(np.abs(gram - np.diag(np.diag(gram)))) / np.max(np.abs(np.diag(gram)))


@pytest.mark.parametrize("assignment", ["all_stiefel", "all_dgram", "hetero", "hetero_inv"])
def test_paper004_init_places_managed_weights(assignment):
    attn_m, mlp_m = ASSIGNMENTS[assignment]
    raw = _flat(gpt_params())
    p0 = _flat(paper004_init(assignment, gpt_params(), sign_method="svd"))
    err = {"stiefel": _stiefel_err, "dgram": _dgram_err}
    for k in ATTN:
        assert err[attn_m](p0[k]) < 1e-5, k
    for k in MLP:
        assert err[mlp_m](p0[k]) < 1e-5, k
    if "stiefel" in (attn_m, mlp_m) and "dgram" in (attn_m, mlp_m):
        # DGram keeps free column scales: not Stiefel.
        dg = ATTN if attn_m == "dgram" else MLP
        assert all(_stiefel_err(p0[k]) > 0.1 for k in dg)
    for k in p0:  # the rest untouched
        if k not in ATTN | MLP:
            np.testing.assert_array_equal(p0[k], raw[k])


@pytest.mark.parametrize("assignment", ["hetero", "hetero_inv"])
def test_paper004_manifold_steps(assignment):
    attn_m, mlp_m = ASSIGNMENTS[assignment]
    params = paper004_init(assignment, gpt_params(), sign_method="svd")
    p0 = _flat(params)
    err = {"stiefel": _stiefel_err, "dgram": _dgram_err}
    total, warm = 20, 2
    tx = paper004(assignment, total, warmup_steps=warm, sign_method="svd")
    zeros = jax.tree.map(jnp.zeros_like, params)
    grads_seq = [grads_like(params, s) for s in range(3)]
    st = tx.init(params)
    step = jax.jit(tx.update)
    # Zero gradients at step 1 (η > 0): manifold weights do not move (no weight decay on them),
    # AdamW decays the 2-D rest.
    _, st = step(zeros, st, params)
    u, _ = step(zeros, st, params)
    uf = _flat(u)
    for k in ATTN | MLP:
        np.testing.assert_allclose(uf[k], 0.0, atol=1e-6, err_msg=k)
    np.testing.assert_allclose(
        uf["head/kernel"], -_np_lr(1, total, warm) * 0.1 * p0["head/kernel"], rtol=1e-5
    )
    # A few steps: iterates stay on their manifolds.
    st = tx.init(params)
    out = params
    for g in grads_seq:
        u, st = step(g, st, out)
        out = optax.apply_updates(out, u)
    of = _flat(out)
    for k in ATTN:
        assert err[attn_m](of[k]) < 1e-5, k
    for k in MLP:
        assert err[mlp_m](of[k]) < 1e-5, k
    if assignment != "hetero":
        return
    # Routing: the managed leaves follow manifold Muon run on them alone at lr_muon, the head
    # follows AdamW at lr_adamw.
    from jaxspectra.optim import manifold_muon as mm

    lr_a, lr_m = paper004_schedules(total, warmup_steps=warm)
    for manifold, keys in ((attn_m, ATTN), (mlp_m, MLP)):
        sub = {k: jnp.asarray(p0[k]) for k in keys}
        alone = mm.paper004_manifold_muon(lr_m, manifold, sign_method="svd",
                                          retraction_sign_method="svd")
        sub_out, _ = _run(alone, sub, [{k: _flat(g)[k] for k in keys} for g in grads_seq])
        for k in keys:
            np.testing.assert_allclose(of[k], np.asarray(sub_out[k]), atol=1e-5, err_msg=k)
    adam_alone = optax.adamw(lr_a, b1=0.9, b2=0.95, weight_decay=0.1)
    h_out, _ = _run(
        adam_alone,
        {"h": jnp.asarray(p0["head/kernel"])},
        [{"h": _flat(g)["head/kernel"]} for g in grads_seq],
    )
    np.testing.assert_allclose(of["head/kernel"], np.asarray(h_out["h"]), atol=1e-6)


def test_paper004_clip_norm():
    """clip_norm=1.0 equals the unclipped optimiser fed the globally clipped gradients."""
    params = gpt_params()
    clipped = paper004("unconstrained_muon", 20, warmup_steps=2, clip_norm=1.0, sign_method="svd")
    plain = paper004("unconstrained_muon", 20, warmup_steps=2, sign_method="svd")
    seq = [jax.tree.map(lambda x: 50.0 * x, grads_like(params, s)) for s in range(2)]
    norms = [float(optax.tree.norm(g)) for g in seq]
    assert min(norms) > 1.0
    pre = [jax.tree.map(lambda x, n=n: x / n, g) for g, n in zip(seq, norms)]
    a, _ = _run(clipped, params, seq)
    b, _ = _run(plain, params, pre)
    for k, v in _flat(a).items():
        np.testing.assert_allclose(v, _flat(b)[k], atol=1e-6, err_msg=k)


def test_docstring_examples():
    assert doctest.testmod(mw, raise_on_error=True).failed == 0
