"""Paper 002 §4.1: the one-layer single-head transformer of the SoSD theory.

``Q = X W_Q, K = X W_K, V = X W_V`` (W ∈ ℝ^{d×d}), ``M = Q Kᵀ/√d`` (no mask), ``A = softmax(M)``
(row-wise), ``H = A V``, logits ``Z = H W_C`` with a fixed (non-trainable) ``W_C ∈ ℝ^{d×C}``, and
the per-position cross-entropy ``L = −(1/n) Σ_i log P_{i, y_i}``, ``P = softmax(Z)`` (eq. 2).
Init: every entry of W_Q, W_K, W_V ~ N(0, σ²).

Input convention: real features ``X [B, n, d]`` (a batch of sequences; a single ``[n, d]`` is
promoted to ``B = 1``), labels ``y [B, n]`` integers in ``[0, C)``. W_C is not a parameter: it is
drawn from ``PRNGKey(config.w_c_seed)`` (N(0, w_c_std²), default std 1/√d) each call (a constant
under jit), or passed explicitly as ``w_c=``. Parameters: ``attn/{q,k,v}/kernel`` (group
``attention``), kernels laid out ``(fan_in, fan_out)`` so ``X @ kernel`` is ``X W``.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxspectra.models.config import OneLayerConfig
from jaxspectra.models.layers import resolve_dtype


def fixed_w_c(config: OneLayerConfig) -> jax.Array:
    """The fixed readout ``W_C [d, C]`` determined by the config."""
    std = config.w_c_std if config.w_c_std is not None else 1.0 / math.sqrt(config.d)
    w = jax.random.normal(
        jax.random.PRNGKey(config.w_c_seed), (config.d, config.n_classes), jnp.float32
    )
    return (w * std).astype(resolve_dtype(config.param_dtype))


class _Proj(nn.Module):
    d: int
    sigma: float
    param_dtype: object

    @nn.compact
    def __call__(self, x):
        w = self.param(
            "kernel", nn.initializers.normal(stddev=self.sigma), (self.d, self.d), self.param_dtype
        )
        return x @ w.astype(x.dtype)


class _Attn(nn.Module):
    d: int
    sigma: float
    param_dtype: object

    def setup(self):
        self.q = _Proj(self.d, self.sigma, self.param_dtype, name="q")
        self.k = _Proj(self.d, self.sigma, self.param_dtype, name="k")
        self.v = _Proj(self.d, self.sigma, self.param_dtype, name="v")

    def __call__(self, x):
        q, k, v = self.q(x), self.k(x), self.v(x)
        m = jnp.einsum("bid,bjd->bij", q, k) / math.sqrt(self.d)
        a = jax.nn.softmax(m, axis=-1)
        return a @ v, a


class OneLayerTransformer(nn.Module):
    """``X [B, n, d]`` → logits ``Z [B, n, C]``; ``return_attention=True`` → ``(Z, aux)`` with
    ``aux["attention"] = [A[:, None]]`` (``[B, 1, n, n]``, one head) and ``aux["hidden"] = [H]``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxspectra.models import get_model
      >>> model, cfg = get_model("one-layer", d=4, n_classes=3)
      >>> x = jnp.ones((2, 5, 4))
      >>> params = model.init(jax.random.key(0), x)
      >>> model.apply(params, x).shape
      (2, 5, 3)
    """

    config: OneLayerConfig

    def setup(self):
        c = self.config
        self.attn = _Attn(c.d, c.sigma, resolve_dtype(c.param_dtype), name="attn")

    def __call__(self, x, w_c=None, return_attention: bool = False, return_hidden: bool = False):
        c = self.config
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3 or x.shape[-1] != c.d:
            raise ValueError(f"X must be [B, n, d={c.d}] (or [n, d]), got shape {x.shape}")
        if w_c is None:
            w_c = fixed_w_c(c)
        if w_c.shape != (c.d, c.n_classes):
            raise ValueError(f"w_c must be [{c.d}, {c.n_classes}], got {w_c.shape}")
        x = x.astype(resolve_dtype(c.dtype))
        h, a = self.attn(x)
        z = h @ jax.lax.stop_gradient(w_c).astype(h.dtype)
        if not (return_attention or return_hidden):
            return z
        aux = {}
        if return_attention:
            aux["attention"] = [a[:, None]]
        if return_hidden:
            aux["hidden"] = [h]
        return z, aux


def one_layer_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Paper 002 eq. 2 averaged over the batch: ``mean_{b,i} −log softmax(Z)_{b, i, y_{b,i}}``."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
