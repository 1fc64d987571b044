"""Attention monitor: peakedness, entropy, logits and the softmax Jacobian's conditioning.

Per attention row with logits s over its valid keys (causal mask) and probabilities
a = softmax(s) (papers 001 and 004):

================  ==========================================================================
``log10_R``       log10 of R = max a / min a = exp(max s − min s) (paper 001 App. K), from the
                  logits, so it does not underflow (R reaches 10²⁵ in paper 001 §4)
``entropy``       −Σ a log a (nats)
``max_logit``     max s (the scaled score q·k/√d_h)
``logit_gap``     top-1 − top-2 logit (NaN for a single key)
``jac_fro``       ‖J‖_F of J = diag(a) − aaᵀ (paper 004 §4.2's saturation measure):
                  ‖J‖_F² = Σa² − 2Σa³ + (Σa²)²
``log10_kappa``   the exact condition number of J on 1⊥ (J1 = 0; J is PSD): λ_max/λ_min of the
                  other n−1 eigenvalues, from the extreme roots of the secular equation
                  f(λ) = 1 − Σ aᵢ²/(aᵢ − λ) = 0 (rank-one downdate: the roots interlace the
                  sorted aᵢ, λ_2 ∈ [a₍₁₎, a₍₂₎] and λ_max ∈ [a₍ₙ₋₁₎, a₍ₙ₎]). Since Σa = 1,
                  f(λ) = −λ·g(λ) with g(λ) = Σ aᵢ/(aᵢ − λ), and the non-zero roots are g's: no
                  cancellation against the 1 (which costs f ~eps absolute, fatal for λ_2 ≈ a_min
                  in float32). Each root is found by a geometric bisection on the distance to
                  its pole (g is increasing between poles),
                  O(n) per evaluation and per row — a dense eigh of every row of a GPT-2 probe
                  batch would cost ~10¹⁵ flops. +inf when a probability underflows to 0.
``log10_kappa_bound``  the paper's (max a / min a)² = R² (paper 001 App. J; only an upper
                  bound — erratum to Prop. 1 in ``../shared/papers/README.md``)
================  ==========================================================================

Rows with one valid key (the first causal row) have no 1⊥: their R is 1 and κ is NaN; they are
left out of the averages. Aggregation follows paper 001 App. K: R per head, averaged over heads,
then examples, then layers (the paper uses the [CLS] row: ``rows=0``; default: all rows);
since R spans many decades its mean is formed as logsumexp(log R) − log N and reported as
``log10``. Everything else is averaged in the same order.

:func:`sown_attention_logits` reads the pre-softmax scores each attention layer of a
:mod:`jaxspectra.models` model sows on its probabilities path (one forward pass); a test checks
that their softmax is the model's ``aux["attention"]``.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxspectra.groups import layer_index

_LN10 = math.log(10.0)


def _secular_root(a: jax.Array, base: jax.Array, gap: jax.Array, side: float,
                  iters: int) -> jax.Array:
    """Root λ = base + side·δ, δ ∈ (0, gap), of the secular equation in the form
    g(λ) = Σ aᵢ/(aᵢ − λ) = 0 (increasing in λ between poles).

    ``side = +1``: the interval right of the pole ``base`` (λ_2); ``−1``: left of it (λ_max).
    Geometric bisection on δ (relative precision ~2^(−iters/…)); gap = 0 returns ``base``.
    """
    diff = a - base[..., None]  # aᵢ − base, exact for aᵢ near base
    tiny = jnp.finfo(a.dtype).eps * jnp.maximum(jnp.minimum(base, gap), jnp.finfo(a.dtype).tiny)
    lo = jnp.minimum(tiny * 1e-3, gap * 0.5)
    hi = gap

    def g(delta):
        den = diff - side * delta[..., None]  # aᵢ − λ
        safe = jnp.where(den == 0, 1.0, den)
        return jnp.sum(jnp.where(den == 0, 0.0, a / safe), axis=-1)

    def body(_, lohi):
        lo, hi = lohi
        mid = jnp.sqrt(lo * hi)
        gm = g(mid)
        # g increases with λ: below the root g < 0. λ = base + δ (λ_2): go up in δ when g < 0;
        # λ = base − δ (λ_max): go up in δ when g > 0.
        go_up = gm < 0 if side > 0 else gm > 0
        return jnp.where(go_up, mid, lo), jnp.where(go_up, hi, mid)

    lo, hi = lax.fori_loop(0, iters, body, (lo, hi))
    delta = jnp.sqrt(lo * hi)
    return jnp.where(gap > 0, base + side * delta, base)


@functools.partial(jax.jit, static_argnames="iters")
def softmax_row_stats(logits: jax.Array, mask: jax.Array | None = None,
                      iters: int = 64) -> dict[str, jax.Array]:
    """Per-row statistics (module table) of ``logits`` (…, S) over the keys where ``mask``.

    Computed in float32 (float64 for float64 input). Returns arrays of shape ``logits.shape[:-1]``.
    """
    s = jnp.asarray(logits)
    s = s.astype(jnp.float64 if s.dtype == jnp.float64 else jnp.float32)
    if mask is None:
        mask = jnp.ones(s.shape, bool)
    mask = jnp.broadcast_to(mask, s.shape)
    n = jnp.sum(mask, axis=-1)
    neg, pos = -jnp.inf, jnp.inf
    smax = jnp.max(jnp.where(mask, s, neg), axis=-1)
    smin = jnp.min(jnp.where(mask, s, pos), axis=-1)
    a = jax.nn.softmax(jnp.where(mask, s, neg), axis=-1)
    a = jnp.where(mask, a, 0.0)
    loga = jnp.where(mask, s - smax[..., None], 0.0) - jnp.log(
        jnp.sum(jnp.where(mask, jnp.exp(s - smax[..., None]), 0.0), axis=-1, keepdims=True))
    entropy = -jnp.sum(jnp.where(mask, a * loga, 0.0), axis=-1)
    top2 = lax.top_k(jnp.where(mask, s, neg), 2)[0]
    gap = jnp.where(n >= 2, top2[..., 0] - top2[..., 1], jnp.nan)
    s2 = jnp.sum(a * a, axis=-1)
    s3 = jnp.sum(a * a * a, axis=-1)
    jac_fro = jnp.sqrt(jnp.clip(s2 - 2 * s3 + s2 * s2, 0.0, None))
    # order statistics of a over valid keys: two largest / two smallest (O(S) each)
    big = lax.top_k(jnp.where(mask, a, -1.0), 2)[0]
    small = -lax.top_k(jnp.where(mask, -a, -2.0), 2)[0]
    a_n, a_n1 = big[..., 0], big[..., 1]
    a_1, a_2 = small[..., 0], small[..., 1]
    lam_max = _secular_root(a, a_n, jnp.clip(a_n - a_n1, 0.0, None), -1.0, iters)
    lam_2 = _secular_root(a, a_1, jnp.clip(a_2 - a_1, 0.0, None), 1.0, iters)
    kappa = jnp.where(a_1 > 0, lam_max / jnp.where(a_1 > 0, lam_2, 1.0), jnp.inf)
    log10_kappa = jnp.where(n >= 2, jnp.log10(kappa), jnp.nan)
    log10_r = jnp.where(n >= 1, (smax - smin) / _LN10, jnp.nan)
    return {
        "log10_R": log10_r,
        "entropy": entropy,
        "max_logit": smax,
        "logit_gap": gap,
        "jac_fro": jac_fro,
        "log10_kappa": log10_kappa,
        "log10_kappa_bound": jnp.where(n >= 2, 2.0 * log10_r, jnp.nan),
    }


def causal_mask(t: int, s: int | None = None) -> jax.Array:
    """``[T, S]`` lower-triangular mask (query t sees keys ≤ t)."""
    return jnp.tril(jnp.ones((t, t if s is None else s), bool))


def attention_metrics(logits: list[jax.Array], causal: bool = True,
                      rows: int | None = None) -> dict[str, jax.Array]:
    """Monitor metrics from per-layer logits ``[B, H, T, S]``.

    Keys ``attention/layer_<l>/head_<h>/<stat>`` (mean over rows, then examples) and the
    aggregates ``attention/<stat>`` (heads, then examples, then layers; ``log10_R``'s mean is
    the log10 of the mean of R, paper 001 App. K). ``rows``: only that query row (e.g. 0 for a
    [CLS] token at position 0, −1 for the last token); default all rows with ≥ 2 keys.
    """
    out: dict[str, jax.Array] = {}
    per_layer: dict[str, list[jax.Array]] = {}
    for layer, s in enumerate(logits):
        if s.ndim != 4:
            raise ValueError(f"attention logits of layer {layer} must be [B, H, T, S], got "
                             f"{s.shape}")
        _, n_heads, t, sl = s.shape
        mask = causal_mask(t, sl) if causal else jnp.ones((t, sl), bool)
        st = softmax_row_stats(s, mask)
        valid = jnp.sum(mask, axis=-1) >= 2  # [T]
        if rows is not None:
            valid = valid & (jnp.arange(t) == (rows % t))
        w = valid.astype(st["entropy"].dtype)
        cnt = jnp.maximum(jnp.sum(w), 1.0)
        for k, v in st.items():
            if k == "log10_R":
                lr = v * _LN10
                # log of the mean over rows of R, per (example, head)
                row = jax.nn.logsumexp(jnp.where(valid, lr, -jnp.inf), axis=-1) - jnp.log(cnt)
                head = jax.nn.logsumexp(row, axis=0) - math.log(row.shape[0])  # over examples
                for h in range(n_heads):
                    out[f"attention/layer_{layer}/head_{h}/{k}"] = head[h] / _LN10
                ex = jax.nn.logsumexp(row, axis=1) - math.log(n_heads)  # heads → [B]
                lay = jax.nn.logsumexp(ex) - math.log(ex.shape[0])  # examples
                per_layer.setdefault(k, []).append(lay)
            else:
                vv = jnp.where(valid, v, 0.0)
                row = jnp.sum(vv, axis=-1) / cnt  # [B, H]
                for h in range(n_heads):
                    out[f"attention/layer_{layer}/head_{h}/{k}"] = jnp.mean(row[:, h])
                per_layer.setdefault(k, []).append(jnp.mean(jnp.mean(row, axis=1)))
    for k, vals in per_layer.items():
        v = jnp.stack(vals)
        if k == "log10_R":
            out[f"attention/{k}"] = (jax.nn.logsumexp(v) - math.log(v.shape[0])) / _LN10
        else:
            out[f"attention/{k}"] = jnp.mean(v)
    return out


def sown_attention_logits(module: Any, params: Any, tokens: jax.Array) -> list[jax.Array]:
    """Pre-softmax scores ``[B, H, T, T]`` of every attention layer of a
    :mod:`jaxspectra.models` model (``q kᵀ/√d_h`` after RoPE, unmasked), in layer order: the
    scores each ``Attention`` layer sows (``intermediates/…/attention_logits``) on its
    probabilities path (``return_attention=True``) — one forward pass, nothing recomputed."""
    _, inter = module.apply(params, tokens, return_attention=True, mutable=["intermediates"])
    found = [(layer_index(path), leaf) for path, leaf in
             jax.tree_util.tree_leaves_with_path(inter)
             if any(getattr(k, "key", None) == "attention_logits" for k in path)]
    if not found:
        raise ValueError("the model sowed no attention_logits: it must be a jaxspectra.models "
                         "model whose Attention layers take return_attention=True")
    return [leaf for _, leaf in sorted(found, key=lambda x: -1 if x[0] is None else x[0])]


class AttentionMonitor:
    """DeviceMonitor: :func:`attention_metrics` on a fixed probe batch of tokens ``[B, T]``
    (or the step's inputs when ``probe`` is None), every ``every`` steps."""

    def __init__(self, module: Any, probe: jax.Array | None = None, every: int = 100,
                 rows: int | None = None, causal: bool = True, name: str = "attention"):
        if every < 1:
            raise ValueError(f"every must be ≥ 1, got {every}")
        self.module, self.probe, self.every, self.rows, self.causal = (module, probe, every,
                                                                       rows, causal)
        self.name = name

    def init(self, params: Any) -> Any:
        return ()

    def __call__(self, params: Any, batch: Any, state: Any):
        tokens = self.probe if self.probe is not None else batch[0]
        logits = sown_attention_logits(self.module, params, tokens)
        return attention_metrics(logits, self.causal, self.rows), state
