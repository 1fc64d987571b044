"""Chunked LM-head cross-entropy: the loss of ``logits = x·W`` without the ``[B, T, V]`` logits.

The mean next-token cross-entropy

    L = (1/N) Σ_{b,t} [ logsumexp_v z_{btv} − z_{b,t,y_bt} ],   z_{bt·} = x_{bt} W   (N = B·T)

is computed in chunks of ``chunk`` positions along the sequence axis by a ``lax.scan``: each step
forms the float32 logits of ``B × chunk`` tokens (``[B, chunk, V]``), their log-sum-exp and the
target logit, and drops them. The backward pass is a custom VJP that recomputes each chunk's
logits and applies the closed-form gradient of softmax cross-entropy,

    ∂L/∂z_{btv} = (softmax(z_{bt})_v − 1[v = y_bt]) / N,
    ∂L/∂x_{bt} = Σ_v ∂L/∂z_{btv} W_{·v},    ∂L/∂W = Σ_{bt} x_{bt} ⊗ ∂L/∂z_{bt},

keeping only the per-token log-sum-exp (``[B, T]`` float32) from the forward pass, so the peak
memory of the loss is O(B·chunk·V) instead of O(B·T·V) (GPT-2 small, B=16, T=1024: 3.3 GB of
float32 logits → 0.4 GB at ``chunk=128``). Chunking along T (not the flattened B·T axis) keeps a
batch-sharded ``x`` local to its device.

Numerics: the matmul operands are in ``compute_dtype`` (the model's ``dtype``; bf16 under mixed
precision), the logits are accumulated and kept in float32 (``preferred_element_type``), the
softmax, the loss sum and ``∂L/∂W`` are accumulated in float32; ``∂L/∂z`` is cast to
``compute_dtype`` for the two backward matmuls (as autodiff of a bf16 matmul does). The float32
reference path (``GPT.unembed`` then ``optax.softmax_cross_entropy_with_integer_labels``) rounds
the logits to ``compute_dtype`` first, so in bf16 the two differ by the logits' rounding (≤ 2⁻⁸
relative; see ``tests/models/test_losses.py`` for the tolerance) and in float32 to round-off.

Example:
  >>> import jax, jax.numpy as jnp
  >>> x = jax.random.normal(jax.random.key(0), (2, 8, 4))
  >>> emb = jax.random.normal(jax.random.key(1), (16, 4))      # tied: W = embeddingᵀ (V, d)
  >>> y = jnp.zeros((2, 8), jnp.int32)
  >>> ref = jnp.mean(jax.nn.logsumexp(x @ emb.T, -1) - (x @ emb.T)[..., 0])
  >>> bool(jnp.allclose(chunked_lm_loss(x, emb, y, 3, tied=True), ref, rtol=1e-6))
  True
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp


def _acc_dtype(dtype: Any) -> Any:
    """Accumulation dtype: at least float32 (float64 stays float64)."""
    return jnp.promote_types(dtype, jnp.float32)


def _logits(x: jax.Array, w: jax.Array, tied: bool) -> jax.Array:
    """``[B, c, d] × W → [B, c, V]`` accumulated in ≥ float32; ``W`` is ``(V, d)`` when tied
    (the embedding) else ``(d, V)`` (the head kernel)."""
    spec = "bcd,vd->bcv" if tied else "bcd,dv->bcv"
    return jnp.einsum(spec, x, w.astype(x.dtype), preferred_element_type=_acc_dtype(x.dtype))


def _chunk(a: jax.Array, i: jax.Array, c: int) -> jax.Array:
    return jax.lax.dynamic_slice_in_dim(a, i * c, c, axis=1)


@partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _ce_sum(x, w, targets, mask, chunk: int, tied: bool):
    """Σ over valid tokens of ``logsumexp(z) − z_y`` (float32), ``x [B, Tp, d]``,
    ``Tp % chunk == 0``; ``mask [B, Tp]`` (1 = real token, 0 = padding)."""
    return _ce_fwd(x, w, targets, mask, chunk, tied)[0]


def _ce_fwd(x, w, targets, mask, chunk, tied):
    n = x.shape[1] // chunk
    acc = _acc_dtype(x.dtype)

    def body(total, i):
        z = _logits(_chunk(x, i, chunk), w, tied)
        lse = jax.nn.logsumexp(z, axis=-1)
        zy = jnp.take_along_axis(z, _chunk(targets, i, chunk)[..., None], axis=-1)[..., 0]
        return total + jnp.sum((lse - zy) * _chunk(mask, i, chunk)), lse

    total, lse = jax.lax.scan(body, jnp.zeros((), acc), jnp.arange(n))
    lse = jnp.moveaxis(lse, 0, 1).reshape(x.shape[0], n * chunk)  # [n, B, c] -> [B, Tp]
    return total, (x, w, targets, mask, lse)


def _ce_bwd(chunk, tied, res, g):
    x, w, targets, mask, lse = res
    n = x.shape[1] // chunk
    acc = _acc_dtype(x.dtype)
    v = w.shape[0] if tied else w.shape[1]
    spec_dx = "bcv,vd->bcd" if tied else "bcv,dv->bcd"
    spec_dw = "bcd,bcv->vd" if tied else "bcd,bcv->dv"

    def body(carry, i):
        dx, dw = carry
        xc = _chunk(x, i, chunk)
        z = _logits(xc, w, tied)
        p = jnp.exp(z - _chunk(lse, i, chunk)[..., None])
        dz = p - jax.nn.one_hot(_chunk(targets, i, chunk), v, dtype=acc)
        dz = (dz * (g * _chunk(mask, i, chunk))[..., None]).astype(x.dtype)
        dxc = jnp.einsum(spec_dx, dz, w.astype(x.dtype), preferred_element_type=acc)
        dx = jax.lax.dynamic_update_slice_in_dim(dx, dxc.astype(x.dtype), i * chunk, axis=1)
        dw = dw + jnp.einsum(spec_dw, xc, dz, preferred_element_type=acc)
        return (dx, dw), None

    init = (jnp.zeros_like(x), jnp.zeros(w.shape, acc))
    (dx, dw), _ = jax.lax.scan(body, init, jnp.arange(n))
    return dx, dw.astype(w.dtype), None, None


_ce_sum.defvjp(_ce_fwd, _ce_bwd)


def chunked_lm_loss(
    hidden: jax.Array,
    embedding_or_head: jax.Array,
    targets: jax.Array,
    chunk: int,
    *,
    tied: bool,
    compute_dtype: Any = None,
) -> jax.Array:
    """Mean cross-entropy of ``logits = hidden · W`` over every token, in chunks of the sequence.

    Args:
      hidden: the final-norm output ``[B, T, d]`` (or ``[N, d]``, one sequence of N tokens).
      embedding_or_head: the token embedding ``(V, d)`` when ``tied`` (logits ``= h·Eᵀ``) or the
        untied head kernel ``(d, V)``; stored in any float dtype (the gradient comes back in it).
      targets: integer ids ``[B, T]`` (``[N]``) in ``[0, V)``.
      chunk: sequence positions per scan step (each step holds ``[B, chunk, V]`` float32
        logits); a positive int. ``chunk ≥ T`` is one step; a ``T`` it does not divide is padded
        to the next multiple with masked positions (wasting < ``chunk`` positions of compute).
      tied: the layout of ``embedding_or_head`` (``(V, d)`` if True, ``(d, V)`` if False).
      compute_dtype: dtype of the matmul operands (default ``hidden.dtype``).

    Returns:
      The float32 (float64 under float64 inputs) scalar ``(1/N) Σ (logsumexp z − z_y)``, equal
      to ``optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()``; its gradient
      w.r.t. ``hidden`` and ``embedding_or_head`` is the custom VJP described in the module
      docstring (O(B·chunk·V) memory).
    """
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk <= 0:
        raise ValueError(
            f"chunk must be a positive int (sequence positions per loss step), got {chunk!r}; "
            "use loss_chunk=0 in the model config for the full-logits loss instead"
        )
    if hidden.ndim == 2:
        hidden, targets = hidden[None], targets[None]
    if hidden.ndim != 3 or targets.shape != hidden.shape[:2]:
        raise ValueError(
            f"hidden must be [B, T, d] with targets [B, T], got {hidden.shape} and "
            f"{targets.shape}"
        )
    if not jnp.issubdtype(targets.dtype, jnp.integer):
        raise TypeError(f"targets must be integer token ids, got dtype {targets.dtype}")
    d = hidden.shape[-1]
    w_d = embedding_or_head.shape[1] if tied else embedding_or_head.shape[0]
    if embedding_or_head.ndim != 2 or w_d != d:
        want = "(V, d) embedding" if tied else "(d, V) head kernel"
        raise ValueError(
            f"tied={tied} expects a {want} with d={d}, got shape {embedding_or_head.shape}; "
            "pass tied=True for the token embedding, tied=False for the head kernel"
        )
    b, t = targets.shape
    cdt = hidden.dtype if compute_dtype is None else compute_dtype
    x = hidden.astype(cdt)
    chunk = min(chunk, t)
    pad = -t % chunk
    mask = jnp.ones((b, t), _acc_dtype(cdt))
    targets = targets.astype(jnp.int32)
    if pad:
        x = jnp.pad(x, ((0, 0), (0, pad), (0, 0)))
        targets = jnp.pad(targets, ((0, 0), (0, pad)))
        mask = jnp.pad(mask, ((0, 0), (0, pad)))
    return _ce_sum(x, embedding_or_head, targets, mask, chunk, tied) / (b * t)
