"""Jacobian monitor (paper 003 §3–4): per-block input→output Jacobians by ``jvp``/``vjp``.

For a fixed probe batch with residual streams h⁽⁰⁾ (after the embedding), …, h⁽ᴸ⁾, block ℓ's
Jacobian J⁽ℓ⁾ = ∂h⁽ℓ⁾/∂h⁽ℓ⁻¹⁾ acts on the whole ``[B, T, d]`` stream. It is never materialised:
``jax.linearize`` gives v ↦ J v and ``jax.vjp`` u ↦ Jᵀu, and
:func:`jaxspectra.linalg.power_iteration` finds the top singular triple (σ₁, u₁, v₁). Recorded:

* ``jacobian/block_<ℓ>/norm`` = ‖J⁽ℓ⁾‖₂ (a lower bound converging at rate (σ₂/σ₁)^(2·iters));
* ``jacobian/block_<ℓ>/align_next`` = Align(ℓ+1, ℓ) = |v₁(J⁽ℓ⁺¹⁾)ᵀ u₁(J⁽ℓ⁾)| (Def. 3.2);
* ``jacobian/mean_align`` (Fig. 1 right: mean adjacent alignment) and
  ``jacobian/early_srank_geomean`` (Fig. 1 left: geometric mean of the stable rank of the 2-D
  weights of the first ``early_layers`` blocks, :func:`jaxspectra.linalg.stable_rank_power`);
* ``jacobian/total_norm`` = ‖J⁽ᴸ⁾⋯J⁽¹⁾‖₂ (power iteration through the composed blocks) beside
  ``jacobian/thm42_bound`` = (aM)ᴸ/a with M = min_ℓ ‖J⁽ℓ⁾‖₂, a = min_ℓ Align(ℓ+1, ℓ).

Theorem 4.2 (‖J_total‖ ≥ (aM)ᴸ/a) is **false in general**: u = (1,1)/√2, v = (1,−1)/√2,
J₁ = 2ue₁ᵀ, J₂ = diag(2,1), J₃ = 2e₁vᵀ have M = 2, a = 1/√2, bound 4 but ‖J₃J₂J₁‖ = 2 (the
proof uses Align(L, L−1) where it needs the alignment with the whole product). So the measured
norm is always recorded beside the bound, never the bound alone
(``tests/monitors/test_jacobian.py`` runs the counterexample through :func:`chain_jacobian_stats`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxspectra import groups as G
from jaxspectra.linalg import power_iteration, stable_rank_power


def _top_triple(f: Callable, x: jax.Array, iters: int, key: jax.Array):
    y, jvp = jax.linearize(f, x)
    _, vjp = jax.vjp(f, x)
    sigma, u, v = power_iteration(jvp, lambda c: vjp(c)[0], x.shape, iters, key=key,
                                  dtype=x.dtype)
    return y, sigma, u, v


def thm42_bound(norms: jax.Array, aligns: jax.Array) -> jax.Array:
    """(aM)ᴸ/a of paper 003 Thm 4.2 with M = min ‖J⁽ℓ⁾‖, a = min Align (L = len(norms))."""
    m, a = jnp.min(norms), jnp.min(aligns)
    return (a * m) ** norms.shape[0] / a


def chain_jacobian_stats(fns: Sequence[Callable], x0: jax.Array, iters: int = 30,
                         key: jax.Array | None = None) -> dict[str, jax.Array]:
    """Stats of the chain x⁽ℓ⁾ = fns[ℓ−1](x⁽ℓ⁻¹⁾): ``norms`` (L,), ``aligns`` (L−1,) with
    ``aligns[ℓ]`` = Align(ℓ+1, ℓ) (0-based: between fns[ℓ] and fns[ℓ+1]), ``total_norm``,
    ``thm42_bound`` and the singular vectors ``u``, ``v`` (lists)."""
    if len(fns) < 1:
        raise ValueError("chain_jacobian_stats needs at least one map")
    key = jax.random.PRNGKey(0) if key is None else key
    keys = jax.random.split(key, len(fns) + 1)
    x = x0
    norms, us, vs = [], [], []
    for f, k in zip(fns, keys[:-1]):
        y, s, u, v = _top_triple(f, x, iters, k)
        norms.append(s)
        us.append(u)
        vs.append(v)
        x = y

    def total(z):
        for f in fns:
            z = f(z)
        return z

    _, tot, _, _ = _top_triple(total, x0, iters, keys[-1])
    norms_a = jnp.stack(norms)
    aligns = jnp.stack([jnp.abs(jnp.vdot(vs[i + 1], us[i])) for i in range(len(fns) - 1)]) \
        if len(fns) > 1 else jnp.zeros((0,), norms_a.dtype)
    bound = thm42_bound(norms_a, aligns) if len(fns) > 1 else norms_a[0]
    return {"norms": norms_a, "aligns": aligns, "total_norm": tot, "thm42_bound": bound,
            "u": us, "v": vs}


def early_srank_geomean(params: Any, early_layers: int, iters: int = 30) -> jax.Array:
    """Geometric mean of the stable rank of the ≥2-D weights in ``block_0 … block_{early−1}``
    (paper 003 Fig. 1 left)."""
    logs = []
    for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
        layer = G.layer_index(path)
        if x.ndim >= 2 and layer is not None and layer < early_layers:
            logs.append(jnp.log(stable_rank_power(x, iters)).reshape(-1))
    if not logs:
        return jnp.asarray(jnp.nan, jnp.float32)
    return jnp.exp(jnp.mean(jnp.concatenate(logs)))


def model_block_maps(module: Any, params: Any, n_layers: int) -> list[Callable]:
    """``h ↦ block(h, ℓ)`` for a :mod:`jaxspectra.models` model (its ``block`` method)."""
    return [lambda h, i=i: module.apply(params, h, i, method="block") for i in range(n_layers)]


def jvp_safe(module: Any) -> Any:
    """The model with its attention on the XLA path when it is configured otherwise.

    cuDNN's fused attention is a ``custom_vjp`` function: it has no forward-mode rule, so the
    ``jax.jvp`` of a block fails on a GPU. The probe is small, so XLA attention costs little.
    """
    cfg = getattr(module, "config", None)
    if cfg is not None and getattr(cfg, "attention_impl", "xla") != "xla":
        return module.clone(config=dataclasses.replace(cfg, attention_impl="xla"))
    return module


def jacobian_metrics(module: Any, params: Any, tokens: jax.Array, n_layers: int,
                     iters: int = 30, early_layers: int | None = None,
                     key: jax.Array | None = None) -> dict[str, jax.Array]:
    """The monitor's metrics (module docstring) for token probe ``tokens`` [B, T]."""
    module = jvp_safe(module)
    h0 = module.apply(params, tokens, method="embed")
    st = chain_jacobian_stats(model_block_maps(module, params, n_layers), h0, iters, key)
    out = {f"jacobian/block_{i}/norm": st["norms"][i] for i in range(n_layers)}
    out.update({f"jacobian/block_{i}/align_next": st["aligns"][i] for i in range(n_layers - 1)})
    out["jacobian/total_norm"] = st["total_norm"]
    out["jacobian/thm42_bound"] = st["thm42_bound"]
    out["jacobian/mean_align"] = (jnp.mean(st["aligns"]) if n_layers > 1
                                  else jnp.asarray(jnp.nan, jnp.float32))
    early = early_layers if early_layers is not None else max(1, math.ceil(n_layers / 3))
    out["jacobian/early_srank_geomean"] = early_srank_geomean(params, early)
    return out


class JacobianMonitor:
    """DeviceMonitor: :func:`jacobian_metrics` on a fixed probe batch every ``every`` steps.

    Cost per call ≈ (L + 1)·``iters`` forward-mode + reverse-mode passes of a block (the total
    norm iterates through all L blocks): see ``benchmarks/bench_monitors.py``.
    """

    def __init__(self, module: Any, probe: jax.Array, n_layers: int, every: int = 500,
                 iters: int = 20, early_layers: int | None = None, name: str = "jacobian"):
        if every < 1:
            raise ValueError(f"every must be ≥ 1, got {every}")
        self.module, self.probe, self.n_layers = module, probe, n_layers
        self.every, self.iters, self.early_layers, self.name = every, iters, early_layers, name

    def init(self, params: Any) -> Any:
        return ()

    def __call__(self, params: Any, batch: Any, state: Any):
        return jacobian_metrics(self.module, params, self.probe, self.n_layers, self.iters,
                                self.early_layers), state
