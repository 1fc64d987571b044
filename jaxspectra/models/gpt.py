"""Decoder-only language model: GPT-2 (nanoGPT), modded GPT-2, LLaMA and LLaMA-MoE.

One module covers the family through :class:`~jaxspectra.models.config.GPTConfig`: LayerNorm or
RMSNorm, learned / RoPE / no positions, GELU / ReLU² / SiLU, MLP or SwiGLU, biases on/off, tied or
untied head, fused or separate qkv, mixture of experts, μP options (paper 003 Table 4).

Parameter tree (``groups.py`` names)::

    embed/embedding (V, d)          pos_embed/embedding (T_max, d)   [position="learned"]
    block_<i>/ln_1/scale            block_<i>/attn/{qkv | q,k,v}/kernel, block_<i>/attn/o/kernel
    block_<i>/ln_2/scale            block_<i>/mlp/{fc,proj | gate,up,down}/kernel
                                    block_<i>/moe/{router, gate, up, down}/kernel   [n_experts>0]
    ln_f/scale                      head/kernel (d, V)                  [tied=False]

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jaxspectra.models import get_model
  >>> model, cfg = get_model("gpt-tiny")
  >>> tokens = jnp.zeros((2, 8), jnp.int32)
  >>> params = model.init(jax.random.key(0), tokens)
  >>> model.apply(params, tokens).shape
  (2, 8, 64)
  >>> logits, aux = model.apply(params, tokens, return_attention=True, return_hidden=True)
  >>> len(aux["attention"]), aux["attention"][0].shape, len(aux["hidden"])
  (2, (2, 2, 8, 8), 3)
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxspectra.models.config import GPTConfig
from jaxspectra.models.layers import (
    block_class,
    make_norm,
    resolve_dtype,
    rope_tables,
    run_blocks,
    with_aux,
)
from jaxspectra.models.losses import chunked_lm_loss


def check_tokens(tokens: jax.Array, max_len: int | None, what: str = "tokens") -> None:
    """Shape/dtype checks shared by the token models (static, so free under jit)."""
    if tokens.ndim != 2:
        raise ValueError(f"{what} must be [batch, seq_len] integers, got shape {tokens.shape}")
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise TypeError(f"{what} must be integer token ids, got dtype {tokens.dtype}")
    if max_len is not None and tokens.shape[1] > max_len:
        raise ValueError(
            f"sequence length {tokens.shape[1]} exceeds max_seq_len={max_len}; shorten the "
            f"sequences or build the model with a larger max_seq_len"
        )


class GPT(nn.Module):
    """Causal LM: int tokens ``[B, T]`` → logits ``[B, T, V]`` (float32).

    ``__call__(tokens, return_attention=False, return_hidden=False)`` returns the logits, or
    ``(logits, aux)`` when either flag is set: ``aux["attention"]`` is a list (one per layer) of
    ``[B, H, T, T]`` attention probabilities computed by an explicit softmax (use on a probe
    batch), ``aux["hidden"]`` the residual stream before each block and after the last (before
    ``ln_f``), ``n_layers + 1`` arrays ``[B, T, d]``. Methods for monitors (through
    ``module.apply(params, ..., method=...)``): ``embed(tokens) -> h``, ``block(h, layer) -> h``,
    ``unembed(h) -> logits``, and ``loss(tokens, targets) -> mean cross-entropy`` (the
    training loss when ``config.loss_chunk > 0``: chunked, never all ``[B, T, V]`` logits).
    """

    config: GPTConfig

    def setup(self):
        c = self.config
        dt, pdt = resolve_dtype(c.dtype), resolve_dtype(c.param_dtype)
        init = nn.initializers.normal(stddev=c.init_std)
        self.tok = nn.Embed(
            c.vocab_size, c.d_model, dtype=pdt, param_dtype=pdt, embedding_init=init, name="embed"
        )
        if c.position == "learned":
            self.pos = nn.Embed(
                c.max_seq_len,
                c.d_model,
                dtype=pdt,
                param_dtype=pdt,
                embedding_init=init,
                name="pos_embed",
            )
        self.blocks = [block_class(c)(c, causal=True, name=f"block_{i}") for i in range(c.n_layers)]
        self.ln_f = make_norm(c, "ln_f")
        if not c.tied:
            self.head = nn.Dense(
                c.vocab_size,
                use_bias=False,
                dtype=dt,
                param_dtype=pdt,
                kernel_init=init,
                name="head",
            )

    def _rope(self, seq_len: int):
        c = self.config
        if c.position != "rope":
            return None
        return rope_tables(seq_len, c.head_dim, c.rope_base)

    def embed(self, tokens: jax.Array) -> jax.Array:
        """Token (+ learned position) embedding: ``[B, T]`` → residual stream ``[B, T, d]``."""
        c = self.config
        check_tokens(tokens, c.max_seq_len)
        h = self.tok(tokens)
        if c.position == "learned":
            h = h + self.pos(jnp.arange(tokens.shape[1]))[None]
        return h

    def block(self, h: jax.Array, layer: int, return_attention: bool = False):
        """Block ``layer`` (a Python int) on the residual stream ``h [B, T, d]``; returns the new
        ``h`` (and the ``[B, H, T, T]`` probabilities when ``return_attention``)."""
        if not 0 <= layer < self.config.n_layers:
            raise ValueError(f"layer={layer} out of range [0, {self.config.n_layers})")
        out, p = self.blocks[layer](h, self._rope(h.shape[1]), return_attention)
        return (out, p) if return_attention else out

    def unembed(self, h: jax.Array) -> jax.Array:
        """Final norm and head (or the tied embedding): ``[B, T, d]`` → float32 logits."""
        c = self.config
        x = self.ln_f(h)
        if c.tied:
            emb = self.tok.embedding.astype(resolve_dtype(c.dtype))
            logits = jnp.einsum("btd,vd->btv", x.astype(emb.dtype), emb)
        else:
            logits = self.head(x)
        return logits.astype(jnp.promote_types(logits.dtype, jnp.float32))

    def __call__(self, tokens, return_attention: bool = False, return_hidden: bool = False):
        h = self.embed(tokens)
        rope = self._rope(tokens.shape[1])
        h, hidden, attn = run_blocks(self.blocks, h, rope, return_attention, return_hidden)
        logits = self.unembed(h)
        return with_aux(logits, hidden, attn, return_attention, return_hidden)

    def loss(self, tokens: jax.Array, targets: jax.Array) -> jax.Array:
        """Mean next-token cross-entropy (float32) of ``targets [B, T]``.

        ``config.loss_chunk = c > 0``: :func:`~jaxspectra.models.losses.chunked_lm_loss` on
        ``ln_f(h)`` with the head kernel (or the tied embedding), ``c`` positions at a time;
        ``0``: from the full float32 logits of :meth:`unembed` (the reference path).
        """
        c = self.config
        h = self.embed(tokens)
        h, _, _ = run_blocks(self.blocks, h, self._rope(tokens.shape[1]), False, False)
        if c.loss_chunk == 0:
            logits = self.unembed(h).astype(jnp.float32)
            lse = jax.nn.logsumexp(logits, axis=-1)
            zy = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
            return jnp.mean(lse - zy)
        x = self.ln_f(h)
        params = self.variables["params"]
        w = params["embed"]["embedding"] if c.tied else params["head"]["kernel"]
        return chunked_lm_loss(
            x, w, targets, c.loss_chunk, tied=c.tied, compute_dtype=resolve_dtype(c.dtype)
        )
