"""GPT / LLaMA / MoE / encoder / ViT forward passes against the float64 NumPy transcription in
``_np_reference.py`` on random weights; causal masking; the explicit-attention path; the
``embed``/``block``/``unembed`` methods."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspectra.models import GPTConfig, example_input, get_model

from . import _np_reference as ref

TOL = dict(rtol=2e-4, atol=2e-4)


def random_params(model, cfg, seed=0, x=None):
    """Initialise, then overwrite every leaf with seeded random values (float32)."""
    x = example_input(cfg, batch_size=1) if x is None else x
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    rng = np.random.default_rng(seed)

    def draw(path, s):
        name = str(path[-1].key)
        if name == "scale":
            v = 1.0 + 0.1 * rng.standard_normal(s.shape)
        elif len(s.shape) >= 2 and name != "embedding" and "cls" not in name:
            v = rng.standard_normal(s.shape) / np.sqrt(s.shape[-2])
        else:
            v = 0.5 * rng.standard_normal(s.shape)
        return np.asarray(v, np.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def f64(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def tiny_gpt(**kw):
    base = dict(
        n_layers=2, d_model=16, n_heads=2, d_mlp=24, vocab_size=37, max_seq_len=12,
    )
    return GPTConfig(**{**base, **kw})


# (norm, position, activation, mlp, bias, tied, fused_qkv, prenorm): every option appears.
COMBOS = {
    "nanogpt": dict(norm="layernorm", position="learned", activation="gelu", mlp="mlp",
                    bias=False, tied=True, fused_qkv=True),
    "ln-bias-untied-separate": dict(norm="layernorm", position="learned", activation="gelu_tanh",
                                    mlp="mlp", bias=True, tied=False, fused_qkv=False),
    "modded": dict(norm="rmsnorm", position="rope", activation="relu2", mlp="mlp", bias=False,
                   tied=True, fused_qkv=False),
    "llama": dict(norm="rmsnorm", position="rope", activation="silu", mlp="swiglu", bias=False,
                  tied=False, fused_qkv=False),
    "nopos-swiglu-bias-fused": dict(norm="layernorm", position="none", activation="gelu",
                                    mlp="swiglu", bias=True, tied=False, fused_qkv=True),
    "postnorm-relu": dict(norm="rmsnorm", position="rope", activation="relu", mlp="mlp",
                          bias=True, tied=True, fused_qkv=True, prenorm=False),
}


@pytest.mark.parametrize("combo", sorted(COMBOS))
def test_gpt_forward_matches_numpy(combo):
    from jaxspectra.models import GPT

    cfg = tiny_gpt(**COMBOS[combo])
    model = GPT(cfg)
    params = random_params(model, cfg, seed=sorted(COMBOS).index(combo))
    tokens = np.random.default_rng(1).integers(0, cfg.vocab_size, (2, 9))
    logits, aux = model.apply(params, jnp.asarray(tokens), return_attention=True,
                              return_hidden=True)
    want, probs, hidden = ref.gpt_forward(cfg, f64(params), tokens)
    assert logits.shape == (2, 9, cfg.vocab_size) and logits.dtype == jnp.float32
    np.testing.assert_allclose(logits, want, **TOL)
    for got, w in zip(aux["attention"], probs):
        np.testing.assert_allclose(got, w, **TOL)
    assert len(aux["hidden"]) == cfg.n_layers + 1
    for got, w in zip(aux["hidden"], hidden):
        np.testing.assert_allclose(got, w, **TOL)
    # The default (jax.nn.dot_product_attention) path gives the same logits.
    np.testing.assert_allclose(model.apply(params, jnp.asarray(tokens)), want, **TOL)


def test_tied_head_has_no_head_leaf_and_untied_does():
    for tied in (True, False):
        model, cfg = get_model("gpt-tiny", tied=tied)
        p = jax.eval_shape(model.init, jax.random.key(0), example_input(cfg))["params"]
        assert ("head" in p) is (not tied)


@pytest.mark.parametrize("name", ["gpt-tiny", "llama-tiny"])
def test_causal_masking_is_exact(name):
    model, cfg = get_model(name)
    params = random_params(model, cfg, seed=3)
    rng = np.random.default_rng(2)
    a = rng.integers(0, cfg.vocab_size, (2, 10))
    b = a.copy()
    t0 = 6
    b[:, t0:] = rng.integers(0, cfg.vocab_size, (2, 10 - t0))
    assert (a[:, t0:] != b[:, t0:]).any()
    for kw in ({}, {"return_attention": True}):
        la, lb = (model.apply(params, jnp.asarray(t), **kw) for t in (a, b))
        la, lb = (z[0] if kw else z for z in (la, lb))
        np.testing.assert_array_equal(la[:, :t0], lb[:, :t0])
        assert not np.allclose(la[:, t0:], lb[:, t0:])


def test_attention_probabilities_are_causal_distributions():
    model, cfg = get_model("llama-tiny")
    params = random_params(model, cfg, seed=4)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, cfg.vocab_size, (3, 7)))
    fused = model.apply(params, tokens)
    logits, aux = model.apply(params, tokens, return_attention=True)
    np.testing.assert_allclose(logits, fused, rtol=1e-5, atol=1e-5)
    for p in aux["attention"]:
        assert p.shape == (3, cfg.n_heads, 7, 7)
        np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-6)
        assert np.all(np.triu(np.asarray(p), k=1) == 0)


def test_embed_block_unembed_methods_compose_to_call():
    model, cfg = get_model("llama-tiny")
    params = random_params(model, cfg, seed=5)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 5)))
    logits, aux = model.apply(params, tokens, return_hidden=True)
    h = model.apply(params, tokens, method="embed")
    np.testing.assert_allclose(h, aux["hidden"][0], rtol=1e-6)
    for i in range(cfg.n_layers):
        h = model.apply(params, h, i, method="block")
        np.testing.assert_allclose(h, aux["hidden"][i + 1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.apply(params, h, method="unembed"), logits, rtol=1e-5,
                               atol=1e-6)
    with pytest.raises(ValueError, match="layer"):
        model.apply(params, h, cfg.n_layers, method="block")


@pytest.mark.parametrize("impl", ["ragged", "dense"])
def test_moe_top_k_routing_matches_numpy(impl):
    model, cfg = get_model("llama-moe-tiny", moe_impl=impl)
    params = random_params(model, cfg, seed=6)
    tokens = np.random.default_rng(3).integers(0, cfg.vocab_size, (2, 6))
    want, _, _ = ref.gpt_forward(cfg, f64(params), tokens)
    np.testing.assert_allclose(model.apply(params, jnp.asarray(tokens)), want, **TOL)


def test_moe_ragged_and_dense_gradients_agree():
    grads = []
    for impl in ("ragged", "dense"):
        model, cfg = get_model("llama-moe-tiny", moe_impl=impl, top_k=3)
        params = random_params(model, cfg, seed=7)
        tokens = jnp.asarray(np.random.default_rng(4).integers(0, cfg.vocab_size, (2, 5)))
        loss = lambda p, m=model, t=tokens: jnp.mean(m.apply(p, t) ** 2)
        grads.append(jax.jit(jax.grad(loss))(params))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), *grads)
    g = grads[0]["params"]["block_0"]["moe"]
    assert g["gate"]["kernel"].shape == (4, 16, 8) and np.abs(g["router"]["kernel"]).sum() > 0


def test_bf16_compute_keeps_fp32_params_and_logits():
    model, cfg = get_model("llama-tiny")
    params = random_params(model, cfg, seed=8)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 6)))
    ref32 = model.apply(params, tokens)
    m16, _ = get_model("llama-tiny", dtype="bfloat16")
    init16 = jax.eval_shape(m16.init, jax.random.key(0), tokens)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(init16))
    out = m16.apply(params, tokens)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, ref32, atol=0.1 * float(jnp.abs(ref32).max()))


def test_cls_encoder_matches_numpy():
    model, cfg = get_model("cls-encoder", vocab_size=50, d_model=16, d_mlp=64, n_outputs=3)
    params = random_params(model, cfg, seed=9)
    tokens = np.random.default_rng(5).integers(0, cfg.vocab_size, (2, 11))
    got, aux = model.apply(params, jnp.asarray(tokens), return_attention=True)
    assert got.shape == (2, 3)
    np.testing.assert_allclose(got, ref.encoder_forward(cfg, f64(params), tokens), **TOL)
    p = aux["attention"][0]
    assert p.shape == (2, 4, 12, 12) and np.all(np.asarray(p)[:, :, 0, 1:] > 0)  # no mask


def test_vit_matches_numpy_and_accepts_both_layouts():
    model, cfg = get_model("vit-tiny", n_layers=2)
    params = random_params(model, cfg, seed=10)
    x = np.random.default_rng(6).random((2, 28, 28)).astype(np.float32)
    got, aux = model.apply(params, jnp.asarray(x), return_attention=True)
    assert got.shape == (2, 10)
    np.testing.assert_allclose(got, ref.vit_forward(cfg, f64(params), x), **TOL)
    np.testing.assert_allclose(model.apply(params, jnp.asarray(x[..., None])), got, rtol=1e-6)
    assert aux["attention"][0].shape == (2, 4, 50, 50)
    with pytest.raises(ValueError, match="images must be"):
        model.apply(params, jnp.zeros((2, 32, 32)))


def test_remat_changes_neither_names_nor_values():
    model, cfg = get_model("gpt-tiny")
    params = random_params(model, cfg, seed=11)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 6)))
    rmodel, _ = get_model("gpt-tiny", remat=True)
    assert jax.tree.structure(jax.eval_shape(rmodel.init, jax.random.key(0), tokens)) == (
        jax.tree.structure(params)
    )
    loss = lambda m: jax.jit(jax.value_and_grad(lambda p: jnp.mean(m.apply(p, tokens) ** 2)))(
        params
    )
    (a, ga), (b, gb) = loss(model), loss(rmodel)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7), ga, gb)
    _, aux = rmodel.apply(params, tokens, return_attention=True)
    assert aux["attention"][0].shape == (2, 2, 6, 6)


def test_moe_sows_load_balance_loss():
    model, cfg = get_model("llama-moe-tiny")
    params = random_params(model, cfg, seed=12)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 5)))
    logits, state = model.apply(params, tokens, mutable=["intermediates"])
    np.testing.assert_allclose(logits, model.apply(params, tokens), rtol=1e-6)
    (lb,) = state["intermediates"]["block_1"]["moe"]["load_balance_loss"]
    # NumPy: E · Σ_e (share of top-k assignments to e) · (mean router probability of e)
    h = np.asarray(model.apply(params, tokens, return_hidden=True)[1]["hidden"][1], np.float64)
    p = f64(params)["params"]["block_1"]
    x = ref.norm(cfg, p["ln_1"], h)
    a, _ = ref.attention(cfg, p["attn"], x, True, True)
    z = ref.norm(cfg, p["ln_2"], h + a).reshape(-1, cfg.d_model) @ p["moe"]["router"]["kernel"]
    pr = np.exp(z - z.max(-1, keepdims=True))
    pr /= pr.sum(-1, keepdims=True)
    top = np.argsort(-pr, -1)[:, : cfg.top_k]
    frac = np.bincount(top.ravel(), minlength=cfg.n_experts) / top.size
    np.testing.assert_allclose(lb, cfg.n_experts * np.sum(frac * pr.mean(0)), rtol=1e-4)
