"""Heavy-tail metrics of a layer's eigenvalue spectrum (WeightWatcher's, beyond the papers).

For the eigenvalues λ = σ² of WᵀW (ascending, n of them), every candidate x_min = λ_i with at
least ``min_tail`` values at or above it gets the closed-form continuous power-law MLE (Clauset,
Shalizi & Newman 2009, eq. 3.1)

    α_i = 1 + n_i / Σ_{j ≥ i} log(λ_j / λ_i),        n_i = n − i,

and the Kolmogorov–Smirnov distance between the tail's empirical CDF and the fitted
P(x) = 1 − (x/x_min)^{1−α_i}, taken on both sides of each step of the empirical CDF:

    D_i = max_{k=0..n_i−1} max(|P(λ_{i+k}) − k/n_i|, |P(λ_{i+k}) − (k+1)/n_i|).

The fit is the candidate with the smallest D_i (first on ties). All candidates at once: an
(n × n) masked array per matrix, jit/vmap-able (no Python loop; WeightWatcher's ``powerlaw``
backend loops over x_min in Python). Zero eigenvalues are never candidates.

Derived metrics (WeightWatcher's names): ``alpha``; ``alpha_weighted`` = α·log10 λ_max;
``log_spectral_norm`` = log10 λ_max; ``log_norm`` = log10 ‖W‖_F²; ``xmin``, ``ks`` (D) and
``n_tail``.

Example:
  >>> import numpy as np, jax.numpy as jnp
  >>> u = np.random.default_rng(0).uniform(size=2000)
  >>> lam = jnp.asarray((1 - u) ** (-1 / 1.5))  # a pure power law, α = 2.5, x_min = 1
  >>> bool(abs(powerlaw_fit(lam)["alpha"] - 2.5) < 0.15)
  True
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxspectra.linalg import singular_values
from jaxspectra.monitors.spectral import matrix_entries


def powerlaw_fit(eigs: jax.Array, min_tail: int = 10) -> dict[str, jax.Array]:
    """Power-law fit of the values ``eigs`` (…, n) (any order; leading axes batched).

    Returns ``alpha``, ``xmin``, ``ks`` and ``n_tail`` (shape ``eigs.shape[:-1]``); NaN when no
    candidate has ``min_tail`` positive values.
    """
    eigs = jnp.asarray(eigs)
    if eigs.ndim < 1:
        raise ValueError(f"eigs must have a last axis of eigenvalues, got shape {eigs.shape}")
    n = eigs.shape[-1]
    if min_tail < 2:
        raise ValueError(f"min_tail must be ≥ 2, got {min_tail}")
    if eigs.ndim > 1:
        flat = eigs.reshape(-1, n)
        out = jax.vmap(lambda e: powerlaw_fit(e, min_tail))(flat)
        return {k: v.reshape(eigs.shape[:-1]) for k, v in out.items()}
    dt = jnp.float64 if eigs.dtype == jnp.float64 else jnp.float32
    lam = jnp.sort(eigs.astype(dt))
    pos = lam > 0
    loglam = jnp.log(jnp.where(pos, lam, 1.0))
    i = jnp.arange(n)
    n_i = (n - i).astype(dt)
    # Σ_{j≥i} log λ_j by a reverse cumulative sum
    tail_sum = jnp.cumsum(loglam[::-1])[::-1]
    denom = tail_sum - n_i * loglam
    valid = pos & (n - i >= min_tail) & (denom > 0)
    alpha = 1.0 + n_i / jnp.where(valid, denom, 1.0)
    # KS over the (candidate i, value j) grid, j ≥ i
    jj = i[None, :]
    ii = i[:, None]
    in_tail = jj >= ii
    ratio = loglam[None, :] - loglam[:, None]  # log(λ_j/λ_i)
    p = 1.0 - jnp.exp(jnp.where(in_tail, (1.0 - alpha[:, None]) * ratio, 0.0))
    k = (jj - ii).astype(dt)
    lo, hi = k / n_i[:, None], (k + 1.0) / n_i[:, None]
    dev = jnp.maximum(jnp.abs(p - lo), jnp.abs(p - hi))
    ks = jnp.max(jnp.where(in_tail, dev, 0.0), axis=1)
    ks = jnp.where(valid, ks, jnp.inf)
    best = jnp.argmin(ks)
    ok = jnp.isfinite(ks[best])
    nan = jnp.asarray(jnp.nan, dt)
    return {
        "alpha": jnp.where(ok, alpha[best], nan),
        "xmin": jnp.where(ok, lam[best], nan),
        "ks": jnp.where(ok, ks[best], nan),
        "n_tail": jnp.where(ok, n_i[best], 0.0),
    }


def heavy_tail_stats(w: jax.Array, min_tail: int = 10) -> dict[str, jax.Array]:
    """:func:`powerlaw_fit` of the eigenvalues σ² of ``w`` (…, m, n) plus the derived metrics."""
    sv = singular_values(w, method="gram")
    lam = jnp.square(sv)
    fit = powerlaw_fit(lam, min_tail)
    lmax = lam[..., 0]
    fit["log_spectral_norm"] = jnp.log10(lmax)
    fit["alpha_weighted"] = fit["alpha"] * jnp.log10(lmax)
    fit["log_norm"] = jnp.log10(jnp.sum(lam, axis=-1))
    return fit


def heavy_tail_metrics(params: Any, min_tail: int = 10, **entry_kw) -> dict[str, jax.Array]:
    """``heavy_tail/<group>/<where>/<module>/<stat>`` for every monitored matrix of ``params``
    (selection and names as :func:`jaxspectra.monitors.spectral.matrix_entries`)."""
    out = {}
    for prefix, _, x in matrix_entries(params, **entry_kw):
        st = heavy_tail_stats(x, min_tail)
        base = "heavy_tail" + prefix[len("spectral"):]
        if x.ndim == 2:
            out.update({f"{base}/{k}": v for k, v in st.items()})
        else:
            out.update({f"{base}/{k}": jnp.nanmean(v) for k, v in st.items()})
    return out


class HeavyTailMonitor:
    """DeviceMonitor of :func:`heavy_tail_metrics` every ``every`` steps (stacked leaves are
    averaged over their leading axes)."""

    def __init__(self, every: int = 500, min_tail: int = 10, name: str = "heavy_tail"):
        if every < 1:
            raise ValueError(f"every must be ≥ 1, got {every}")
        self.every, self.min_tail, self.name = every, min_tail, name

    def init(self, params: Any) -> Any:
        return ()

    def __call__(self, params: Any, batch: Any, state: Any):
        return heavy_tail_metrics(params, self.min_tail), state
