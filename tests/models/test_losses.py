"""Chunked LM-head cross-entropy (:mod:`jaxspectra.models.losses`) against independent truths:
the closed-form loss and gradient in NumPy float64, autodiff of the full-logits optax loss, and
the model's own reference path (``loss_chunk=0``) in float32 and bfloat16, tied and untied.

Tolerances (derived, not fitted):

* float32: each logit is a d-term dot product, so its error is ≤ d·ε₃₂·S with
  ``S = max_{t,v} Σ_i |x_ti W_iv|``; log-sum-exp over V terms adds ≤ V·ε₃₂ (relative to 1); the loss
  and each gradient entry move by at most twice the logit error (∂(lse − z_y)/∂z has ℓ1 norm ≤ 2),
  and the backward matmuls add d (or B·T) more terms: ``tol = 4·(d·S + V + B·T)·ε₃₂`` relative to
  the largest entry (loss: absolute, since the loss is O(log V)).
* bfloat16: the reference rounds every logit to bf16 (unit round-off u = 2⁻⁸) before its float32
  softmax, the chunked path keeps float32 logits, so ``|Δloss| ≤ 2u·max|z|``; the softmax gradient
  moves by ≤ 2u·max|z| relative, and the reference also rounds ∂L/∂W to bf16 (u), and both paths
  round the residual-stream gradients to bf16 once per layer (u each, L+1 times):
  ``‖Δg‖/‖g‖ ≤ (4·max|z| + L + 2)·u`` per leaf.
* the model in float32: the float32 rule with ``S ≈ max|z|`` and a factor L+1 for the layers the
  difference crosses on its way back.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxspectra.models import GPTConfig, get_model
from jaxspectra.models.losses import chunked_lm_loss
from jaxspectra.train.step import lm_loss

EPS32 = float(np.finfo(np.float32).eps)
U_BF16 = 2.0**-8


def _data(b=2, t=10, d=8, v=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(b, t, d)).astype(np.float32)
    w = rng.normal(size=(d, v)).astype(np.float32)  # untied head kernel (d, V)
    y = rng.integers(0, v, size=(b, t)).astype(np.int32)
    return x, w, y


def _np_truth(x, w, y):
    """Closed form in float64: L = mean(lse(z) − z_y), ∂L/∂z = (softmax(z) − onehot(y))/N."""
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    z = x64 @ w64
    m = z.max(-1, keepdims=True)
    lse = (m + np.log(np.exp(z - m).sum(-1, keepdims=True)))[..., 0]
    zy = np.take_along_axis(z, y[..., None], -1)[..., 0]
    n = y.size
    dz = np.exp(z - lse[..., None])
    np.put_along_axis(dz, y[..., None], np.take_along_axis(dz, y[..., None], -1) - 1, -1)
    dz /= n
    return (lse - zy).mean(), dz @ w64.T, np.einsum("btd,btv->dv", x64, dz), z


def _f32_tol(x, w):
    s = np.max(np.abs(x.astype(np.float64)) @ np.abs(w.astype(np.float64)))
    b, t, d = x.shape
    return 4 * (d * s + w.shape[1] + b * t) * EPS32


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30)


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("chunk", [1, 3, 5, 10, 64])
def test_matches_float64_closed_form(tied, chunk):
    x, w, y = _data()
    loss_t, dx_t, dw_t, _ = _np_truth(x, w, y)
    wt = w.T.copy() if tied else w
    loss, (dx, dw) = jax.jit(jax.value_and_grad(
        lambda x_, w_: chunked_lm_loss(x_, w_, jnp.asarray(y), chunk, tied=tied), (0, 1)
    ))(jnp.asarray(x), jnp.asarray(wt))
    tol = _f32_tol(x, w)
    assert loss.dtype == jnp.float32
    assert abs(float(loss) - loss_t) <= tol
    assert _rel(dx, dx_t) <= tol
    assert _rel(dw.T if tied else dw, dw_t) <= tol


def test_matches_autodiff_of_full_logits_and_the_check_can_fail():
    """Against jax.grad of optax's full-logits loss (T=10 not divisible by chunk=4: padding),
    and a negative control: wrong targets must violate the same tolerance."""
    x, w, y = map(jnp.asarray, _data())
    ref = lambda x_, w_: optax.softmax_cross_entropy_with_integer_labels(x_ @ w_, y).mean()
    la, ga = jax.jit(jax.value_and_grad(
        lambda a, b: chunked_lm_loss(a, b, y, 4, tied=False), (0, 1)))(x, w)
    lb, gb = jax.jit(jax.value_and_grad(ref, (0, 1)))(x, w)
    tol = _f32_tol(np.asarray(x), np.asarray(w))
    assert abs(float(la - lb)) <= tol
    assert all(_rel(a, b) <= tol for a, b in zip(ga, gb))
    bad = chunked_lm_loss(x, w, (y + 1) % w.shape[1], 4, tied=False)
    assert abs(float(bad - lb)) > tol


def test_two_d_hidden_jit_and_vmap():
    x, w, y = map(jnp.asarray, _data())
    a = chunked_lm_loss(x[0], w, y[0], 3, tied=False)  # [N, d] input, eager
    b = jax.jit(chunked_lm_loss, static_argnums=(3,), static_argnames=("tied",))(
        x[:1], w, y[:1], 3, tied=False
    )
    np.testing.assert_allclose(a, b, rtol=1e-6)
    # a vmapped sweep (members axis) differentiates through the custom VJP
    g = jax.jit(jax.vmap(jax.grad(lambda w_, x_: chunked_lm_loss(x_, w_, y, 3, tied=False)),
                         in_axes=(None, 0)))(w, jnp.stack([x, 2 * x]))
    g1 = jax.jit(jax.grad(lambda w_: chunked_lm_loss(2 * x, w_, y, 3, tied=False)))(w)
    np.testing.assert_allclose(g[1], g1, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("chunk", [0, -3, 2.5, True, None])
def test_bad_chunk_is_a_clear_error(chunk):
    x, w, y = map(jnp.asarray, _data())
    with pytest.raises(ValueError, match="positive int.*loss_chunk=0"):
        chunked_lm_loss(x, w, y, chunk, tied=False)


def test_bad_shapes_and_config_are_clear_errors():
    x, w, y = map(jnp.asarray, _data())
    with pytest.raises(ValueError, match="tied=True expects a \\(V, d\\) embedding"):
        chunked_lm_loss(x, w, y, 4, tied=True)
    with pytest.raises(ValueError, match="targets"):
        chunked_lm_loss(x, w, y[:, :5], 4, tied=False)
    with pytest.raises(TypeError, match="integer"):
        chunked_lm_loss(x, w, y.astype(jnp.float32), 4, tied=False)
    for bad in (-1, 2.0, True):
        with pytest.raises(ValueError, match="loss_chunk must be an int >= 0"):
            get_model("gpt-tiny", loss_chunk=bad)


def _f32_avals(jaxpr):
    """Every float32 array shape in a jaxpr and its sub-jaxprs (scan bodies, custom VJPs)."""
    out = []

    def walk(j):
        j = getattr(j, "jaxpr", j)
        for eqn in j.eqns:
            for v in list(eqn.invars) + list(eqn.outvars):
                aval = getattr(v, "aval", None)
                if getattr(aval, "dtype", None) == jnp.float32:
                    out.append(tuple(aval.shape))
            for p in eqn.params.values():
                for q in p if isinstance(p, tuple | list) else (p,):
                    if hasattr(q, "eqns") or hasattr(getattr(q, "jaxpr", None), "eqns"):
                        walk(q)

    walk(jaxpr)
    return out


def test_no_full_float32_logits_in_the_jaxpr_of_loss_and_grad():
    """The chunked loss+grad holds at most [B, chunk, V] float32; the reference's jaxpr does hold
    a [B, T, V] float32 array (the checker's negative control)."""
    b, t, d, v, c = 2, 16, 8, 64, 4
    x, w, y = map(jnp.asarray, _data(b, t, d, v))
    big = b * t * v
    chunked = jax.make_jaxpr(
        jax.value_and_grad(lambda x_, w_: chunked_lm_loss(x_, w_, y, c, tied=False), (0, 1))
    )(x, w)
    shapes = _f32_avals(chunked)
    assert (b, c, v) in shapes
    assert max(int(np.prod(s)) for s in shapes) < big
    ref = jax.make_jaxpr(jax.value_and_grad(
        lambda x_, w_: optax.softmax_cross_entropy_with_integer_labels(x_ @ w_, y).mean(), (0, 1)
    ))(x, w)
    assert max(int(np.prod(s)) for s in _f32_avals(ref)) >= big


def _model_pair(tied: bool, dtype: str):
    kw = dict(tied=tied, dtype=dtype, init_std=0.3, n_layers=1)
    ref, cfg = get_model("gpt-tiny", **kw)
    chunked, _ = get_model("gpt-tiny", loss_chunk=3, **kw)
    return ref, chunked, cfg


@pytest.mark.slow  # ~5 s each on an idle 2-core CPU (three compiles of a 1-layer GPT)
@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_model_loss_and_grads_match_the_float32_logits_reference(tied, dtype):
    """``lm_loss`` with ``loss_chunk=3`` (T=8: padded) vs ``loss_chunk=0`` on gpt-tiny."""
    ref, chunked, cfg = _model_pair(tied, dtype)
    rng = np.random.default_rng(1)
    tok = jnp.asarray(rng.integers(0, cfg.vocab_size, (2, 8)), jnp.int32)
    tgt = jnp.asarray(rng.integers(0, cfg.vocab_size, (2, 8)), jnp.int32)
    params = ref.init(jax.random.key(0), tok)
    key = jax.random.key(1)

    @jax.jit
    def reference(p):
        la, ga = jax.value_and_grad(lambda q: lm_loss(ref.apply, q, tok, tgt, key))(p)
        # the model's own loss method with loss_chunk=0 is the reference path too
        lc = ref.apply(p, tok, tgt, method="loss")
        return la, ga, lc, jnp.max(jnp.abs(ref.apply(p, tok)))

    la, ga, lc, zmax = reference(params)
    vg = jax.jit(jax.value_and_grad(lambda p, y: lm_loss(chunked.apply, p, tok, y, key,
                                                            loss_chunk=chunked.config.loss_chunk)))
    lb, gb = vg(params, tgt)
    assert la.dtype == lb.dtype == jnp.float32
    zmax = float(zmax)
    if dtype == "float32":
        L1 = cfg.n_layers + 1  # the difference is re-rounded once per layer on the way back
        tol_loss = tol_grad = 4 * (cfg.d_model * zmax + cfg.vocab_size + tok.size) * EPS32 * L1
    else:
        tol_loss = 2 * U_BF16 * zmax + 1e-5
        tol_grad = (4 * zmax + cfg.n_layers + 2) * U_BF16
    assert abs(float(la - lb)) <= tol_loss, (float(la), float(lb), tol_loss)
    assert abs(float(la - lc)) <= tol_loss
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(ga), jax.tree.leaves(gb)):
        a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
        err = np.linalg.norm(a64 - b64) / max(np.linalg.norm(a64), 1e-30)
        assert err <= tol_grad, (jax.tree_util.keystr(path), err, tol_grad)
    # negative control: gradients of the wrong targets must violate the gradient tolerance
    _, g_bad = vg(params, (tgt + 1) % cfg.vocab_size)
    errs = [np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64))
            / max(np.linalg.norm(np.asarray(a, np.float64)), 1e-30)
            for a, b in zip(jax.tree.leaves(ga), jax.tree.leaves(g_bad))]
    assert max(errs) > tol_grad


def test_config_default_is_the_full_logits_path():
    assert GPTConfig.__dataclass_fields__["loss_chunk"].default == 0
    _, cfg = get_model("gpt-tiny")
    assert cfg.loss_chunk == 0


def test_trainer_passes_the_configs_loss_chunk(tmp_path):
    """``model.options.loss_chunk`` reaches the trainer's loss (the engine passes it explicitly)."""
    from jaxspectra.train.config import from_dict
    from jaxspectra.train.engine import Engine
    from jaxspectra.train.setup import setup

    def engine(chunk):
        cfg = from_dict({"run": {"dir": str(tmp_path / f"r{chunk}"), "num_devices": 1},
                         "model": {"name": "gpt-tiny", "options": {"n_layers": 1,
                                                                    "loss_chunk": chunk}},
                         "data": {"source": "synthetic", "batch_size": 2, "seq_len": 8,
                                  "eval_batches": 0},
                         "train": {"steps": 1, "progress": False}})
        return Engine(setup(cfg))

    assert engine(4).loss_fn.keywords["loss_chunk"] == 4
    assert engine(0).loss_fn.keywords["loss_chunk"] == 0
