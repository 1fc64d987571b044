"""Parameter naming convention and the map from a parameter's path to its group.

Every model in :mod:`jaxspectra.models` names its parameters so that optimisers and monitors can
tell modules apart from the path alone (no model object needed):

============  ==========================================================================
group         modules (the name of the Flax module that owns the leaf)
============  ==========================================================================
attention     ``q``, ``k``, ``v``, ``o`` (output projection) or a fused ``qkv``
mlp           ``fc`` / ``proj`` (standard MLP) or ``gate`` / ``up`` / ``down`` (SwiGLU);
              MoE experts use the same names under a ``moe`` scope, stacked on a leading
              expert axis; the MoE router is ``router`` (group ``other``)
embedding     ``embed`` (tokens), ``pos_embed`` (learned positions), ``patch_embed``,
              ``cls`` (a learned [CLS] token)
head          ``head`` (the output / LM head; absent when tied to ``embed``)
norm          any leaf under a module whose name starts with ``norm`` or ``ln``
other_1d      every other 1-D (or 0-D) leaf: biases, gains, scalars
other         every other leaf of two or more dimensions (e.g. a fixed ``W_C``, a router)
============  ==========================================================================

Conventions the optimisers rely on:

* A dense kernel has shape ``(..., fan_in, fan_out)`` (Flax's layout, ``optax.contrib.muon``'s
  default ``MuonDimensionNumbers(reduction_axis=0, output_axis=1)`` for 2-D leaves); leading axes
  (stacked layers, experts) are batch axes.
* A fused ``qkv`` kernel is ``(d_model, 3 * d_model)`` with Q, K, V concatenated on the last axis
  in that order (:func:`split_qkv` / :func:`merge_qkv`).
* The projection that writes into the residual stream is ``o`` in attention and ``proj`` / ``down``
  in the MLP (μP scales their init by 1/√(2·n_layers)).

Example:
  >>> path_group(("params", "block_3", "attn", "qkv", "kernel"), ndim=2)
  'attention'
  >>> path_group("params/block_0/mlp/fc/kernel", ndim=2)
  'mlp'
  >>> path_group("params/ln_f/scale", ndim=1)
  'norm'
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

ATTENTION_NAMES = frozenset({"q", "k", "v", "o", "qkv"})
MLP_NAMES = frozenset({"fc", "proj", "gate", "up", "down"})
EMBEDDING_NAMES = frozenset({"embed", "pos_embed", "patch_embed", "cls"})
HEAD_NAMES = frozenset({"head"})
GROUPS = ("attention", "mlp", "embedding", "head", "norm", "other_1d", "other")

# Leaf names that are not modules (Flax's parameter names inside a module).
_LEAF_NAMES = frozenset({"kernel", "bias", "scale", "embedding", "w", "b"})


def path_to_str(path: Any) -> str:
    """Render a pytree key path (``jax.tree_util`` keys or a tuple of str) as ``a/b/c``."""
    if isinstance(path, str):
        return path
    parts = []
    for k in path:
        if isinstance(k, jax.tree_util.DictKey):
            parts.append(str(k.key))
        elif isinstance(k, jax.tree_util.GetAttrKey):
            parts.append(str(k.name))
        elif isinstance(k, jax.tree_util.SequenceKey):
            parts.append(str(k.idx))
        elif isinstance(k, jax.tree_util.FlattenedIndexKey):
            parts.append(str(k.key))
        else:
            parts.append(str(k))
    return "/".join(parts)


def _parts(path: Any) -> list[str]:
    return [p for p in path_to_str(path).split("/") if p]


def path_group(path: Any, ndim: int) -> str:
    """Return the group (one of :data:`GROUPS`) of the leaf at ``path`` with ``ndim`` dims.

    Args:
      path: a ``jax.tree_util`` key path, a tuple of names, or a ``/``-joined string.
      ndim: number of dimensions of the leaf.
    """
    parts = _parts(path)
    modules = [p for p in parts if p not in _LEAF_NAMES]
    owner = modules[-1] if modules else ""
    if any(m.startswith(("norm", "ln")) for m in modules):
        return "norm"
    if ndim < 2:
        return "other_1d"
    if owner in ATTENTION_NAMES:
        return "attention"
    if owner in MLP_NAMES:
        return "mlp"
    if owner in EMBEDDING_NAMES:
        return "embedding"
    if owner in HEAD_NAMES:
        return "head"
    return "other"


def module_name(path: Any) -> str:
    """The name of the module that owns the leaf (``q``, ``fc``, ``embed``, ...)."""
    modules = [p for p in _parts(path) if p not in _LEAF_NAMES]
    return modules[-1] if modules else ""


def layer_index(path: Any) -> int | None:
    """The block index of a leaf under ``block_<i>`` (``None`` outside the blocks)."""
    for p in _parts(path):
        if p.startswith("block_") and p[6:].isdigit():
            return int(p[6:])
    return None


def tree_groups(params: Any) -> Any:
    """A pytree of the same structure as ``params`` holding each leaf's group name."""
    return jax.tree_util.tree_map_with_path(lambda p, x: path_group(p, jnp.ndim(x)), params)


def group_mask(params: Any, groups: str | Sequence[str]) -> Any:
    """Boolean pytree: True where the leaf's group is in ``groups`` (for ``optax.masked``)."""
    wanted = {groups} if isinstance(groups, str) else set(groups)
    unknown = wanted - set(GROUPS)
    if unknown:
        raise ValueError(f"unknown parameter group(s) {sorted(unknown)}; known: {list(GROUPS)}")
    return jax.tree_util.tree_map_with_path(
        lambda p, x: path_group(p, jnp.ndim(x)) in wanted, params
    )


def path_mask(params: Any, predicate: Callable[[str, Any], bool]) -> Any:
    """Boolean pytree from ``predicate(path_str, leaf)``."""
    return jax.tree_util.tree_map_with_path(lambda p, x: bool(predicate(path_to_str(p), x)), params)


def split_qkv(kernel: Any) -> tuple[Any, Any, Any]:
    """Split a fused ``(..., d, 3d)`` qkv kernel into its Q, K and V parts (slices: a jnp
    kernel gives jnp parts, a NumPy kernel NumPy views)."""
    if kernel.shape[-1] % 3:
        raise ValueError(f"a fused qkv kernel needs a last axis divisible by 3, got {kernel.shape}")
    d = kernel.shape[-1] // 3
    return kernel[..., :d], kernel[..., d : 2 * d], kernel[..., 2 * d :]


def merge_qkv(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """Inverse of :func:`split_qkv`."""
    return jnp.concatenate([q, k, v], axis=-1)
