"""Model presets, :func:`get_model` and parameter counts.

Counts of the presets (``expected_param_count``; tested against the initialised trees):

==================  ===============  ============================================================
preset              parameters       source / note
==================  ===============  ============================================================
nanogpt-5m          5,495,088        paper 003 Table 4 ("5M"; the 5.49M of nanoGPT-style counts
                                     needs ≈50k vocabulary + untied head): vocab 50304. With the
                                     GPT-2 vocabulary 50257: 5,490,576 = 5.49M.
gpt2-small-modded   123,587,328      paper 002 App. D "124M" (tied head; untied would be 162M)
gpt2-medium-modded  353,551,360      paper 002 App. D "355M" (tied head)
gpt2-small          124,373,760      paper 004 / nanoGPT: 123,587,328 = "123.59M" without the
                                     1024×768 position table (nanoGPT's convention)
llama-0.5b          518,375,680      ours (paper 002's LLaMA table was lost): 22×1280, vocab 32100
llama-1b            1,009,321,984    paper 003 Table 4 shapes, vocab 50304 is ours ("1B")
llama-2b            2,067,642,880    ours, vocab 32100
llama-moe           2,614,167,552    paper 003 Table 4 (16 experts × 1360, top-4; "3B total"),
                                     1,009,846,272 active per token; vocab 50304 is ours
vit-tiny            305,034          ours (paper 001 gives only the shapes)
cls-encoder         4,312,066        ours (App. K, 2 outputs, distilbert vocab 30522)
==================  ===============  ============================================================
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from typing import Any

import jax
import jax.numpy as jnp

from jaxspectra.models.config import (
    EncoderConfig,
    GPTConfig,
    OneLayerConfig,
    TransformerConfig,
    ViTConfig,
    replace_config,
)
from jaxspectra.models.encoder import CLSEncoder
from jaxspectra.models.gpt import GPT
from jaxspectra.models.one_layer import OneLayerTransformer
from jaxspectra.models.vit import ViT

_NANOGPT = dict(norm="layernorm", activation="gelu", mlp="mlp", bias=False)
_MODDED = dict(
    norm="rmsnorm", activation="relu2", mlp="mlp", bias=False, position="rope", tied=True,
    vocab_size=50304, max_seq_len=1024,
)
_LLAMA = dict(
    norm="rmsnorm", norm_eps=1e-6, activation="silu", mlp="swiglu", bias=False, position="rope",
    tied=False, max_seq_len=2048,
)

MODEL_PRESETS: dict[str, Any] = {
    # paper 003 Table 4 + footnotes: NanoGPT-5M with μP.
    "nanogpt-5m": GPTConfig(
        n_layers=24, d_model=48, n_heads=6, d_mlp=192, vocab_size=50304, max_seq_len=256,
        position="none", tied=False, init_std=0.02, scale_residual_init=True, mup=True,
        **_NANOGPT,
    ),
    # paper 002 App. D (modded-nanogpt style).
    "gpt2-small-modded": GPTConfig(n_layers=12, d_model=768, n_heads=6, d_mlp=3072, **_MODDED),
    "gpt2-medium-modded": GPTConfig(n_layers=24, d_model=1024, n_heads=16, d_mlp=4096, **_MODDED),
    # paper 004 (nanoGPT GPT-2 small).
    "gpt2-small": GPTConfig(
        n_layers=12, d_model=768, n_heads=12, d_mlp=3072, vocab_size=50304, max_seq_len=1024,
        position="learned", tied=True, fused_qkv=True, scale_residual_init=True, **_NANOGPT,
    ),
    # LLaMA family (paper 002 App. D.2: C4, SentencePiece V = 32,100, T = 2048; shapes ours).
    "llama-0.5b": GPTConfig(
        n_layers=22, d_model=1280, n_heads=20, d_mlp=3456, vocab_size=32100, **_LLAMA
    ),
    "llama-2b": GPTConfig(
        n_layers=24, d_model=2560, n_heads=20, d_mlp=6912, vocab_size=32100, **_LLAMA
    ),
    # paper 003 Table 4: LLaMA-1B and LLaMA-MoE (16 experts, top-4, 1360 per expert).
    "llama-1b": GPTConfig(
        n_layers=16, d_model=2048, n_heads=16, d_mlp=5440, vocab_size=50304, **_LLAMA
    ),
    "llama-moe": GPTConfig(
        n_layers=16, d_model=2048, n_heads=16, d_mlp=1360, vocab_size=50304, n_experts=16,
        top_k=4, **_LLAMA,
    ),
    # tiny presets for tests and smoke runs.
    "gpt-tiny": GPTConfig(
        n_layers=2, d_model=16, n_heads=2, d_mlp=32, vocab_size=64, max_seq_len=32,
        position="learned", tied=True, **_NANOGPT,
    ),
    "llama-tiny": GPTConfig(
        n_layers=2, d_model=16, n_heads=2, d_mlp=24, vocab_size=64,
        **{**_LLAMA, "max_seq_len": 32},
    ),
    "llama-moe-tiny": GPTConfig(
        n_layers=2, d_model=16, n_heads=2, d_mlp=8, vocab_size=64, n_experts=4, top_k=2,
        **{**_LLAMA, "max_seq_len": 32},
    ),
    # paper 001.
    "vit-tiny": ViTConfig(
        n_layers=6, d_model=64, n_heads=4, d_mlp=256, image_size=28, patch_size=4, n_classes=10
    ),
    "cls-encoder": EncoderConfig(
        n_layers=2, d_model=128, n_heads=4, d_mlp=512, vocab_size=30522, max_seq_len=64,
        n_outputs=2,
    ),
    # paper 002 §4.1.
    "one-layer": OneLayerConfig(d=16, n_classes=4, seq_len=8, sigma=0.01),
}

_MODULES = {
    GPTConfig: GPT,
    ViTConfig: ViT,
    EncoderConfig: CLSEncoder,
    OneLayerConfig: OneLayerTransformer,
}


def build_model(config: Any):
    """The Flax module of a config."""
    try:
        return _MODULES[type(config)](config)
    except KeyError:
        raise TypeError(f"no model for config type {type(config).__name__}") from None


def get_model(name: str, **overrides):
    """``(module, config)`` of the preset ``name`` with fields replaced by ``overrides``.

    Unknown preset names and unknown or invalid fields raise a ``ValueError`` before any compute.
    """
    if name not in MODEL_PRESETS:
        close = difflib.get_close_matches(name, MODEL_PRESETS, n=3)
        hint = f" (did you mean {close}?)" if close else ""
        raise ValueError(f"unknown model {name!r}{hint}; presets: {sorted(MODEL_PRESETS)}")
    config = replace_config(MODEL_PRESETS[name], **overrides)
    return build_model(config), config


def example_input(config: Any, batch_size: int = 1, seq_len: int | None = None) -> jax.Array:
    """A zero input of the right shape/dtype for ``module.init`` (or ``jax.eval_shape``)."""
    if isinstance(config, ViTConfig):
        return jnp.zeros((batch_size, config.image_size, config.image_size, config.channels))
    if isinstance(config, OneLayerConfig):
        return jnp.zeros((batch_size, seq_len or config.seq_len, config.d))
    return jnp.zeros((batch_size, seq_len or min(config.max_seq_len, 8)), jnp.int32)


def param_count(params: Any) -> int:
    """Number of scalars in a pytree (arrays or ``jax.ShapeDtypeStruct`` leaves)."""
    return int(sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))


def param_shapes(config: Any) -> Any:
    """The variables tree of ``config``'s model as ``ShapeDtypeStruct`` s (no memory, no FLOPs)."""
    model = build_model(config)
    return jax.eval_shape(model.init, jax.random.key(0), example_input(config))


def _block_count(c: TransformerConfig, active: bool) -> int:
    d, f, b = c.d_model, c.d_mlp, int(c.bias)
    norm = d * (1 + (b if c.norm == "layernorm" else 0))
    attn = 4 * d * d + 4 * d * b
    if c.n_experts:
        e = c.top_k if active else c.n_experts
        per = (3 if c.mlp == "swiglu" else 2) * d * f
        ff = e * per + d * c.n_experts
    elif c.mlp == "swiglu":
        ff = 3 * d * f + (2 * f + d) * b
    else:
        ff = 2 * d * f + (f + d) * b
    return 2 * norm + attn + ff


def expected_param_count(config: Any, active: bool = False) -> int:
    """Parameter count computed analytically from the config (``active``: MoE parameters used
    per token, i.e. ``top_k`` of the experts)."""
    if isinstance(config, OneLayerConfig):
        return 3 * config.d * config.d
    c = config
    d, b = c.d_model, int(c.bias)
    norm = d * (1 + (b if c.norm == "layernorm" else 0))
    blocks = c.n_layers * _block_count(c, active)
    if isinstance(c, GPTConfig):
        n = c.vocab_size * d + blocks + norm
        n += c.max_seq_len * d if c.position == "learned" else 0
        n += 0 if c.tied else d * c.vocab_size
        return n
    if isinstance(c, ViTConfig):
        patch = c.patch_size**2 * c.channels * d + d * b
        return patch + d + (1 + c.n_patches) * d + blocks + norm + d * c.n_classes + c.n_classes * b
    if isinstance(c, EncoderConfig):
        n = c.vocab_size * d + d + (c.max_seq_len + 1) * d + blocks
        n += norm if c.prenorm else 0
        return n + d * c.n_outputs + c.n_outputs * b
    raise TypeError(f"no parameter-count formula for {type(c).__name__}")


def flops_per_token(config: GPTConfig, seq_len: int) -> float:
    """Training FLOPs per token of a GPT config (fwd + bwd = 3 × fwd, PaLM appendix B): ``6·N``
    over the non-embedding matmul parameters (active experts; the head counts, the embedding
    lookups do not) plus ``12·L·T·d`` for attention scores and values (causal masking not
    discounted, as in nanoGPT's MFU)."""
    n = expected_param_count(config, active=True) - config.vocab_size * config.d_model
    if config.position == "learned":
        n -= config.max_seq_len * config.d_model
    if config.tied:
        n += config.vocab_size * config.d_model
    return 6.0 * n + 12.0 * config.n_layers * seq_len * config.d_model


def describe(config: Any) -> dict:
    """The config as a plain dict (for run directories / logs)."""
    return dataclasses.asdict(config)


__all__ = [
    "MODEL_PRESETS",
    "build_model",
    "describe",
    "example_input",
    "expected_param_count",
    "flops_per_token",
    "get_model",
    "param_count",
    "param_shapes",
]
