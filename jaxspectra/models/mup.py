"""μP learning-rate multipliers (paper 003 Table 4, footnote 3).

For NanoGPT-5M (and Sigma-40M) the paper multiplies the learning rate of the transformer blocks'
2-D weights by 16 and of the embedding weights by 4 (base 6e-4 → 9.6e-3 and 2.4e-3). Everything
else (norm gains, biases, the untied LM head, which the footnote does not name) keeps 1.0. The
init side of the same recipe (×4 std, W_Q = 0, output projections ÷ √(2L)) lives in the config
(:class:`jaxspectra.models.config.TransformerConfig`).

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jaxspectra.models import get_model, lr_multipliers
  >>> model, cfg = get_model("gpt-tiny", mup=True)
  >>> params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
  >>> m = lr_multipliers(cfg, params)
  >>> m["params"]["block_0"]["attn"]["q"]["kernel"], m["params"]["embed"]["embedding"]
  (16.0, 4.0)
  >>> m["params"]["block_0"]["ln_1"]["scale"]
  1.0
"""

from __future__ import annotations

from typing import Any

import jax

from jaxspectra.groups import layer_index, path_group


def lr_multipliers(config: Any, params: Any) -> Any:
    """A pytree of Python floats shaped like ``params``: the learning-rate multiplier of each leaf.

    With ``config.mup`` true: ``config.mup_lr_block`` on every ≥2-D leaf inside a ``block_<i>``
    (attention, MLP, experts, router), ``config.mup_lr_embed`` on the ``embedding`` group
    (``embed``, ``pos_embed``, ``patch_embed``, ``cls``), 1.0 elsewhere. Without μP (or for
    configs that have no μP fields) every multiplier is 1.0. ``params`` may be the variables
    dict (``{"params": ...}``) or the inner tree, concrete arrays or ``jax.eval_shape`` output.
    """
    mup = bool(getattr(config, "mup", False))

    def mult(path, leaf) -> float:
        if not mup:
            return 1.0
        ndim = len(leaf.shape)
        if layer_index(path) is not None and ndim >= 2:
            return float(config.mup_lr_block)
        if path_group(path, ndim) == "embedding":
            return float(config.mup_lr_embed)
        return 1.0

    return jax.tree_util.tree_map_with_path(mult, params)
