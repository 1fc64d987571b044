"""Attention ratio R of a ViT and teachers with a prescribed R (paper 001 §4, Fig. 2b).

Paper 001 §4: "The ratio R across layers and heads for the sparse attention setting … is R ≈ 10⁷,
whereas for the non sparse … R ≈ 20"; it does not say how its teachers were built. Ours:

* **R** of one (example, layer, head) is the ratio of the largest to the smallest attention
  probability in the [CLS] query's row (the row the head reads; App. J.3 uses the same [CLS]
  weights), R = max_j a_0j / min_j a_0j = exp(max_j s_0j − min_j s_0j) for the logits s. A
  layer-head's R is the median over examples; the teacher's R is the median over all
  (example, layer, head) triples.
* **Teacher**: a randomly initialised ViT whose query and key projections (kernel and bias) of
  layer ℓ are multiplied by a scalar c_ℓ. The attention logits s = q·k/√d_h are then multiplied by
  c_ℓ² *exactly*, so the log-ratio of every row is c_ℓ² times its value at c_ℓ = 1, and the median
  over rows scales the same way. Hence the closed form c_ℓ² = ln R_target / median(ln R at c = 1),
  applied layer by layer (layer ℓ's inputs depend on the scales of layers < ℓ). Measured on a
  calibration set disjoint from the images the R is verified on.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

_TINY = np.float32(np.finfo(np.float32).tiny)


def cls_log10_ratio(attention: jax.Array) -> jax.Array:
    """log₁₀ of max/min of the [CLS] row of ``attention [B, H, T, T]`` → ``[B, H]``.

    Probabilities below float32's smallest normal are clamped there (R then reads ≥ 1e37)."""
    row = jnp.maximum(attention[:, :, 0, :].astype(jnp.float32), _TINY)
    return jnp.log10(row.max(-1)) - jnp.log10(row.min(-1))


def layer_log10_ratios(model: Any, params: Any, images: jax.Array) -> jax.Array:
    """``[L, B, H]`` log₁₀R of the [CLS] row per layer, example and head."""
    _, aux = model.apply(params, images, return_attention=True)
    return jnp.stack([cls_log10_ratio(a) for a in aux["attention"]])


def median_log10_ratio(log10_r: jax.Array | np.ndarray) -> float:
    """The teacher's R (log₁₀): median over every (layer, example, head)."""
    return float(np.median(np.asarray(log10_r, np.float64)))


def _qkv(params: Any, layer: int) -> dict:
    try:
        return params["params"][f"block_{layer}"]["attn"]["qkv"]
    except KeyError as err:
        raise ValueError(
            f"teacher scaling needs a fused qkv projection at params/block_{layer}/attn/qkv "
            "(ViTConfig(fused_qkv=True), the vit-tiny default)") from err


def scale_query_key(params: Any, layer: int, c: float) -> Any:
    """``params`` with layer ``layer``'s query and key columns (kernel and bias) times ``c``.

    The fused kernel is ``(d, 3d)`` laid out Q|K|V; the attention logits of that layer become
    ``c²`` times their old value, the values are untouched."""
    qkv = _qkv(params, layer)
    d = qkv["kernel"].shape[1] // 3
    mult = jnp.concatenate([jnp.full((2 * d,), c, jnp.float32), jnp.ones((d,), jnp.float32)])
    new = {k: (v * mult.astype(v.dtype)) for k, v in qkv.items()}
    out = jax.tree.map(lambda x: x, params)  # shallow copy of the containers
    out["params"][f"block_{layer}"]["attn"]["qkv"] = new
    return out


def calibrate_teacher(model: Any, params: Any, images: jax.Array, target_log10_r: float,
                      n_layers: int, ratios: Any = None) -> tuple[Any, list[float]]:
    """Scale each layer's query/key so its median [CLS] log₁₀R on ``images`` is the target.

    Returns ``(params, scales)``. Layer by layer: c_ℓ² = target / median(log₁₀R at c_ℓ = 1)
    (exact, since the logits scale by c_ℓ²; module docstring). ``ratios``: an optional compiled
    ``(params, images) -> [L, B, H]`` (default: :func:`layer_log10_ratios` jitted here)."""
    if not (math.isfinite(target_log10_r) and target_log10_r > 0):
        raise ValueError(f"target_log10_r must be positive and finite, got {target_log10_r}; "
                         "e.g. 7.0 for R = 1e7, 1.301 for R = 20")
    scales = []
    if ratios is None:
        ratios = jax.jit(lambda p, x: layer_log10_ratios(model, p, x))
    for layer in range(n_layers):
        base = median_log10_ratio(ratios(params, images)[layer])
        if not base > 0:
            raise ValueError(f"layer {layer}: the [CLS] attention is exactly uniform (log10 R = "
                             f"{base}); scaling cannot change it — use a random init")
        c = math.sqrt(target_log10_r / base)
        params = scale_query_key(params, layer, c)
        scales.append(c)
    return params, scales
