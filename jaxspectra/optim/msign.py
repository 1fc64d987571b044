"""MSign (paper 003, Algorithm 1, eq. 13–14) and adaptive MSign, as an optax transformation.

MSign periodically replaces each targeted weight matrix by its matrix sign, rescaled to keep the
Frobenius norm (eq. 14)::

    W ← ‖W‖_F · sign(W) / ‖sign(W)‖_F          every ``period`` steps (Algorithm 1)

Algorithm 1 applies it to θ *after* the base optimiser's step. As an optax transformation placed
**last** in a chain, :func:`msign` receives the base update u and the params W and returns

    u' = R(W + u) − W   on trigger steps (``count % period == 0``, count = updates so far),
    u' = u              otherwise,

so that ``optax.apply_updates(W, u')`` is the restored matrix R(W + u) (computed in float32 and
cast back to the update's dtype). ``sign`` is :func:`jaxspectra.linalg.matrix_sign` (Def. 5.1:
a partial isometry; ``method="auto"`` is its ``mixed`` route — accurate to 1e-4 on every
singular value above the rank threshold, bf16×3 Grams with float32 products, the residual checked
on the device and an SVD fallback only for the matrices that fail it, so a rank-r matrix comes
back with stable rank r). A zero matrix stays zero (R(0) = 0, no 0/0:
W_Q is zero-initialised and the LR is 0 at step 0, where the first trigger fires).

Targets (:func:`msign_targets`): presets ``all_2d`` (every parameter with ≥ 2 dims, embeddings
and head included: paper 003's "All 2D"), ``blocks`` (attention and MLP projections),
``attention``, ``mlp`` (groups of :mod:`jaxspectra.groups`), a sequence of presets (union), a
boolean mask pytree, or a callable ``(path_str, leaf) -> bool``. Leaves with more than two dims
(stacked layers, MoE experts) are batches of matrices over their leading axes. A fused ``qkv``
kernel ``(…, d, 3d)`` is restored as its Q, K and V parts (paper 003's cost model counts them
separately; ``split_qkv=False`` restores it whole).

Cost: same-shape matrices of all targets are signed in one batched call (wide orientation, so
fc ``768×3072`` and proj ``3072×768`` share a batch; :mod:`jaxspectra.matrices` builds the
banks); the restoration sits in a ``lax.cond``, so non-trigger steps cost only the predicate. Under ``vmap`` a ``cond`` becomes a ``select`` and
both branches run on every step: sweep ``period`` in a Python loop (or ``jax.lax.map``), never
by vmapping a traced period or step count.

**Adaptive MSign** (``adaptive=True``; paper 003's stated future work): every ``check_every``
steps each target matrix's stable rank is estimated by power iteration
(:func:`jaxspectra.linalg.stable_rank_power`, ``power_iters`` steps, an upper bound). A matrix
is restored when its estimate falls below ``tau`` × its reference: the stable rank just after
its last restoration, or — before its first restoration — the first non-zero estimate
(zero-initialised matrices get a reference once they move). The expensive sign runs only when
some matrix triggers (a second ``lax.cond``); restorations are counted in the state.

Example:
  >>> import jax.numpy as jnp, optax
  >>> params = {"block_0": {"attn": {"o": {"kernel": jnp.diag(jnp.array([4.0, 1.0, 0.0]))}}}}
  >>> tx = optax.chain(optax.sgd(0.0), msign(period=10, targets="attention", method="svd"))
  >>> state = tx.init(params)
  >>> u, state = tx.update(params, state, params)   # step 0: restores
  >>> w = optax.apply_updates(params, u)["block_0"]["attn"]["o"]["kernel"]
  >>> [round(float(x), 4) for x in jnp.diag(w)]        # ‖W‖_F = √17 spread over rank 2
  [2.9155, 2.9155, 0.0]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from jaxspectra import groups, linalg, matrices

PRESETS = {
    "all_2d": None,  # every leaf with ndim >= 2
    "blocks": ("attention", "mlp"),
    "attention": ("attention",),
    "mlp": ("mlp",),
}


class MSignState(NamedTuple):
    """State of :func:`msign`.

    Attributes:
      count: number of updates so far (the trigger reads it before incrementing).
      restorations: total matrix restorations so far (a fused qkv counts 3, a stack of L
        layers L; zero matrices are not counted).
      restored: per target path, restorations of each of its matrices (int32, flat over the
        leaf's batch axes and its Q/K/V parts).
      srank_ref: per target path, each matrix's adaptive reference stable rank (0 = not set
        yet; unused unless ``adaptive``).
    """

    count: jax.Array
    restorations: jax.Array
    restored: dict[str, jax.Array]
    srank_ref: dict[str, jax.Array]


Targets = str | Sequence[str] | Callable[[str, Any], bool] | Any


def _leaves_with_paths(params: Any) -> tuple[list[tuple[str, Any]], Any]:
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    return [(groups.path_to_str(p), x) for p, x in flat], treedef


def msign_targets(params: Any, targets: Targets = "all_2d") -> Any:
    """Boolean pytree (``params``' structure): True where MSign restores the leaf.

    Raises ``ValueError`` for an unknown preset, a target that matches no parameter, a targeted
    leaf with fewer than 2 dims (naming its path), or a mask of the wrong structure.
    """
    named, treedef = _leaves_with_paths(params)
    if not named:
        raise ValueError("msign: params has no leaves")
    if isinstance(targets, str) or (
        isinstance(targets, Sequence) and targets and all(isinstance(t, str) for t in targets)
    ):
        names = [targets] if isinstance(targets, str) else list(targets)
        unknown = [t for t in names if t not in PRESETS]
        if unknown:
            raise ValueError(
                f"unknown msign target preset(s) {unknown}; known: {list(PRESETS)} "
                "(or pass a boolean mask pytree or a callable (path, leaf) -> bool)"
            )
        flags = [False] * len(named)
        for name in names:
            wanted = PRESETS[name]
            hits = [
                jnp.ndim(x) >= 2 and (wanted is None or groups.path_group(p, jnp.ndim(x)) in wanted)
                for p, x in named
            ]
            if not any(hits):
                raise ValueError(
                    f"msign targets={name!r} matches no parameter; parameter paths: "
                    f"{[p for p, _ in named][:20]}"
                )
            flags = [a or b for a, b in zip(flags, hits)]
    elif callable(targets):
        flags = [bool(targets(p, x)) for p, x in named]
        _check_flags(named, flags, "the targets callable")
    else:
        try:
            mask_leaves = treedef.flatten_up_to(targets)
        except (ValueError, TypeError) as e:
            raise ValueError(
                "msign targets must be a preset name, a list of presets, a callable "
                f"(path, leaf) -> bool or a boolean mask with params' structure: {e}"
            ) from e
        flags = [bool(m) for m in mask_leaves]
        _check_flags(named, flags, "the targets mask")
    return jax.tree_util.tree_unflatten(treedef, flags)


def _check_flags(named: list[tuple[str, Any]], flags: list[bool], what: str) -> None:
    if not any(flags):
        raise ValueError(f"msign: {what} selects no parameter")
    for (p, x), f in zip(named, flags):
        if f and jnp.ndim(x) < 2:
            raise ValueError(
                f"msign target {p!r} has shape {jnp.shape(x)}: the matrix sign needs a leaf with "
                "at least 2 dims (exclude 1-D parameters such as biases and norm scales)"
            )


# ---------------------------------------------------------------------------------------------
# matrices of a leaf
# ---------------------------------------------------------------------------------------------


def _view(path: str, shape: tuple[int, ...], split: bool) -> matrices.MatrixView:
    """The leaf's matrices in their own orientation (Q/K/V parts on a batch axis if split)."""
    return matrices.view_of(path, shape, split_qkv=split, owner="msign")


def n_matrices(path: str, shape: tuple[int, ...], split_qkv: bool = True) -> int:
    """How many matrices MSign restores in a leaf of this path and shape."""
    return _view(path, tuple(shape), split_qkv).n


def _restore_bank(x: jax.Array, method: str, sign_kwargs: dict[str, Any]) -> jax.Array:
    """R(X) = ‖X‖_F · sign(X) / ‖sign(X)‖_F (eq. 14) for a bank ``(n, m, k)`` (float32)."""
    s = linalg.matrix_sign(x, method, **sign_kwargs).astype(jnp.float32)
    fx = jnp.sqrt(jnp.sum(jnp.square(x), axis=(-2, -1), keepdims=True))
    fs = jnp.sqrt(jnp.sum(jnp.square(s), axis=(-2, -1), keepdims=True))
    return s * jnp.where(fs > 0, fx / jnp.where(fs > 0, fs, 1.0), 0.0)


def restore(
    mats: dict[str, jax.Array], method: str = "auto", **sign_kwargs: Any
) -> dict[str, jax.Array]:
    """R(X) = ‖X‖_F · sign(X) / ‖sign(X)‖_F per matrix (eq. 14) for a dict of (n, m, k) stacks.

    Same-shape matrices (after turning tall ones wide) are signed in one batched call
    (:func:`jaxspectra.matrices.map_banks`).
    """
    keys = list(mats)
    wide = [matrices.oriented(mats[k], "wide") for k in keys]
    out = matrices.map_banks(lambda x: _restore_bank(x, method, sign_kwargs), wide)
    return {k: r if r.shape == mats[k].shape else matrices.mT(r) for k, r in zip(keys, out)}


def _srank_est(mats: jax.Array, iters: int) -> jax.Array:
    return linalg.stable_rank_power(mats, iters=iters)


# ---------------------------------------------------------------------------------------------
# the transformation
# ---------------------------------------------------------------------------------------------


def msign(
    period: int = 100,
    targets: Targets = "all_2d",
    method: str = "auto",
    adaptive: bool = False,
    check_every: int = 10,
    tau: float = 0.5,
    *,
    power_iters: int = 20,
    split_qkv: bool = True,
    sign_kwargs: dict[str, Any] | None = None,
) -> optax.GradientTransformation:
    """MSign (paper 003, Alg. 1, eq. 14) as the last element of an optax chain.

    Args:
      period: restore on steps with ``count % period == 0`` (count = updates applied so far, so
        the first update fires). Ignored when ``adaptive``.
      targets: see :func:`msign_targets`.
      method: :func:`jaxspectra.linalg.matrix_sign` method (``"auto"``: its ``mixed`` route,
        1e-4 with a per-matrix SVD fallback; ``"polar_express"``: bf16, ~1e-2, cheapest;
        ``"svd"`` is Algorithm 1 verbatim).
      adaptive: restore per matrix when its stable rank falls below ``tau`` × its reference
        (checked every ``check_every`` steps; see the module docstring).
      power_iters: power-iteration steps of the adaptive stable-rank estimate.
      split_qkv: restore a fused ``qkv`` kernel as its Q, K, V parts.
      sign_kwargs: extra keyword arguments of ``matrix_sign`` (``steps``, ``compute_dtype``, …).

    ``update(updates, state, params)`` requires ``params``.
    """
    for name, val in (("period", period), ("check_every", check_every)):
        if isinstance(val, bool) or not isinstance(val, int) or val <= 0:
            raise ValueError(f"msign {name} must be a positive int, got {val!r}")
    if method not in linalg.SIGN_METHODS:
        raise ValueError(f"unknown msign method {method!r}; known: {list(linalg.SIGN_METHODS)}")
    if not 0.0 < tau <= 1.0:
        raise ValueError(f"msign tau must be in (0, 1], got {tau!r}")
    if not isinstance(power_iters, int) or power_iters < 1:
        raise ValueError(f"msign power_iters must be a positive int, got {power_iters!r}")
    kw = dict(sign_kwargs or {})

    def target_paths(params: Any) -> tuple[list[tuple[str, Any, bool]], Any]:
        mask = msign_targets(params, targets)
        named, treedef = _leaves_with_paths(params)
        flags = treedef.flatten_up_to(mask)
        return [(p, x, bool(f)) for (p, x), f in zip(named, flags)], treedef

    def init_fn(params: Any) -> MSignState:
        leaves, _ = target_paths(params)
        counts = {
            p: jnp.zeros((n_matrices(p, jnp.shape(x), split_qkv),), jnp.int32)
            for p, x, f in leaves
            if f
        }
        refs = {p: jnp.zeros(c.shape, jnp.float32) for p, c in counts.items()}
        return MSignState(jnp.zeros([], jnp.int32), jnp.zeros([], jnp.int32), counts, refs)

    def update_fn(updates: Any, state: MSignState, params: Any = None) -> tuple[Any, MSignState]:
        if params is None:
            raise ValueError(
                "msign needs params: call tx.update(updates, state, params) (and place msign "
                "last in the chain)"
            )
        leaves, treedef = target_paths(params)
        u_leaves = treedef.flatten_up_to(updates)
        views = {p: _view(p, jnp.shape(x), split_qkv) for p, x, f in leaves if f}
        new_mats = {
            p: matrices.to_stack(x.astype(jnp.float32) + u.astype(jnp.float32), views[p])
            for (p, x, f), u in zip(leaves, u_leaves)
            if f
        }
        if set(new_mats) != set(state.restored):
            raise ValueError(
                "msign: the targeted parameters changed since init: "
                f"{sorted(set(new_mats) ^ set(state.restored))}"
            )
        nonzero = {p: jnp.any(m != 0, axis=(-2, -1)) for p, m in new_mats.items()}
        u_by_path = {p: u for (p, _, f), u in zip(leaves, u_leaves) if f}
        x_by_path = {p: x for p, x, f in leaves if f}

        def restored_updates(mats, select=None):
            """u' = R(W + u) − W on the selected matrices, u (bit for bit) elsewhere."""
            r = restore(mats, method, **kw)
            out = {}
            for p, rm in r.items():
                x, u = x_by_path[p], u_by_path[p]
                delta = (matrices.from_stack(rm, views[p]) - x.astype(jnp.float32)).astype(u.dtype)
                if select is None:
                    out[p] = delta
                else:
                    sel = jnp.broadcast_to(select[p][:, None, None], rm.shape)
                    out[p] = jnp.where(matrices.from_stack(sel, views[p]), delta, u)
            return out, r

        if not adaptive:
            fire = state.count % period == 0
            new_u = lax.cond(
                fire, lambda m: restored_updates(m)[0], lambda m: dict(u_by_path), new_mats
            )
            did = {p: (nonzero[p] & fire).astype(jnp.int32) for p in new_mats}
            refs = state.srank_ref
        else:
            check = state.count % check_every == 0

            def do_check(args):
                mats, refs = args
                est = {p: _srank_est(m, power_iters) for p, m in mats.items()}
                trig = {p: (refs[p] > 0) & (est[p] < tau * refs[p]) for p in mats}
                any_trig = jnp.any(jnp.stack([jnp.any(t) for t in trig.values()]))

                def fire_branch(mats):
                    new_u, r = restored_updates(mats, trig)
                    return new_u, {p: _srank_est(r[p], power_iters) for p in r}

                new_u, est_after = lax.cond(
                    any_trig, fire_branch, lambda m: (dict(u_by_path), est), mats
                )
                new_refs = {
                    p: jnp.where(
                        trig[p], est_after[p], jnp.where(refs[p] > 0, refs[p], est[p])
                    ).astype(jnp.float32)
                    for p in mats
                }
                did = {p: (trig[p] & nonzero[p]).astype(jnp.int32) for p in mats}
                return new_u, new_refs, did

            def no_check(args):
                mats, refs = args
                zeros = {p: jnp.zeros(refs[p].shape, jnp.int32) for p in mats}
                return dict(u_by_path), refs, zeros

            new_u, refs, did = lax.cond(check, do_check, no_check, (new_mats, state.srank_ref))

        out = [new_u[p] if f else u for (p, _, f), u in zip(leaves, u_leaves)]
        counts = {p: state.restored[p] + did[p] for p in did}
        total = state.restorations + sum(jnp.sum(d) for d in did.values())
        new_state = MSignState(state.count + 1, total.astype(jnp.int32), counts, refs)
        return jax.tree_util.tree_unflatten(treedef, out), new_state

    return optax.GradientTransformation(init_fn, update_fn)
