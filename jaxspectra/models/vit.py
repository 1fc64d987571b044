"""Tiny vision transformer (paper 001 §4, "Experiment with ViT on MNIST").

Paper 001 gives 6 layers, 4 heads, patch 4, embedding dim 64, MLP dim 256 on 28×28 MNIST; the rest
(pre-LN blocks, GELU, biases, a learned [CLS] token prepended to the 49 patch embeddings, learned
positions for all 50 tokens, the head on the final [CLS] vector after ``ln_f``, head dim
64/4 = 16) is ours, the standard ViT of Dosovitskiy et al. (2020).

Parameter tree: ``patch_embed/{kernel (p²·C, d), bias}``, ``cls (1, d)``, ``pos_embed (1 + N, d)``,
``block_<i>/…`` (as in :mod:`jaxspectra.models.gpt`), ``ln_f``, ``head/{kernel (d, classes), bias}``.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jaxspectra.models import get_model
  >>> model, cfg = get_model("vit-tiny", n_layers=1)
  >>> x = jnp.zeros((2, 28, 28))
  >>> params = model.init(jax.random.key(0), x)
  >>> model.apply(params, x).shape
  (2, 10)
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxspectra.models.config import ViTConfig
from jaxspectra.models.layers import block_class, make_norm, resolve_dtype, run_blocks, with_aux


def patchify(images: jax.Array, patch: int) -> jax.Array:
    """``[B, H, W, C]`` → ``[B, (H/p)·(W/p), p·p·C]``, patches in row-major order, each patch
    flattened as (row, column, channel)."""
    b, h, w, c = images.shape
    x = images.reshape(b, h // patch, patch, w // patch, patch, c)
    x = x.transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // patch) * (w // patch), patch * patch * c)


class ViT(nn.Module):
    """Images ``[B, H, W]`` or ``[B, H, W, C]`` → class logits ``[B, n_classes]`` (float32).

    ``return_attention`` / ``return_hidden`` give ``(logits, aux)`` as for the GPT (attention
    ``[B, H, 1+N, 1+N]``, no mask). Methods ``embed(images) -> h`` and ``block(h, layer) -> h``.
    """

    config: ViTConfig

    def setup(self):
        c = self.config
        dt, pdt = resolve_dtype(c.dtype), resolve_dtype(c.param_dtype)
        init = nn.initializers.normal(stddev=c.init_std)
        self.patch = nn.Dense(
            c.d_model,
            use_bias=c.bias,
            dtype=dt,
            param_dtype=pdt,
            kernel_init=init,
            name="patch_embed",
        )
        self.cls = self.param("cls", init, (1, c.d_model), pdt)
        self.pos_embed = self.param("pos_embed", init, (1 + c.n_patches, c.d_model), pdt)
        self.blocks = [
            block_class(c)(c, causal=False, name=f"block_{i}") for i in range(c.n_layers)
        ]
        self.ln_f = make_norm(c, "ln_f")
        self.head = nn.Dense(
            c.n_classes, use_bias=c.bias, dtype=dt, param_dtype=pdt, kernel_init=init, name="head"
        )

    def embed(self, images: jax.Array) -> jax.Array:
        c = self.config
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4 or images.shape[1:] != (c.image_size, c.image_size, c.channels):
            raise ValueError(
                f"images must be [B, {c.image_size}, {c.image_size}] or "
                f"[B, {c.image_size}, {c.image_size}, {c.channels}], got {images.shape}"
            )
        pdt = resolve_dtype(c.param_dtype)
        x = self.patch(patchify(images.astype(pdt), c.patch_size)).astype(pdt)
        cls = jnp.broadcast_to(self.cls[None], (x.shape[0], 1, c.d_model))
        return jnp.concatenate([cls, x], axis=1) + self.pos_embed[None]

    def block(self, h, layer: int, return_attention: bool = False):
        out, p = self.blocks[layer](h, None, return_attention)
        return (out, p) if return_attention else out

    def __call__(self, images, return_attention: bool = False, return_hidden: bool = False):
        h = self.embed(images)
        h, hidden, attn = run_blocks(self.blocks, h, None, return_attention, return_hidden)
        logits = self.head(self.ln_f(h[:, 0]))
        logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
        return with_aux(logits, hidden, attn, return_attention, return_hidden)
