"""Input validation shared by the theory modules (clear errors that name the argument)."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def is_traced(x: Any) -> bool:
    """True inside ``jit``/``vmap``/``grad`` tracing, where values cannot be inspected."""
    return isinstance(x, jax.core.Tracer)


def check_finite(name: str, x: Any) -> None:
    """Raise ``ValueError`` naming ``name`` if the concrete array ``x`` has a NaN or an inf."""
    if x is None or is_traced(x):
        return
    arr = np.asarray(x)
    if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{name} has {bad} non-finite entr{'y' if bad == 1 else 'ies'} (NaN/inf);"
                         f" pass finite values")


def check_ndim(name: str, x: Any, ndim: int, layout: str) -> None:
    """Raise ``ValueError`` if ``x`` does not have ``ndim`` dimensions (``layout`` says which)."""
    if np.ndim(x) != ndim:
        raise ValueError(f"{name} must be {ndim}-D {layout}, got shape {np.shape(x)}")


def check_params(params: Any, X: Any) -> tuple[int, int, int]:
    """Validate ``params = {"p": (d,), "v": (d,)[, "W": (d, d)]}`` against ``X: (N, n, d)``.

    Returns ``(N, n, d)``.
    """
    check_ndim("X", X, 3, "(N examples, n tokens, d features)")
    N, n, d = np.shape(X)
    if not isinstance(params, dict) or "p" not in params or "v" not in params:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"params must be a dict with keys 'p', 'v' (and optionally 'W'); got {got}")
    unknown = set(params) - {"p", "v", "W"}
    if unknown:
        raise ValueError(f"params has unknown keys {sorted(unknown)}; allowed: 'p', 'v', 'W'")
    for key in ("p", "v"):
        if np.shape(params[key]) != (d,):
            raise ValueError(f"params['{key}'] must have shape (d,) = ({d},) to match X of shape "
                             f"{np.shape(X)}, got {np.shape(params[key])}")
    if "W" in params and params["W"] is not None and np.shape(params["W"]) != (d, d):
        raise ValueError(f"params['W'] must have shape (d, d) = ({d}, {d}), got "
                         f"{np.shape(params['W'])}")
    check_finite("X", X)
    for key, val in params.items():
        check_finite(f"params['{key}']", val)
    return int(N), int(n), int(d)
