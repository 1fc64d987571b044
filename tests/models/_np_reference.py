"""Independent dense NumPy (float64) transcription of the transformer forward passes.

Written from the formulas (not from jaxspectra's code): per-head loops, RoPE as a complex rotation
of the pairs (x_j, x_{j+D/2}), exact GELU via erf, explicit top-k routing per token.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erf


def act(name, x):
    if name == "gelu":
        return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))
    if name == "gelu_tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    if name == "relu2":
        return np.maximum(x, 0.0) ** 2
    if name == "relu":
        return np.maximum(x, 0.0)
    if name == "silu":
        return x / (1.0 + np.exp(-x))
    raise ValueError(name)


def norm(cfg, p, x):
    if cfg.norm == "layernorm":
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        y = (x - mu) / np.sqrt(var + cfg.norm_eps) * p["scale"]
        return y + p["bias"] if "bias" in p else y
    return x / np.sqrt((x**2).mean(-1, keepdims=True) + cfg.norm_eps) * p["scale"]


def dense(p, x):
    y = x @ p["kernel"]
    return y + p["bias"] if "bias" in p else y


def rope(x, base):
    """x [T, D]: rotate the pair (x_j, x_{j+D/2}) by angle t·base^(-2j/D)."""
    t, d = x.shape
    h = d // 2
    theta = base ** (-2.0 * np.arange(h) / d)
    z = (x[:, :h] + 1j * x[:, h:]) * np.exp(1j * np.arange(t)[:, None] * theta[None])
    return np.concatenate([z.real, z.imag], axis=1)


def attention(cfg, p, x, causal, use_rope):
    """x [B, T, d] → (y [B, T, d], probs [B, H, T, T])."""
    b, t, d = x.shape
    h = cfg.n_heads
    dh = d // h
    if "qkv" in p:
        qkv = dense(p["qkv"], x)
        q, k, v = qkv[..., :d], qkv[..., d : 2 * d], qkv[..., 2 * d :]
    else:
        q, k, v = dense(p["q"], x), dense(p["k"], x), dense(p["v"], x)
    out = np.zeros((b, t, d))
    probs = np.zeros((b, h, t, t))
    for bi in range(b):
        for hi in range(h):
            sl = slice(hi * dh, (hi + 1) * dh)
            qh, kh, vh = q[bi, :, sl], k[bi, :, sl], v[bi, :, sl]
            if use_rope:
                qh, kh = rope(qh, cfg.rope_base), rope(kh, cfg.rope_base)
            s = qh @ kh.T / math.sqrt(dh)
            for i in range(t):
                row = s[i, : i + 1] if causal else s[i]
                e = np.exp(row - row.max())
                probs[bi, hi, i, : len(row)] = e / e.sum()
            out[bi, :, sl] = probs[bi, hi] @ vh
    return dense(p["o"], out), probs


def mlp(cfg, p, x):
    if "gate" in p:
        return dense(p["down"], act(cfg.activation, dense(p["gate"], x)) * dense(p["up"], x))
    return dense(p["proj"], act(cfg.activation, dense(p["fc"], x)))


def moe(cfg, p, x):
    shape = x.shape
    xs = x.reshape(-1, shape[-1])
    logits = xs @ p["router"]["kernel"]
    out = np.zeros_like(xs)
    for n in range(xs.shape[0]):
        pr = np.exp(logits[n] - logits[n].max())
        pr /= pr.sum()
        top = np.argsort(-pr)[: cfg.top_k]
        w = pr[top] / (pr[top].sum() if cfg.moe_renormalize else 1.0)
        for e, we in zip(top, w):
            if "gate" in p:
                hid = act(cfg.activation, xs[n] @ p["gate"]["kernel"][e]) * (
                    xs[n] @ p["up"]["kernel"][e]
                )
                out[n] += we * (hid @ p["down"]["kernel"][e])
            else:
                hid = act(cfg.activation, xs[n] @ p["fc"]["kernel"][e])
                out[n] += we * (hid @ p["proj"]["kernel"][e])
    return out.reshape(shape)


def block(cfg, p, x, causal, use_rope):
    ff = (lambda z: moe(cfg, p["moe"], z)) if "moe" in p else (lambda z: mlp(cfg, p["mlp"], z))
    if cfg.prenorm:
        a, probs = attention(cfg, p["attn"], norm(cfg, p["ln_1"], x), causal, use_rope)
        x = x + a
        return x + ff(norm(cfg, p["ln_2"], x)), probs
    a, probs = attention(cfg, p["attn"], x, causal, use_rope)
    x = norm(cfg, p["ln_1"], x + a)
    return norm(cfg, p["ln_2"], x + ff(x)), probs


def gpt_forward(cfg, params, tokens):
    """→ (logits [B, T, V], list of probs, list of hidden)."""
    p = params["params"]
    tokens = np.asarray(tokens)
    x = p["embed"]["embedding"][tokens]
    if cfg.position == "learned":
        x = x + p["pos_embed"]["embedding"][: tokens.shape[1]][None]
    hidden, probs = [], []
    for i in range(cfg.n_layers):
        hidden.append(x)
        x, pr = block(cfg, p[f"block_{i}"], x, True, cfg.position == "rope")
        probs.append(pr)
    hidden.append(x)
    x = norm(cfg, p["ln_f"], x)
    w = p["embed"]["embedding"].T if cfg.tied else p["head"]["kernel"]
    return x @ w, probs, hidden


def encoder_forward(cfg, params, tokens):
    p = params["params"]
    tokens = np.asarray(tokens)
    x = p["embed"]["embedding"][tokens]
    cls = np.broadcast_to(p["cls"][None], (x.shape[0], 1, x.shape[2]))
    x = np.concatenate([cls, x], 1) + p["pos_embed"][: tokens.shape[1] + 1][None]
    for i in range(cfg.n_layers):
        x, _ = block(cfg, p[f"block_{i}"], x, False, False)
    c = x[:, 0]
    if cfg.prenorm:
        c = norm(cfg, p["ln_f"], c)
    return dense(p["head"], c)


def vit_forward(cfg, params, images):
    """images [B, S, S] (one channel)."""
    p = params["params"]
    images = np.asarray(images, np.float64)
    b, s = images.shape[0], cfg.image_size
    ps = cfg.patch_size
    patches = []
    for r in range(s // ps):
        for c in range(s // ps):
            patches.append(images[:, r * ps : (r + 1) * ps, c * ps : (c + 1) * ps].reshape(b, -1))
    x = dense(p["patch_embed"], np.stack(patches, 1))
    cls = np.broadcast_to(p["cls"][None], (b, 1, x.shape[2]))
    x = np.concatenate([cls, x], 1) + p["pos_embed"][None]
    for i in range(cfg.n_layers):
        x, _ = block(cfg, p[f"block_{i}"], x, False, False)
    return dense(p["head"], norm(cfg, p["ln_f"], x[:, 0]))
