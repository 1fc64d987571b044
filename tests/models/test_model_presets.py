"""Presets: parameter counts (analytic and against the papers), naming/groups/kernel layouts,
μP init and learning-rate multipliers, the one-layer model of paper 002 §4.1, bad configs."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspectra.groups import path_group, path_to_str
from jaxspectra.models import (
    MODEL_PRESETS,
    GPTConfig,
    OneLayerConfig,
    ViTConfig,
    example_input,
    expected_param_count,
    fixed_w_c,
    flops_per_token,
    get_model,
    lr_multipliers,
    one_layer_loss,
    param_count,
    param_shapes,
)


@pytest.fixture(scope="module")
def shapes():
    """Every preset's variables as ShapeDtypeStructs (jax.eval_shape: no memory, no FLOPs)."""
    return {name: param_shapes(cfg) for name, cfg in MODEL_PRESETS.items()}


def test_every_preset_count_matches_its_analytic_formula(shapes):
    for name, cfg in MODEL_PRESETS.items():
        assert param_count(shapes[name]) == expected_param_count(cfg), name


def test_counts_against_the_papers(shapes):
    n = {k: param_count(v) for k, v in shapes.items()}
    # paper 003 Table 4 "5M": 2·V·d (untied) + L·(12d² + 2d) + d. V = 50257 (GPT-2) gives the
    # 5.49M of nanoGPT's count; our preset pads V to 50304 (5.495M).
    d, L = 48, 24
    assert n["nanogpt-5m"] == 2 * 50304 * d + L * (12 * d * d + 2 * d) + d == 5_495_088
    v50257 = MODEL_PRESETS["nanogpt-5m"].replace(vocab_size=50257)
    assert round(expected_param_count(v50257) / 1e6, 2) == 5.49
    # paper 004 / nanoGPT: 123.59M excluding the 1024×768 position table.
    assert round((n["gpt2-small"] - 1024 * 768) / 1e6, 2) == 123.59
    # paper 002 App. D: GPT-2 small 124M, medium 355M (within 1%).
    assert abs(n["gpt2-small-modded"] / 124e6 - 1) < 0.01
    assert abs(n["gpt2-medium-modded"] / 355e6 - 1) < 0.01
    # paper 003 Table 4: LLaMA-1B; LLaMA-MoE 1B active / 3B total (to the paper's rounding).
    assert round(n["llama-1b"] / 1e9) == 1
    moe = MODEL_PRESETS["llama-moe"]
    assert round(expected_param_count(moe, active=True) / 1e9) == 1 and round(n["llama-moe"] / 1e9) == 3
    # paper 002: 0.5B and 2B (its table was lost; the shapes are ours).
    assert round(n["llama-0.5b"] / 1e9, 1) == 0.5 and round(n["llama-2b"] / 1e9) == 2


def test_tiny_presets_are_small(shapes):
    for name in ("gpt-tiny", "llama-tiny", "llama-moe-tiny"):
        assert 1_000 < param_count(shapes[name]) < 10_000


def test_names_groups_and_kernel_layouts(shapes):
    expect = {
        "nanogpt-5m": {"attn/q": (48, 48), "attn/o": (48, 48), "mlp/fc": (48, 192),
                       "mlp/proj": (192, 48), "head": (48, 50304)},
        "gpt2-small": {"attn/qkv": (768, 2304), "attn/o": (768, 768), "mlp/fc": (768, 3072)},
        "llama-1b": {"mlp/gate": (2048, 5440), "mlp/up": (2048, 5440), "mlp/down": (5440, 2048)},
        "llama-moe": {"moe/gate": (16, 2048, 1360), "moe/down": (16, 1360, 2048),
                      "moe/router": (2048, 16)},
    }
    want_group = {"q": "attention", "qkv": "attention", "o": "attention", "fc": "mlp",
                  "proj": "mlp", "gate": "mlp", "up": "mlp", "down": "mlp", "router": "other",
                  "head": "head"}
    for name, table in expect.items():
        flat = {path_to_str(p): x for p, x in jax.tree_util.tree_leaves_with_path(shapes[name])}
        for mod, shape in table.items():
            key = f"params/block_0/{mod}/kernel" if mod != "head" else "params/head/kernel"
            assert flat[key].shape == shape, (name, key)
            assert path_group(key, len(shape)) == want_group[mod.split("/")[-1]]
    # every leaf lands in a meaningful group: nothing unexpected in "other"
    for name, tree in shapes.items():
        for p, x in jax.tree_util.tree_leaves_with_path(tree):
            g = path_group(p, x.ndim)
            s = path_to_str(p)
            if g == "other":
                assert s.endswith("router/kernel"), (name, s)
            if "/ln_" in s or s.startswith("params/ln_"):
                assert g == "norm"
            if s.split("/")[1] in ("embed", "pos_embed", "patch_embed", "cls") and x.ndim == 2:
                assert g == "embedding", s


def _leaves(params, suffix):
    return [np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(params)
            if path_to_str(p).endswith(suffix)]


def test_mup_init_and_lr_multipliers_nanogpt_5m():
    # the preset at full depth/width (vocabulary shrunk so init is cheap)
    model, cfg = get_model("nanogpt-5m", vocab_size=256)
    params = model.init(jax.random.key(0), example_input(cfg))
    std = lambda suffix: float(np.concatenate([a.ravel() for a in _leaves(params, suffix)]).std())
    assert all(np.all(a == 0) for a in _leaves(params, "attn/q/kernel"))  # W_Q zero-init
    for suffix in ("attn/k/kernel", "attn/v/kernel", "mlp/fc/kernel"):
        assert abs(std(suffix) / 0.08 - 1) < 0.03, suffix  # 0.02 × 4
    for suffix in ("attn/o/kernel", "mlp/proj/kernel"):
        assert abs(std(suffix) / (0.08 / math.sqrt(48)) - 1) < 0.03, suffix  # ÷ √(2·24)
    assert abs(std("embed/embedding") / 0.02 - 1) < 0.03
    assert abs(std("head/kernel") / 0.02 - 1) < 0.03
    m = lr_multipliers(cfg, params)
    flat = {path_to_str(p): v for p, v in jax.tree_util.tree_leaves_with_path(m)}
    for k, v in flat.items():
        if "/block_" in k and not k.split("/")[-2].startswith("ln_"):
            assert v == 16.0, k
        elif "embed/embedding" in k:
            assert v == 4.0, k
        else:
            assert v == 1.0, k
    assert 6e-4 * flat["params/block_3/mlp/fc/kernel"] == pytest.approx(9.6e-3)
    assert 6e-4 * flat["params/embed/embedding"] == pytest.approx(2.4e-3)
    # without μP every multiplier is one, and the init is nanoGPT's
    plain = cfg.replace(mup=False)
    assert set(jax.tree.leaves(lr_multipliers(plain, params))) == {1.0}
    assert plain.block_init_std == 0.02 and plain.residual_init_std == 0.02 / math.sqrt(48)


def test_gpt2_small_residual_init_scaled():
    cfg = MODEL_PRESETS["gpt2-small"]
    assert cfg.residual_init_std == pytest.approx(0.02 / math.sqrt(24)) and not cfg.mup


def test_flops_per_token_gpt2_small():
    # nanoGPT's estimate: 6·N (N without the position table; tied head counted once) + 12·L·T·d
    n = 123_587_328
    assert flops_per_token(MODEL_PRESETS["gpt2-small"], 1024) == 6 * n + 12 * 12 * 1024 * 768


def test_one_layer_transformer_matches_paper_formula():
    model, cfg = get_model("one-layer", d=6, n_classes=3, sigma=0.5)
    x = jax.random.normal(jax.random.key(1), (2, 5, 6))
    params = model.init(jax.random.key(0), x)
    p = params["params"]["attn"]
    assert set(p) == {"q", "k", "v"} and param_count(params) == 3 * 36
    wq, wk, wv = (np.asarray(p[n]["kernel"], np.float64) for n in "qkv")
    wc = np.asarray(fixed_w_c(cfg), np.float64)
    xn = np.asarray(x, np.float64)
    m = (xn @ wq) @ np.swapaxes(xn @ wk, 1, 2) / math.sqrt(6)
    a = np.exp(m - m.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    z = a @ (xn @ wv) @ wc
    got, aux = model.apply(params, x, return_attention=True)
    np.testing.assert_allclose(got, z, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(aux["attention"][0][:, 0], a, rtol=1e-5, atol=1e-7)
    y = jnp.array([[0, 1, 2, 0, 1], [2, 2, 1, 0, 0]])
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    want = -np.mean(np.take_along_axis(logp, np.asarray(y)[..., None], -1))
    assert float(one_layer_loss(got, y)) == pytest.approx(want, rel=1e-5)
    # W_C is fixed by the config (same every call, not a parameter) and N(0, 1/d) by default
    np.testing.assert_array_equal(fixed_w_c(cfg), fixed_w_c(cfg))
    big = OneLayerConfig(d=64, n_classes=64, sigma=0.01)
    assert abs(float(fixed_w_c(big).std()) * 8 - 1) < 0.05
    init = get_model("one-layer", d=64)[0].init(jax.random.key(2), jnp.zeros((1, 4, 64)))
    assert abs(float(init["params"]["attn"]["q"]["kernel"].std()) / 0.01 - 1) < 0.05
    with pytest.raises(ValueError, match=r"X must be \[B, n, d=6\]"):
        model.apply(params, jnp.zeros((2, 5, 7)))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: get_model("gpt-tiny", n_heads=3), "not divisible by n_heads"),
        (lambda: get_model("gpt-2-small"), "unknown model"),
        (lambda: get_model("gpt-tiny", n_head=4), r"no field\(s\) \['n_head'\]"),
        (lambda: get_model("gpt-tiny", norm="batchnorm"), "norm='batchnorm'"),
        (lambda: get_model("gpt-tiny", position="alibi"), "position='alibi'"),
        (lambda: get_model("gpt-tiny", activation="tanh"), "activation='tanh'"),
        (lambda: get_model("gpt-tiny", dtype="bf16"), "dtype='bf16'"),
        (lambda: get_model("gpt-tiny", n_layers=0), "n_layers must be a positive int"),
        (lambda: get_model("gpt-tiny", init_std=float("nan")), "init_std"),
        (lambda: get_model("llama-moe-tiny", top_k=5), r"top_k=5 must be in \[1, n_experts=4\]"),
        (lambda: get_model("llama-tiny", top_k=2), "without experts"),
        (lambda: get_model("llama-tiny", d_model=18, n_heads=6), "RoPE needs an even head dim"),
        (lambda: ViTConfig(n_layers=1, d_model=8, n_heads=2, d_mlp=8, patch_size=5),
         "not divisible by patch_size"),
        (lambda: GPTConfig(n_layers=1, d_model=8, n_heads=2, d_mlp=8, vocab_size=0,
                           max_seq_len=4), "vocab_size"),
        (lambda: get_model("one-layer", sigma=-1.0), "sigma"),
    ],
)
def test_bad_configs_fail_clearly(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_inputs_fail_clearly():
    model, cfg = get_model("gpt-tiny")
    params = jax.eval_shape(model.init, jax.random.key(0), example_input(cfg))
    with pytest.raises(ValueError, match="exceeds max_seq_len=32"):
        jax.eval_shape(model.apply, params, jnp.zeros((1, 33), jnp.int32))
    with pytest.raises(TypeError, match="integer token ids"):
        jax.eval_shape(model.apply, params, jnp.zeros((1, 4), jnp.float32))
    with pytest.raises(ValueError, match=r"\[batch, seq_len\]"):
        jax.eval_shape(model.apply, params, jnp.zeros((4,), jnp.int32))


def test_mup_zero_query_with_fused_qkv_zeroes_only_q():
    model, cfg = get_model("gpt-tiny", mup=True, fused_qkv=True, d_model=32, n_heads=4)
    params = model.init(jax.random.key(0), example_input(cfg))
    q, k, v = np.split(np.asarray(params["params"]["block_0"]["attn"]["qkv"]["kernel"]), 3, -1)
    assert np.all(q == 0) and np.all(k != 0) and np.all(v != 0)
    assert abs(float(np.concatenate([k, v]).std()) / 0.08 - 1) < 0.1
