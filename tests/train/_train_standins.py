"""Tiny model / dataset used by the trainer tests (independent of the presets, so the trainer's
behaviour is pinned on a model whose every detail is visible here)."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class TinyConfig:
    vocab_size: int = 17
    d_model: int = 16
    n_heads: int = 2
    n_layers: int = 1
    max_seq_len: int = 16
    dtype: str = "float32"
    param_dtype: str = "float32"


class TinyLM(nn.Module):
    """embed + learned positions → one causal attention block + MLP → head (groups.py names)."""

    config: TinyConfig

    @nn.compact
    def __call__(self, tokens):
        c = self.config
        dt, pdt = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
        init = nn.initializers.normal(0.2)
        h = nn.Embed(c.vocab_size, c.d_model, embedding_init=init, param_dtype=pdt,
                     name="embed")(tokens)
        pos = self.param("pos_embed", init, (c.max_seq_len, c.d_model), pdt)
        h = (h + pos[: tokens.shape[1]]).astype(dt)
        for i in range(c.n_layers):
            x = nn.LayerNorm(dtype=dt, param_dtype=pdt, name=f"ln1_{i}")(h)
            qkv = nn.Dense(3 * c.d_model, use_bias=False, dtype=dt, param_dtype=pdt,
                           kernel_init=init, name=f"block_{i}_attn_qkv")(x)
            q, k, v = jnp.split(qkv, 3, -1)
            sh = (*x.shape[:2], c.n_heads, c.d_model // c.n_heads)
            a = jax.nn.dot_product_attention(q.reshape(sh), k.reshape(sh), v.reshape(sh),
                                             is_causal=True)
            h = h + nn.Dense(c.d_model, use_bias=False, dtype=dt, param_dtype=pdt,
                             kernel_init=init, name=f"block_{i}_attn_o")(a.reshape(x.shape))
            x = nn.LayerNorm(dtype=dt, param_dtype=pdt, name=f"ln2_{i}")(h)
            x = nn.gelu(nn.Dense(4 * c.d_model, dtype=dt, param_dtype=pdt, kernel_init=init,
                                 name=f"block_{i}_mlp_fc")(x))
            h = h + nn.Dense(c.d_model, dtype=dt, param_dtype=pdt, kernel_init=init,
                             name=f"block_{i}_mlp_proj")(x)
        h = nn.LayerNorm(dtype=dt, param_dtype=pdt, name="ln_f")(h)
        return nn.Dense(c.vocab_size, use_bias=False, dtype=dt, param_dtype=pdt,
                        kernel_init=init, name="head")(h)


def tiny_model(**kw):
    cfg = TinyConfig(**kw)
    return TinyLM(cfg), cfg


class ToyLM:
    """Deterministic (seed, step) → batch of a noisy affine sequence x_{i+1} = 3x_i + 1 mod V."""

    def __init__(self, vocab_size: int = 17, noise: float = 0.1, offset: int = 0):
        self.vocab_size = vocab_size
        self.noise = noise
        self.offset = offset

    def batch(self, seed, step, batch_size, seq_len):
        rng = np.random.default_rng([seed, step + self.offset])
        x = np.empty((batch_size, seq_len + 1), np.int64)
        x[:, 0] = rng.integers(0, self.vocab_size, batch_size)
        for i in range(seq_len):
            nxt = (3 * x[:, i] + 1) % self.vocab_size
            flip = rng.random(batch_size) < self.noise
            x[:, i + 1] = np.where(flip, rng.integers(0, self.vocab_size, batch_size), nxt)
        return x[:, :-1].astype(np.int32), x[:, 1:].astype(np.int32)


class PoisonLM(ToyLM):
    """ToyLM whose batches from step ``bad_from`` on hold an out-of-vocabulary token: the
    embedding gather fills NaN there, so the loss turns non-finite at exactly that step."""

    def __init__(self, bad_from: int, **kw):
        super().__init__(**kw)
        self.bad_from = bad_from

    def batch(self, seed, step, batch_size, seq_len):
        x, y = super().batch(seed, step, batch_size, seq_len)
        if step >= self.bad_from:
            x = x.copy()
            x[:, 0] = 10 * self.vocab_size
        return x, y


def base_config(run_dir, steps=20, **sections):
    """A tiny real-preset config (``gpt-tiny`` shrunk) as nested dicts, sections merged in."""
    d = {
        "run": {"dir": str(run_dir), "seed": 0},
        "model": {"name": "gpt-tiny", "options": {"n_layers": 1, "vocab_size": 17,
                                                  "max_seq_len": 8}},
        "data": {"source": "synthetic", "batch_size": 8, "seq_len": 8, "eval_batches": 1},
        "optim": {"name": "adamw", "learning_rate": 1e-2, "schedule": "cosine",
                  "warmup_steps": 2},
        "train": {"steps": steps, "progress": False},
        "checkpoint": {"every": 0, "keep": 0},
    }
    for k, v in sections.items():
        d[k] = {**d.get(k, {}), **v}
    return d
