"""Pass criteria of the Assumption-B / κ tables (paper 001 App. J.3, Tables 1–3): pure functions,
each able to fail (``tests/experiments/test_softmax_assumption_b.py`` runs each on data built to
violate it).

Fixed before the full run (the defaults below are what ``softmax_assumption_b`` uses):

* :func:`b1_holds` — Table 1, "all 24 layer-head combinations satisfy ρ_U < 1": the exact
  per-example ρ_{U,i} < 1 on ≥ ``B1_MIN_FRAC`` of the (image, layer-head) pairs (an undefined ρ —
  every token important, so ``K_{S^c}`` is empty — counts as a violation).
* :func:`sampling_faithful` — the paper's ρ_U is the max over 200 random x ∈ U, which can only
  under-estimate the exact maximum: per layer-head, sampled ≥ ``SAMPLE_MIN_RATIO`` × exact (each
  the max over images) on ≥ ``SAMPLE_MIN_FRAC`` of the heads; otherwise the paper's Table 1 method
  would report "ρ_U < 1" where it is not.
* :func:`b2_holds` — Table 2, "all heads exhibit strictly positive value-compatibility margins":
  δ_i above the float32 resolution of the values it is computed from
  (``n_dot · eps32 · max_j ‖v_ij‖``, the worst-case error of a length-``n_dot`` float32 dot product
  per unit of value norm) on ≥ ``B2_MIN_FRAC`` of the pairs — a margin below it is 0 within the
  arithmetic of the forward pass.
* :func:`kappa_sparse_vs_dense` — Table 3 and "sparse attention induces severe ill-conditioning":
  the median exact κ(J²|1⊥) of the sparse network ≥ 10^``KAPPA_MIN_LOG10`` (paper: 4.4e5) and
  ≥ ``KAPPA_GAP_DECADES`` decades above the non-sparse network's.
* :func:`estimate_is_upper_bound` — App. J.3's κ(J²) ≈ (max a/min a)² (Lemma 1 makes it an upper
  bound only): exact ≤ estimate on every pair, up to ``tol_decades`` of float64 round-off.
"""

from __future__ import annotations

import math

import numpy as np

B1_MIN_FRAC = 0.9
SAMPLE_MIN_RATIO = 0.5
SAMPLE_MIN_FRAC = 0.9
B2_MIN_FRAC = 0.9
KAPPA_MIN_LOG10 = 4.0
KAPPA_GAP_DECADES = 2.0
EPS32 = float(np.finfo(np.float32).eps)


def _frac(name: str, x: float) -> float:
    if not 0 < x <= 1:
        raise ValueError(f"{name} must be in (0, 1], got {x}; e.g. 0.9")
    return float(x)


def b1_holds(rho_pairs: np.ndarray, min_frac: float = B1_MIN_FRAC) -> tuple[bool, dict]:
    """Fraction of pairs with a finite exact ρ_{U,i} < 1 is ≥ ``min_frac``."""
    min_frac = _frac("min_frac", min_frac)
    r = np.asarray(rho_pairs, np.float64).ravel()
    if r.size == 0:
        raise ValueError("b1_holds needs at least one (image, layer-head) pair")
    ok_pairs = np.isfinite(r) & (r < 1.0)
    frac = float(ok_pairs.mean())
    return bool(frac >= min_frac), {"frac_below_1": frac, "frac_undefined":
                                    float(np.mean(~np.isfinite(r))), "min_frac": min_frac}


def sampling_faithful(rho_exact_heads: np.ndarray, rho_sampled_heads: np.ndarray,
                      min_ratio: float = SAMPLE_MIN_RATIO,
                      min_frac: float = SAMPLE_MIN_FRAC) -> tuple[bool, dict]:
    """Per head, sampled/exact ≥ ``min_ratio`` on ≥ ``min_frac`` of the heads (heads whose exact
    ρ is infinite or 0 are skipped: the ratio is undefined; if all are, the verdict fails)."""
    min_ratio, min_frac = _frac("min_ratio", min_ratio), _frac("min_frac", min_frac)
    e = np.asarray(rho_exact_heads, np.float64).ravel()
    s = np.asarray(rho_sampled_heads, np.float64).ravel()
    if e.shape != s.shape:
        raise ValueError(f"exact and sampled ρ must have one value per head each, got {e.shape} "
                         f"and {s.shape}")
    use = np.isfinite(e) & (e > 0)
    if not use.any():
        return False, {"frac_faithful": math.nan, "median_ratio": math.nan, "n_heads": 0,
                       "min_ratio": min_ratio, "min_frac": min_frac}
    ratio = s[use] / e[use]
    frac = float(np.mean(ratio >= min_ratio))
    return bool(frac >= min_frac), {"frac_faithful": frac, "median_ratio": float(np.median(ratio)),
                                    "n_heads": int(use.sum()), "min_ratio": min_ratio,
                                    "min_frac": min_frac}


def b2_resolution(v_norm_max: np.ndarray, n_dot: int) -> np.ndarray:
    """The float32 resolution of a value difference: ``n_dot · eps32 · max_j ‖v_ij‖`` per pair."""
    if n_dot < 1:
        raise ValueError(f"n_dot must be >= 1 (the length of the dot product giving a value "
                         f"coordinate, d_model), got {n_dot}")
    return n_dot * EPS32 * np.asarray(v_norm_max, np.float64)


def b2_holds(delta: np.ndarray, resolution: np.ndarray,
             min_frac: float = B2_MIN_FRAC) -> tuple[bool, dict]:
    """δ_i > ``resolution`` (per pair) on ≥ ``min_frac`` of the pairs."""
    min_frac = _frac("min_frac", min_frac)
    d = np.asarray(delta, np.float64).ravel()
    res = np.broadcast_to(np.asarray(resolution, np.float64), np.shape(delta)).ravel()
    if d.size == 0:
        raise ValueError("b2_holds needs at least one (image, layer-head) pair")
    frac = float(np.mean(np.isfinite(d) & (d > res)))
    return bool(frac >= min_frac), {"frac_resolved": frac, "frac_positive": float(np.mean(d > 0)),
                                    "min_frac": min_frac}


def kappa_sparse_vs_dense(log10_kappa_sparse: np.ndarray, log10_kappa_dense: np.ndarray,
                          min_log10: float = KAPPA_MIN_LOG10,
                          gap_decades: float = KAPPA_GAP_DECADES) -> tuple[bool, dict]:
    """median log10 κ (sparse) ≥ ``min_log10`` and ≥ median (dense) + ``gap_decades``."""
    if not gap_decades > 0:
        raise ValueError(f"gap_decades must be > 0, got {gap_decades}; e.g. 2")
    s = np.median(np.asarray(log10_kappa_sparse, np.float64))
    d = np.median(np.asarray(log10_kappa_dense, np.float64))
    ok = bool(np.isfinite(s) and np.isfinite(d) and s >= min_log10 and s - d >= gap_decades)
    return ok, {"median_log10_sparse": float(s), "median_log10_dense": float(d),
                "gap_decades": float(s - d), "min_log10": min_log10, "min_gap": gap_decades}


def estimate_is_upper_bound(log10_exact: np.ndarray, log10_estimate: np.ndarray,
                            tol_decades: float = 1e-6) -> tuple[bool, dict]:
    """exact ≤ estimate + ``tol_decades`` (log10) on every pair; also the median overstatement.

    ``tol_decades``: the secular solver's relative accuracy ~1e-15 per eigenvalue and the logits'
    float64 differences give far less than 1e-6 decades."""
    e = np.asarray(log10_exact, np.float64).ravel()
    est = np.asarray(log10_estimate, np.float64).ravel()
    if e.shape != est.shape or e.size == 0:
        raise ValueError(f"exact and estimate need the same non-empty shape, got {e.shape} and "
                         f"{est.shape}")
    fin = np.isfinite(e) & np.isfinite(est)
    over = est[fin] - e[fin]
    ok = bool(fin.all() and np.all(over >= -tol_decades))
    return ok, {"frac_bound_holds": float(np.mean(over >= -tol_decades)) if over.size else math.nan,
                "median_overstatement_decades": float(np.median(over)) if over.size else math.nan,
                "n_nonfinite": int((~fin).sum())}
