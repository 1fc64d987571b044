"""Pass criteria of the tiny-ViT reproduction (paper 001 §4, Fig. 2b): pure functions, each able
to fail (``tests/experiments/test_softmax_vit_mnist.py`` runs each on data built to violate it).

Fixed before the full run (defaults below are what ``softmax_vit_mnist`` uses):

* :func:`teacher_r_in_band` — "R ≈ 10⁷ … R ≈ 20": the teacher's median log₁₀R within
  ``R_BAND_DECADES`` of the target, measured on images not used to calibrate it.
* :func:`best_eta` — "η = 0.01 … chosen using a grid search over [0.001, 0.01, 0.1]": per teacher,
  the η with the lowest mean (over seeds) final ℓ/ℓ₀; a non-finite run counts as +∞.
* :func:`slower_on_sparse` — "(S)GD suffers from slow convergence as the attention probabilities
  become sparser": at each teacher's best η, the geometric mean over seeds of the final ℓ/ℓ₀ of
  the students of the sparse teacher is ≥ ``SLOWER_FACTOR`` × that of the non-sparse teacher,
  *and* every sparse seed ends above every non-sparse seed.
* :func:`learns` — the non-sparse teacher's students do learn (final ℓ/ℓ₀ ≤ ``LEARN_MAX_REL``,
  geometric mean over seeds), so "slower" is not two stalled runs compared.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

R_BAND_DECADES = 0.5
SLOWER_FACTOR = 2.0
LEARN_MAX_REL = 0.5


def teacher_r_in_band(measured_log10: float, target_log10: float,
                      band: float = R_BAND_DECADES) -> tuple[bool, dict]:
    """|median log₁₀R − target| ≤ ``band`` decades."""
    if not band > 0:
        raise ValueError(f"band must be > 0 decades, got {band}; e.g. 0.5")
    dev = abs(float(measured_log10) - float(target_log10))
    ok = bool(math.isfinite(dev) and dev <= band)
    return ok, {"measured_log10": float(measured_log10), "target_log10": float(target_log10),
                "deviation_decades": dev, "band_decades": band}


def _clean(x: Sequence[float] | np.ndarray) -> np.ndarray:
    a = np.asarray(x, np.float64)
    return np.where(np.isfinite(a), a, np.inf)


def best_eta(final_rel: np.ndarray, etas: Sequence[float]) -> tuple[int, float]:
    """Index and value of the η with the lowest mean final ℓ/ℓ₀; ``final_rel`` is
    ``[n_seeds, n_etas]`` (non-finite = diverged = +∞)."""
    a = _clean(final_rel)
    if a.ndim != 2 or a.shape[1] != len(etas):
        raise ValueError(f"final_rel must be [seeds, {len(etas)} etas], got {a.shape}")
    i = int(np.argmin(a.mean(0)))
    return i, float(etas[i])


def _gmean(a: np.ndarray) -> float:
    if np.any(~np.isfinite(a)) or np.any(a <= 0):
        return math.inf if np.any(~np.isfinite(a)) else 0.0
    return float(np.exp(np.mean(np.log(a))))


def slower_on_sparse(rel_sparse: Sequence[float], rel_dense: Sequence[float],
                     factor: float = SLOWER_FACTOR) -> tuple[bool, dict]:
    """Final ℓ/ℓ₀ per seed at the best η: sparse ≥ ``factor`` × dense (geometric means) and the
    seeds separate (min sparse > max dense)."""
    if not factor >= 1:
        raise ValueError(f"factor must be >= 1, got {factor}; e.g. 2.0")
    s, d = _clean(rel_sparse), _clean(rel_dense)
    if s.size == 0 or d.size == 0:
        raise ValueError("slower_on_sparse needs at least one seed per teacher")
    gs, gd = _gmean(s), _gmean(d)
    ratio = gs / gd if gd > 0 else math.inf
    separated = bool(s.min() > d.max())
    ok = bool(ratio >= factor and separated and math.isfinite(gd))
    return ok, {"gmean_sparse": gs, "gmean_dense": gd, "ratio": ratio, "factor": factor,
                "seeds_separated": separated}


def learns(rel: Sequence[float], max_rel: float = LEARN_MAX_REL) -> tuple[bool, dict]:
    """Geometric mean over seeds of the final ℓ/ℓ₀ ≤ ``max_rel``."""
    if not 0 < max_rel < 1:
        raise ValueError(f"max_rel must be in (0, 1), got {max_rel}; e.g. 0.5")
    g = _gmean(_clean(rel))
    return bool(g <= max_rel), {"gmean_final_rel": g, "max_rel": max_rel}
