"""Paper 003's cost model for MSign (§5.3 eqs. 15–17, App. A.3 Table 5, App. A.4 eqs. 18–19).

FLOP model per transformer layer (hidden ``d``, MLP ``4d``, batch ``B``, sequence ``T``):

* SVD of an ``m×n`` matrix: ``2mn·min(m, n) + 11·min(m, n)³`` (Table 5's footnote, Trefethen & Bau):
  ``13d³`` for ``d×d``, ``19d³`` for ``d×4d``;
* MSign per application: attention ``4×13d³ = 52d³`` (W_Q, W_K, W_V, W_O), MLP ``2×19d³ = 38d³``,
  all 2-D ``90d³``;
* a training step: ``72BTd² + 12BT²d`` (the ``O(BT² + BTd)`` terms dropped, as the paper's
  example does);
* overhead ratio (eq. 15) ``R = FLOPs_MSign / (FLOPs_step · P)`` at period ``P``; eq. 16 is the
  all-2-D case, but the worked example (eq. 17: B = 16, T = 1024, d = 2048, P = 100) uses the
  attention-only ``52d³`` — ``4.47e11 / (5.36e12 · 100) ≈ 0.08 %`` (:func:`overhead_ratio`).

Table 1's "theoretical overhead" row (eq. 16 at P = 100, B = tokens/T from Table 4) is reproduced
by :func:`table1_theoretical`: NanoGPT-5M 0.0003 %, Sigma-40M 0.0007 % (both "< 0.01 %"),
LLaMA-1B 0.033 % ("0.03 %", the all-2-D 90d³ template, not its real 5440-wide SwiGLU, which gives
0.037 %), LLaMA-MoE-3B 0.092 % ("0.09 %") only when the sign is taken of all 16 experts' three
2048×1360 matrices (two per expert give 0.068 %), over the dense step FLOPs.

Throughput model (App. A.4, eq. 18): ``T(P) = T∞ / (1 + r/P)``, fitted by least squares on the
linearised ``1/T = 1/T∞ + (r/T∞)/P`` (:func:`fit_throughput`). On Table 3's Sigma-40M points it
gives ``T∞ = 25 319``, ``r = 3.88`` — the paper prints 25 350 and 3.9 (its predicted row matches
T∞ = 25 350, r ≈ 3.87; the two agree to 0.12 %).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TARGETS = ("attention", "mlp", "all_2d")

#: Table 3 / App. A.4: Sigma-40M throughput (tokens/s) at P = 10, 100, 1000, 10000.
SIGMA40M_P = (10, 100, 1000, 10000)
SIGMA40M_THROUGHPUT = (18236.0, 24559.0, 25082.0, 25270.0)


def _positive(**kw: float) -> None:
    for k, v in kw.items():
        if not v > 0:
            raise ValueError(f"{k} must be > 0, got {v}")


def svd_flops(m: int, n: int) -> float:
    """``2mn·min(m, n) + 11·min(m, n)³`` (Table 5's footnote)."""
    _positive(m=m, n=n)
    k = min(m, n)
    return float(2 * m * n * k + 11 * k**3)


def msign_flops_per_layer(d: int, targets: str = "attention") -> float:
    """MSign FLOPs per application per layer (Table 5): 52d³, 38d³ or 90d³."""
    if targets not in TARGETS:
        raise ValueError(f"targets must be one of {TARGETS}, got {targets!r}")
    attn = 4 * svd_flops(d, d)
    mlp = 2 * svd_flops(d, 4 * d)
    return {"attention": attn, "mlp": mlp, "all_2d": attn + mlp}[targets]


def step_flops_per_layer(batch: int, seq: int, d: int) -> float:
    """Training-step FLOPs per layer, ``72BTd² + 12BT²d`` (Table 5, lower-order terms dropped)."""
    _positive(batch=batch, seq=seq, d=d)
    return float(72 * batch * seq * d**2 + 12 * batch * seq**2 * d)


def overhead_ratio(d: int, batch: int, seq: int, period: int, targets: str = "attention") -> float:
    """Eq. 15: ``R = FLOPs_MSign / (FLOPs_step · P)`` (per layer; the layer count cancels)."""
    _positive(period=period)
    return msign_flops_per_layer(d, targets) / (step_flops_per_layer(batch, seq, d) * period)


def msign_flops(shapes: Sequence[tuple[int, int]]) -> float:
    """MSign FLOPs of one application to matrices of the given shapes (Σ :func:`svd_flops`)."""
    return float(sum(svd_flops(m, n) for m, n in shapes))


#: Table 4: (hidden d, sequence T, tokens per batch) per model of Table 1.
TABLE4 = {"NanoGPT-5M": (48, 256, 123_000), "Sigma-40M": (128, 2048, 66_000),
          "LLaMA-1B": (2048, 2048, 66_000), "LLaMA-MoE-3B": (2048, 2048, 66_000)}


def table1_theoretical(period: int = 100) -> dict[str, float]:
    """Table 1's "Theoretical Overhead (Eq. (16))" row, as a fraction, per model (see module doc).

    Dense models: the all-2-D template 90d³ over ``72BTd² + 12BT²d``; the MoE: attention 52d³ plus
    16 experts × 3 matrices of 2048×1360 (Table 4), over the same dense step FLOPs.
    """
    out = {}
    for name, (d, seq, tokens) in TABLE4.items():
        batch = tokens / seq
        if name == "LLaMA-MoE-3B":
            num = msign_flops_per_layer(d, "attention") + msign_flops([(d, 1360)] * 48)
        else:
            num = msign_flops_per_layer(d, "all_2d")
        out[name] = num / (step_flops_per_layer(batch, seq, d) * period)
    return out


def throughput_model(period: np.ndarray | float, t_inf: float, r: float) -> np.ndarray:
    """Eq. 18: ``T(P) = T∞ / (1 + r/P)``."""
    return t_inf / (1.0 + r / np.asarray(period, np.float64))


def fit_throughput(periods: Sequence[float], throughputs: Sequence[float]) -> tuple[float, float]:
    """Least-squares ``(T∞, r)`` of eq. 18 on the linearised ``1/T = a + b/P`` (App. A.4).

    Needs ≥ 2 distinct periods and positive throughputs; raises if the fit gives ``a ≤ 0``.
    """
    p = np.asarray(periods, np.float64)
    t = np.asarray(throughputs, np.float64)
    if p.shape != t.shape or p.ndim != 1 or np.unique(p).size < 2:
        raise ValueError("need matching 1-D periods and throughputs with >= 2 distinct periods; "
                         f"got shapes {p.shape} and {t.shape}")
    if np.any(p <= 0) or np.any(t <= 0) or not np.all(np.isfinite(t)):
        raise ValueError("periods and throughputs must be positive and finite")
    x = np.stack([np.ones_like(p), 1.0 / p], axis=1)
    a, b = np.linalg.lstsq(x, 1.0 / t, rcond=None)[0]
    if a <= 0:
        raise ValueError(f"the linearised fit gave 1/T∞ = {a:.3g} <= 0: throughput does not level "
                         "off with P; measure larger periods")
    return float(1.0 / a), float(b / a)
