"""The "tiny transformer" CLS encoder of paper 001 App. K (WikiText-2 experiments).

App. K: token and positional embeddings of width d = 128, a learned [CLS] token prepended, learned
positions for 0..64 ([CLS] + 64 tokens), 2 blocks of ``nn.MultiheadAttention(128, 4)`` and an FFN
``W₂ GELU(W₁h + b₁) + b₂`` of width 4d, "both with residual connections and layer normalization",
no attention mask; a linear head on the final [CLS] vector with 2 outputs (bag of words) or V
(next token; V = 30522 for distilbert-base-uncased). We read "residual connections and layer
normalization" as post-norm (``LN(x + sublayer(x))``, PyTorch's ``nn.TransformerEncoderLayer``
default); ``prenorm=True`` gives the pre-norm variant. ``nn.MultiheadAttention`` has a fused
in-projection with biases, hence ``fused_qkv`` and ``bias`` on.

Input: int tokens ``[B, T]`` with ``T ≤ max_seq_len`` (64; 63 for the next-token task) → logits
``[B, n_outputs]``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxspectra.models.config import EncoderConfig
from jaxspectra.models.gpt import check_tokens
from jaxspectra.models.layers import block_class, make_norm, resolve_dtype, run_blocks, with_aux


class CLSEncoder(nn.Module):
    """``[B, T]`` tokens → ``[B, n_outputs]`` logits from the final [CLS] vector.

    ``return_attention`` / ``return_hidden`` give ``(logits, aux)`` (attention over the
    ``1 + T`` positions, [CLS] first). Methods ``embed(tokens) -> h``, ``block(h, layer) -> h``.
    """

    config: EncoderConfig

    def setup(self):
        c = self.config
        dt, pdt = resolve_dtype(c.dtype), resolve_dtype(c.param_dtype)
        init = nn.initializers.normal(stddev=c.init_std)
        self.tok = nn.Embed(
            c.vocab_size, c.d_model, dtype=pdt, param_dtype=pdt, embedding_init=init, name="embed"
        )
        self.cls = self.param("cls", init, (1, c.d_model), pdt)
        self.pos_embed = self.param("pos_embed", init, (c.max_seq_len + 1, c.d_model), pdt)
        self.blocks = [
            block_class(c)(c, causal=False, name=f"block_{i}") for i in range(c.n_layers)
        ]
        if c.prenorm:
            self.ln_f = make_norm(c, "ln_f")
        self.head = nn.Dense(
            c.n_outputs, use_bias=c.bias, dtype=dt, param_dtype=pdt, kernel_init=init, name="head"
        )

    def embed(self, tokens: jax.Array) -> jax.Array:
        c = self.config
        check_tokens(tokens, c.max_seq_len)
        x = self.tok(tokens)
        cls = jnp.broadcast_to(self.cls[None], (x.shape[0], 1, c.d_model)).astype(x.dtype)
        x = jnp.concatenate([cls, x], axis=1)
        return x + self.pos_embed[None, : x.shape[1]]

    def block(self, h, layer: int, return_attention: bool = False):
        out, p = self.blocks[layer](h, None, return_attention)
        return (out, p) if return_attention else out

    def __call__(self, tokens, return_attention: bool = False, return_hidden: bool = False):
        h = self.embed(tokens)
        h, hidden, attn = run_blocks(self.blocks, h, None, return_attention, return_hidden)
        cls = h[:, 0]
        if self.config.prenorm:
            cls = self.ln_f(cls)
        logits = self.head(cls)
        logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
        return with_aux(logits, hidden, attn, return_attention, return_hidden)
