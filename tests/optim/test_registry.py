"""The optimiser registry: classic optimisers against NumPy transcriptions of torch.optim's
algorithms, routing of the module-wise ones, bad input, and every registered optimiser under jit,
pmap (8 simulated CPU devices) and NamedSharding-sharded params (same result as one device)."""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxspectra.optim import registry
from jaxspectra.optim.classic import adamw_2d
from jaxspectra.optim.muon import optax_muon, paper_muon
from jaxspectra.optim.registry import OPTIMIZERS, build_optimizer, prepare_params

D = 8
SHAPES = {
    "embed": {"embedding": (16, D)},
    "block_0": {
        "ln_1": {"scale": (D,)},
        "attn": {"qkv": {"kernel": (D, 3 * D)}, "o": {"kernel": (D, D)}},
        "mlp": {"fc": {"kernel": (D, 2 * D), "bias": (2 * D,)}, "proj": {"kernel": (2 * D, D)}},
    },
    "ln_f": {"scale": (D,)},
    "head": {"kernel": (D, 16)},
}
MODULE = {"block_0/attn/qkv/kernel", "block_0/attn/o/kernel", "block_0/mlp/fc/kernel",
          "block_0/mlp/proj/kernel"}


def make_tree(seed, scale=0.3):
    leaves, treedef = jax.tree.flatten(SHAPES, is_leaf=lambda x: isinstance(x, tuple))
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return treedef.unflatten([scale * jax.random.normal(k, s) for k, s in zip(keys, leaves)])


def _flat(tree):
    return {
        "/".join(str(k.key) for k in p): np.asarray(x)
        for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def _steps(tx, params, grads_seq):
    st = tx.init(params)
    step = jax.jit(tx.update)
    for g in grads_seq:
        u, st = step(g, st, params)
        params = optax.apply_updates(params, u)
    return params


# ----------------------------------------------------------------------------- classic


def _np_torch_adam(w, grads, lr, b1, b2, eps, wd):
    """torch.optim.Adam (amsgrad=False, maximize=False) transcribed in float64."""
    w = w.astype(np.float64).copy()
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        g = g.astype(np.float64) + wd * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        denom = np.sqrt(v) / np.sqrt(1 - b2**t) + eps
        w = w - (lr / (1 - b1**t)) * m / denom
    return w


def _np_torch_sgd(w, grads, lr, mu, wd, nesterov):
    """torch.optim.SGD (dampening 0) transcribed in float64."""
    w = w.astype(np.float64).copy()
    buf = None
    for g in grads:
        g = g.astype(np.float64) + wd * w
        buf = g.copy() if buf is None else mu * buf + g
        d = g + mu * buf if nesterov else buf
        w = w - lr * d
    return w


def test_adam_l2_matches_torch_transcription():
    w0 = np.asarray(make_tree(0)["head"]["kernel"])
    grads = [np.asarray(jax.random.normal(jax.random.PRNGKey(i), w0.shape)) for i in range(5)]
    ref = _np_torch_adam(w0, grads, 1e-2, 0.9, 0.999, 1e-8, 1e-1)
    tx = build_optimizer("adam_l2", 1e-2, weight_decay=1e-1)
    out = _steps(tx, {"w": jnp.asarray(w0)}, [{"w": jnp.asarray(g)} for g in grads])
    np.testing.assert_allclose(np.asarray(out["w"]), ref, atol=1e-5)
    # Coupled L2 differs from AdamW's decoupled decay.
    aw = _steps(optax.adamw(1e-2, weight_decay=1e-1), {"w": jnp.asarray(w0)},
                [{"w": jnp.asarray(g)} for g in grads])
    assert np.max(np.abs(np.asarray(aw["w"]) - ref)) > 1e-4


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_matches_torch_transcription(nesterov):
    w0 = np.asarray(make_tree(0)["head"]["kernel"])
    grads = [np.asarray(jax.random.normal(jax.random.PRNGKey(i), w0.shape)) for i in range(4)]
    ref = _np_torch_sgd(w0, grads, 0.05, 0.9, 1e-2, nesterov)
    tx = build_optimizer("sgd", 0.05, weight_decay=1e-2, nesterov=nesterov)
    out = _steps(tx, {"w": jnp.asarray(w0)}, [{"w": jnp.asarray(g)} for g in grads])
    np.testing.assert_allclose(np.asarray(out["w"]), ref, atol=1e-5)


def test_adamw_decays_2d_only_by_default():
    params = make_tree(0)
    zeros = jax.tree.map(jnp.zeros_like, params)
    for decay_1d in (False, True):
        tx = build_optimizer("adamw", 0.1, weight_decay=0.5, decay_1d=decay_1d)
        u = _flat(tx.update(zeros, tx.init(params), params)[0])
        p = _flat(params)
        np.testing.assert_allclose(u["head/kernel"], -0.05 * p["head/kernel"], rtol=1e-6)
        want_1d = -0.05 * p["ln_f/scale"] if decay_1d else 0.0 * p["ln_f/scale"]
        np.testing.assert_allclose(u["ln_f/scale"], want_1d, rtol=1e-6)


@pytest.mark.parametrize("name", ["sgd", "adam_l2", "adamw", "paper_muon"])
def test_hyperparameters_can_be_traced(name):
    """The trainer vmaps sweeps over weight decay (and momentum): validation must not touch
    traced values, and each vmapped member equals the run built with that Python number."""
    params = make_tree(0)
    g = make_tree(1, 1.0)
    wds = jnp.asarray([0.0, 0.05, 0.2])
    extra = {"sign_method": "svd"} if name == "paper_muon" else {}

    def upd(wd):
        tx = build_optimizer(name, 0.1, weight_decay=wd, **extra)
        return tx.update(g, tx.init(params), params)[0]

    out = jax.jit(jax.vmap(upd))(wds)
    for i, wd in enumerate([0.0, 0.05, 0.2]):
        want = _flat(upd(wd))
        for k, v in _flat(jax.tree.map(lambda x, i=i: x[i], out)).items():
            np.testing.assert_allclose(v, want[k], atol=1e-6, err_msg=k)


# ----------------------------------------------------------------------------- module-wise


def _split(tree):
    f = _flat(tree)
    return ({k: jnp.asarray(v) for k, v in f.items() if k in MODULE},
            {k: jnp.asarray(v) for k, v in f.items() if k not in MODULE})


@pytest.mark.parametrize("name", ["muon", "paper_muon"])
def test_muon_family_routing(name):
    """Projections get (optax / paper) Muon, everything else AdamW, as if run separately."""
    params = make_tree(0)
    grads_seq = [make_tree(10 + i, 1.0) for i in range(2)]
    opts = {"sign_method": "svd"} if name == "paper_muon" else {}
    out = _flat(_steps(build_optimizer(name, 0.02, adam_learning_rate=1e-3, **opts), params,
                       grads_seq))
    mod0, rest0 = _split(params)
    mod_g = [_split(g)[0] for g in grads_seq]
    rest_g = [_split(g)[1] for g in grads_seq]
    if name == "muon":
        muon_tx = optax_muon(0.02)
        rest_tx = adamw_2d(1e-3, b2=0.999, weight_decay=0.0)
    else:
        muon_tx = paper_muon(0.02, sign_method="svd")
        rest_tx = adamw_2d(1e-3)
    mod_out = _steps(muon_tx, mod0, mod_g)
    rest_out = _steps(rest_tx, rest0, rest_g)
    for k, v in {**mod_out, **rest_out}.items():
        np.testing.assert_allclose(out[k], np.asarray(v), atol=1e-6, err_msg=k)


@pytest.mark.parametrize("name", ["muon", "hetero"])
def test_abstract_params(name):
    """The trainer validates on ShapeDtypeStructs (no compute): checks and init must accept them."""
    abstract = jax.eval_shape(lambda: make_tree(0))
    total = 2000 if name == "hetero" else None
    lr = None if name == "hetero" else 0.01
    tx = build_optimizer(name, lr, params=abstract, total_steps=total)
    st = jax.eval_shape(tx.init, abstract)
    assert len(jax.tree.leaves(st)) > 0


def test_prepare_params():
    params = make_tree(0)
    for name in ("adamw", "sgd", "muon", "paper_muon", "unconstrained_muon"):
        assert prepare_params(name, params) is params
    on = _flat(prepare_params("all_stiefel", params, sign_method="svd"))
    w = on["block_0/mlp/proj/kernel"]
    np.testing.assert_allclose(w.T @ w, np.eye(D), atol=1e-5)
    w = on["block_0/attn/qkv/kernel"]  # wide: orthonormal rows
    np.testing.assert_allclose(w @ w.T, np.eye(D), atol=1e-5)
    np.testing.assert_array_equal(on["head/kernel"], _flat(params)["head/kernel"])


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: build_optimizer("adamm", 0.1), r"unknown optimizer 'adamm'; known: \['adamw'"),
        (lambda: build_optimizer("adamw", 0.1, beta1=0.9), r"unknown option\(s\) \['beta1'\]; known"),
        (lambda: build_optimizer("sgd", None), "needs a learning_rate"),
        (lambda: build_optimizer("hetero", None), "needs total_steps"),
        (lambda: build_optimizer("hetero", None, total_steps=100), r"warmup_steps \(1000"),
        (lambda: build_optimizer("hetero", optax.constant_schedule(1e-3), total_steps=10),
         "AdamW peak"),
        (lambda: build_optimizer("hetero", None, total_steps=10, inner_step=3),
         r"unknown option\(s\) \['inner_step'\]"),
        (lambda: build_optimizer("unconstrained_muon", None, total_steps=10, inner_steps=3),
         r"unknown option\(s\) \['inner_steps'\]"),
        (lambda: build_optimizer("paper_muon", 0.1, ns_steps=3), r"unknown option"),
        (lambda: build_optimizer("muon", 0.1, params={"w": jnp.ones((3, 3))}),
         r"no parameter belongs to group\(s\) \['attention', 'mlp'\]"),
        (lambda: build_optimizer("adamw", 0.1, msign=100), "msign must be a dict"),
        (lambda: prepare_params("nope", {}), "unknown optimizer 'nope'"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_msign_is_chained_last():
    msign_mod = pytest.importorskip("jaxspectra.optim.msign")
    del msign_mod
    params = make_tree(0)
    g = make_tree(1, 1.0)
    tx = build_optimizer("adamw", 0.1, msign={"period": 1, "targets": "attention", "method": "svd"})
    with pytest.raises(ValueError, match="unknown msign option"):
        build_optimizer("adamw", 0.1, msign={"periood": 1})
    with pytest.raises(ValueError, match="matches no parameter"):
        build_optimizer("adamw", 0.1, params={"ln": {"scale": jnp.ones(3)}, "x": jnp.ones((2, 2))},
                        msign={"targets": "attention"})
    u, _ = jax.jit(tx.update)(g, tx.init(params), params)
    base = build_optimizer("adamw", 0.1)
    u0, _ = jax.jit(base.update)(g, base.init(params), params)
    new, new0 = _flat(optax.apply_updates(params, u)), _flat(optax.apply_updates(params, u0))
    for k, w in new.items():
        if "attn" in k:  # restored: ‖W+u‖_F · sign(W+u)/‖sign(W+u)‖_F of the base update,
            # a fused qkv per Q, K, V part (msign's default split_qkv=True)
            x = new0[k].astype(np.float64)
            parts = np.split(x, 3, axis=-1) if "qkv" in k else [x]
            want = []
            for xp in parts:
                uu, _, vt = np.linalg.svd(xp, full_matrices=False)
                s = uu @ vt
                want.append(np.linalg.norm(xp) * s / np.linalg.norm(s))
            np.testing.assert_allclose(w, np.concatenate(want, axis=-1), atol=2e-5, err_msg=k)
        else:
            np.testing.assert_allclose(w, new0[k], atol=1e-7, err_msg=k)


# ----------------------------------------------------------------------------- jit / pmap / sharding


def _options(name):
    if name in ("paper_muon",) or name in registry.PAPER004:
        return {"sign_method": "svd"}  # exact and deterministic across layouts
    return {}


def _builder(name):
    total = 20 if name in registry.PAPER004 else None
    lr = None if name in registry.PAPER004 else 0.01
    opts = _options(name)
    if name in registry.PAPER004:
        opts["warmup_steps"] = 2
    return build_optimizer(name, lr, total_steps=total, **opts)


def _two_steps(tx):
    def run(params, g1, g2):
        st = tx.init(params)
        u, st = tx.update(g1, st, params)
        params = optax.apply_updates(params, u)
        u, st = tx.update(g2, st, params)
        return optax.apply_updates(params, u)

    return run


# all_stiefel, all_dgram and hetero_inv compose the same transformations as hetero (Stiefel and
# DGram manifold Muon + AdamW) under other labels; compiling each costs ~20 s on 2 CPU cores.
PARALLEL = [n for n in OPTIMIZERS if n not in ("all_stiefel", "all_dgram", "hetero_inv")]


@pytest.mark.parametrize("name", PARALLEL)
def test_jit_pmap_sharded_agree(name):
    n = 8
    assert jax.device_count() >= n
    tx = _builder(name)
    run = _two_steps(tx)
    ps = [prepare_params(name, make_tree(i), **_options(name)) for i in range(n)]
    g1 = [make_tree(100 + i, 1.0) for i in range(n)]
    g2 = [make_tree(200 + i, 1.0) for i in range(n)]
    stack = lambda trees: jax.tree.map(lambda *x: jnp.stack(x), *trees)
    jitted = jax.jit(run)
    ref = [jitted(ps[i], g1[i], g2[i]) for i in range(n)]
    for r in ref:
        assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(r))
    # pmap over 8 devices, a different problem per device.
    out = jax.pmap(run)(stack(ps), stack(g1), stack(g2))
    for i in range(n):
        for k, v in _flat(jax.tree.map(lambda x, i=i: x[i], out)).items():
            np.testing.assert_allclose(v, _flat(ref[i])[k], atol=1e-5, err_msg=f"pmap {k}")
    # NamedSharding: every leaf split over 8 devices along its first axis.
    mesh = Mesh(np.array(jax.devices()[:n]), ("x",))
    shard = lambda t: jax.tree.map(
        lambda x: jax.device_put(x, NamedSharding(mesh, P("x"))), t
    )
    sharded = jitted(shard(ps[0]), shard(g1[0]), shard(g2[0]))
    assert len(jax.tree.leaves(sharded)[0].sharding.device_set) == n
    for k, v in _flat(sharded).items():
        np.testing.assert_allclose(v, _flat(ref[0])[k], atol=1e-5, err_msg=f"sharded {k}")


def test_docstring_examples():
    assert doctest.testmod(registry, raise_on_error=True).failed == 0
