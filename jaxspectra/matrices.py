"""The matrix bank: a parameter tree ↔ stacks of 2-D matrices ↔ same-shape banks, and back.

MSign (paper 003, eq. 14), Manifold Muon (paper 004, App. A) and the spectral monitors (paper
002, Def. 3.1) all act on the *matrices* of a parameter tree, not on its leaves. This module is
the one place that maps between the two, in three pure, exactly invertible steps:

1. **leaf → stack** (:func:`view_of`, :func:`to_stack`, :func:`from_stack`): a leaf
   ``(*lead, m, n)`` (layout of :mod:`jaxspectra.groups`: leading axes are stacked layers or
   experts) becomes a stack ``(N, r, c)`` of N = ∏lead (× 3 for a split fused ``qkv``) matrices,
   optionally turned *tall* (r ≥ c, paper 004's layout) or *wide* (r ≤ c) by transposition. A
   fused ``qkv`` ``(*lead, d, 3d)`` is split into Q, K, V, which become a new
   axis before the matrix axes (``batch_shape = (*lead, 3)``; :func:`jaxspectra.groups.split_qkv`
   is the one split).
2. **stacks → banks** (:func:`plan_banks`, :func:`to_banks`, :func:`from_banks`): stacks with the
   same matrix shape and dtype are concatenated into one bank ``(ΣN, r, c)`` so a batched
   kernel (a matrix sign, a dual-ascent loop, an ``eigvalsh``) runs once per shape; the results
   (any pytree with the bank axis leading) are split back per stack.
3. the caller computes on the banks.

:func:`matrices_of` does step 1 for a whole tree under a mask. Every map is a reshape, a
transpose, a slice or a concatenation, so a round trip returns the input bit for bit
(``tests/test_matrices.py``).

Example:
  >>> import jax.numpy as jnp
  >>> params = {"attn": {"qkv": {"kernel": jnp.ones((4, 12))}, "o": {"kernel": jnp.ones((4, 4))}},
  ...           "mlp": {"fc": {"kernel": jnp.ones((4, 16))}}}
  >>> entries = matrices_of(params, split_qkv=True, orient="tall")
  >>> [(p, v.batch_shape, v.mn) for p, v in entries]
  [('attn/o/kernel', (), (4, 4)), ('attn/qkv/kernel', (3,), (4, 4)), ('mlp/fc/kernel', (), (16, 4))]
  >>> stacks = [to_stack(leaf_at(params, p), v) for p, v in entries]
  >>> plan = plan_banks(stacks)
  >>> [b.shape for b in to_banks(stacks, plan)]
  [(4, 4, 4), (1, 16, 4)]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxspectra import groups

Orient = Literal["tall", "wide"] | None
ORIENTS = ("tall", "wide", None)


# ----------------------------------------------------------------------------------------------
# single matrices
# ----------------------------------------------------------------------------------------------


def mT(x: Any) -> Any:
    """Transpose the last two axes (jnp or NumPy)."""
    return x.swapaxes(-1, -2)


def oriented(x: Any, orient: Orient) -> Any:
    """``x`` (…, m, n) transposed, if needed, so that it is tall (m ≥ n) or wide (m ≤ n).

    ``orient=None`` returns ``x``. Square matrices are never transposed.
    """
    if orient not in ORIENTS:
        raise ValueError(f"unknown orientation {orient!r}; expected one of {list(ORIENTS)}")
    m, n = x.shape[-2], x.shape[-1]
    flip = (orient == "tall" and m < n) or (orient == "wide" and m > n)
    return mT(x) if flip else x


# ----------------------------------------------------------------------------------------------
# leaf ↔ stack
# ----------------------------------------------------------------------------------------------


class MatrixView(NamedTuple):
    """How one leaf maps to a stack ``(N, *mn)`` of matrices and back.

    Attributes:
      shape: the leaf's shape.
      split: a fused qkv split into Q, K, V (a trailing batch axis of 3).
      transposed: the matrices are stored transposed (to meet the orientation).
      batch_shape: the leaf's leading axes, plus ``(3,)`` when ``split`` (N = ∏ batch_shape).
      mn: the shape of each stored matrix.
    """

    shape: tuple[int, ...]
    split: bool
    transposed: bool
    batch_shape: tuple[int, ...]
    mn: tuple[int, int]

    @property
    def n(self) -> int:
        """How many matrices the leaf holds."""
        return math.prod(self.batch_shape)


def is_fused_qkv(path: Any) -> bool:
    """Whether the leaf at ``path`` belongs to a fused ``qkv`` module (:mod:`jaxspectra.groups`)."""
    return groups.module_name(path) == "qkv"


def view_of(
    path: Any, shape: Sequence[int], *, split_qkv: bool = False, orient: Orient = None,
    owner: str = "jaxspectra.matrices",
) -> MatrixView:
    """The :class:`MatrixView` of a leaf of ``shape`` at ``path``.

    Args:
      path: the leaf's path (a key path, tuple or ``a/b/c`` string); only its module name is
        read, to recognise a fused ``qkv``.
      shape: the leaf's shape (≥ 2 dims).
      split_qkv: split a fused ``qkv`` leaf into its Q, K, V matrices.
      orient: ``"tall"``, ``"wide"`` or ``None`` (keep the leaf's orientation).
      owner: who asks (named in the errors).
    """
    shape = tuple(int(d) for d in shape)
    if len(shape) < 2:
        raise ValueError(
            f"{owner} manages matrices, but parameter {groups.path_to_str(path)!r} has shape "
            f"{shape} ({len(shape)}-D); exclude it with a mask (1-D params such as biases and "
            "norm scales are not matrices)"
        )
    if orient not in ORIENTS:
        raise ValueError(f"unknown orientation {orient!r}; expected one of {list(ORIENTS)}")
    rows, cols = shape[-2:]
    lead = shape[:-2]
    split = bool(split_qkv) and is_fused_qkv(path)
    if split:
        if cols % 3:
            raise ValueError(
                f"{owner}: fused qkv {groups.path_to_str(path)!r} has shape {shape}; its last "
                "axis must be 3·d (or leave the qkv fused)"
            )
        cols //= 3
        lead = lead + (3,)
    flip = (orient == "tall" and rows < cols) or (orient == "wide" and rows > cols)
    mn = (cols, rows) if flip else (rows, cols)
    return MatrixView(shape, split, flip, lead, mn)


def to_stack(x: Any, view: MatrixView) -> Any:
    """The leaf ``x`` as a stack ``(view.n, *view.mn)`` (jnp or NumPy; a copy-free reshape
    where the layout allows)."""
    if tuple(x.shape) != view.shape:
        raise ValueError(f"leaf of shape {tuple(x.shape)} does not match its view {view.shape}")
    if view.split:
        xp = np if isinstance(x, np.ndarray) else jnp
        x = xp.stack(groups.split_qkv(x), axis=-3)
    if view.transposed:
        x = mT(x)
    return x.reshape((-1,) + view.mn)


def from_stack(stack: jax.Array, view: MatrixView) -> jax.Array:
    """Inverse of :func:`to_stack`: the stack ``(view.n, *view.mn)`` back in the leaf's shape."""
    x = stack.reshape(view.batch_shape + view.mn)
    if view.transposed:
        x = mT(x)
    if view.split:
        x = groups.merge_qkv(x[..., 0, :, :], x[..., 1, :, :], x[..., 2, :, :])
    return x


def per_matrix(values: jax.Array, view: MatrixView) -> jax.Array:
    """Per-matrix values ``(view.n, *rest)`` reshaped to ``(*view.batch_shape, *rest)``."""
    return values.reshape(view.batch_shape + values.shape[1:])


def matrices_of(
    params: Any,
    mask: Any = None,
    *,
    split_qkv: bool = False,
    orient: Orient = None,
    owner: str = "jaxspectra.matrices",
) -> list[tuple[str, MatrixView]]:
    """``(path, view)`` of every selected leaf of ``params``, in tree-flatten order.

    Args:
      params: a pytree of arrays.
      mask: ``None`` (every leaf, each must be ≥ 2-D), a boolean pytree with ``params``'
        structure, or a callable ``(path_str, leaf) -> bool``.
      split_qkv, orient: see :func:`view_of`.
    """
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    named = [(groups.path_to_str(p), x) for p, x in flat]
    if mask is None:
        flags = [True] * len(named)
    elif callable(mask):
        flags = [bool(mask(p, x)) for p, x in named]
    else:
        flags = [bool(m) for m in treedef.flatten_up_to(mask)]
    return [
        (p, view_of(p, jnp.shape(x), split_qkv=split_qkv, orient=orient, owner=owner))
        for (p, x), f in zip(named, flags)
        if f
    ]


def leaf_at(params: Any, path: str) -> Any:
    """The leaf of ``params`` at the ``a/b/c`` path (as :func:`matrices_of` names it)."""
    for p, x in jax.tree_util.tree_flatten_with_path(params)[0]:
        if groups.path_to_str(p) == path:
            return x
    raise KeyError(f"no leaf at {path!r}")


# ----------------------------------------------------------------------------------------------
# stacks ↔ banks
# ----------------------------------------------------------------------------------------------


class BankPlan(NamedTuple):
    """Which stacks are concatenated into which bank.

    Attributes:
      banks: per bank, the indices of its member stacks (in input order).
      sizes: per stack, its leading size N (so a bank's results can be split back).
    """

    banks: tuple[tuple[int, ...], ...]
    sizes: tuple[int, ...]


def plan_banks(stacks: Sequence[Any], key: Callable[[Any], Any] | None = None) -> BankPlan:
    """Group stacks ``(N_i, r, c)`` into banks of equal ``(r, c)`` and dtype (first-seen order).

    ``key(stack)`` overrides what must be equal (default ``(shape[1:], dtype)``).
    """
    key = key or (lambda s: (tuple(s.shape[1:]), jnp.dtype(s.dtype).name))
    order: dict[Any, list[int]] = {}
    for i, s in enumerate(stacks):
        order.setdefault(key(s), []).append(i)
    return BankPlan(tuple(tuple(v) for v in order.values()), tuple(int(s.shape[0]) for s in stacks))


def to_banks(stacks: Sequence[jax.Array], plan: BankPlan) -> list[jax.Array]:
    """Concatenate the stacks of each bank of ``plan`` on their leading axis."""
    if len(stacks) != len(plan.sizes):
        raise ValueError(f"plan is for {len(plan.sizes)} stacks, got {len(stacks)}")
    out = []
    for members in plan.banks:
        parts = [stacks[i] for i in members]
        out.append(parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=0))
    return out


def from_banks(banked: Sequence[Any], plan: BankPlan) -> list[Any]:
    """Split per-bank results (pytrees whose leaves lead with the bank axis) back per stack."""
    if len(banked) != len(plan.banks):
        raise ValueError(f"plan has {len(plan.banks)} banks, got {len(banked)} results")
    out: list[Any] = [None] * len(plan.sizes)
    for members, res in zip(plan.banks, banked):
        start = 0
        for i in members:
            n = plan.sizes[i]
            out[i] = jax.tree.map(lambda x, a=start, b=start + n: x[a:b], res)
            start += n
    return out


def map_banks(fn: Callable[[jax.Array], Any], stacks: Sequence[jax.Array]) -> list[Any]:
    """``fn`` applied once per bank of same-shape stacks; its results split back per stack."""
    plan = plan_banks(stacks)
    return from_banks([fn(b) for b in to_banks(stacks, plan)], plan)
