"""Pass criteria of the paper-001 synthetic figures: small pure functions, each able to fail.

Every function takes per-run records (dicts as built by :func:`experiments._softmax.analyse_run`)
or raw curves and returns ``(ok, detail)``; ``tests/experiments/test_softmax_experiments.py`` runs
each on data built to satisfy it and on data built to violate it (negative controls).

* :func:`speed_concordance` — paper 001 §4 / App. J.2, "GD … slows or stalls for large R … but
  converges when R is small": larger teacher R ⇒ slower convergence, as a rank concordance between
  the teacher's median log₁₀R and the steps a run needs to reach ``L_t/L_0 ≤ tol``.
* :func:`linear_rate` — §4, "In the overparameterized setting, GD exhibits linear convergence":
  a line through log₁₀(L_t/L_0) with R² ≥ ``min_r2`` *and* a rate of at least
  ``min_decades_per_kstep`` decades per 1000 steps (a near-flat decline is not convergence).
* :func:`excess_loss` — §4 (Fig. 2a), "without softmax, Gradient Descent converges quickly": the
  excess of the final loss over a reference minimum, relative to the initial excess.
* :func:`span_of_R` — App. J.2, "We sweep attention sparsity R across five orders of magnitude".
* :func:`endpoint_claim` — App. J.2, "R ≈ 1 yields rapid convergence to 10⁻⁷, while … R ≈ 10⁸
  causes stagnation above 10⁻⁷".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

Run = dict[str, Any]


def steps_to_reach(rel: np.ndarray, tol: float) -> int:
    """First step ``t`` with ``rel[t] ≤ tol``; ``len(rel)`` (censored: never reached) otherwise."""
    rel = np.asarray(rel, np.float64)
    if not (0 < tol < 1):
        raise ValueError(f"tol must be in (0, 1), got {tol}; e.g. speed_tol=1e-3")
    hit = np.nonzero(rel <= tol)[0]
    return int(hit[0]) if hit.size else int(rel.size)


def concordance_null_std(sizes: Sequence[int]) -> float:
    """Std of :func:`speed_concordance`'s statistic when R has no effect (no ties).

    The statistic is the Jonckheere–Terpstra count over cross-group pairs divided by the number of
    pairs; its null variance is ``(n²(2n+3) − Σ n_j²(2n_j+3)) / 72`` counts² (Jonckheere 1954).
    For two groups of ``s`` runs it is √((2s+1)/(12s²)): 0.35 at s = 2, 0.15 at s = 8.
    """
    n = sum(sizes)
    pairs = (n * n - sum(s * s for s in sizes)) / 2
    if pairs <= 0:
        return math.inf
    var = (n * n * (2 * n + 3) - sum(s * s * (2 * s + 3) for s in sizes)) / 72.0
    return math.sqrt(var) / pairs


def speed_concordance(runs: Sequence[Run], min_concordance: float = 0.75,
                      min_seeds: int = 8, key: str = "steps_to_tol") -> tuple[bool, dict]:
    """Larger teacher R converges slower: rank concordance over pairs of runs from different σ_p.

    For every pair of runs in different groups (σ_p), score 1 when the run whose teacher has the
    larger median log₁₀R needs *more* steps (``key``; censored runs tie at the budget), ½ on a
    tie, 0 otherwise. ``C`` = mean score (1: perfectly ordered, ½: no relation, 0: reversed).
    Pass: ``C ≥ min_concordance`` and every group has ≥ ``min_seeds`` runs (with fewer, chance
    alone reaches 0.75 too often: the null std is 0.35 for two groups of 2 seeds, 0.15 of 8 —
    :func:`concordance_null_std`). ``detail`` holds C, its z-score against no effect, and per group
    the median teacher log₁₀R, the median steps and the fraction that reached the tolerance.
    """
    groups: dict[float, list[Run]] = {}
    for r in runs:
        groups.setdefault(r["sigma_p"], []).append(r)
    if len(groups) < 2:
        raise ValueError("speed_concordance needs runs of at least two σ_p groups; "
                         "e.g. sigma_ps=0.1,1")
    score, pairs = 0.0, 0
    items = list(runs)
    for i, a in enumerate(items):
        for b in items[i + 1:]:
            if a["sigma_p"] == b["sigma_p"]:
                continue
            lo, hi = sorted((a, b), key=lambda r: r["teacher_median_log10_R"])
            pairs += 1
            score += 1.0 if hi[key] > lo[key] else 0.5 if hi[key] == lo[key] else 0.0
    C = score / pairs
    sizes = [len(g) for g in groups.values()]
    std = concordance_null_std(sizes)
    rows = []
    for sp, rs in groups.items():
        rows.append({"sigma_p": sp,
                     "median_log10_R": float(np.median([r["teacher_median_log10_R"] for r in rs])),
                     "median_steps": float(np.median([r[key] for r in rs])),
                     "reached": sum(not r.get("censored", False) for r in rs) / len(rs),
                     "runs": len(rs)})
    rows.sort(key=lambda r: r["median_log10_R"])
    enough = min(sizes) >= min_seeds
    ok = bool(C >= min_concordance and enough)
    return ok, {"C": C, "z": (C - 0.5) / std, "null_std": std, "pairs": pairs, "groups": rows,
                "enough_seeds": enough, "min_seeds": min_seeds}


def linear_rate(runs: Sequence[Run], min_decades_per_kstep: float = 1.0,
                min_r2: float = 0.9) -> tuple[bool, dict]:
    """Linear convergence of every run: R² ≥ ``min_r2`` and ≥ ``min_decades_per_kstep`` decades/1000 steps.

    Uses ``fit_slope_log10_per_step`` and ``fit_r2`` (:func:`experiments._softmax.fit_linear_rate`);
    the rate in decades per 1000 steps is ``-1000·slope``. A diverged run fails.
    """
    rates = [-1000.0 * r["fit_slope_log10_per_step"] for r in runs]
    r2 = [r["fit_r2"] for r in runs]
    ok = all(rt >= min_decades_per_kstep and q >= min_r2 and not r["diverged"]
             for rt, q, r in zip(rates, r2, runs, strict=True))
    return bool(ok and runs), {"decades_per_kstep": rates, "r2": r2,
                               "slowest": min(rates) if rates else math.nan,
                               "min_r2": min(r2) if r2 else math.nan}


def excess_loss(final: float, initial: float, reference: float) -> float:
    """``(L_T − L_ref)/(L_0 − L_ref)``: 0 at the reference minimum, 1 where GD started."""
    if not initial > reference:
        raise ValueError(f"initial loss {initial} must exceed the reference {reference}")
    return (final - reference) / (initial - reference)


def all_below(values: Sequence[float], tol: float) -> tuple[bool, dict]:
    """Every value finite and ≤ ``tol`` (e.g. excess losses of the linear-attention runs)."""
    vals = [float(v) for v in values]
    ok = bool(vals) and all(math.isfinite(v) and v <= tol for v in vals)
    return ok, {"worst": max(vals) if vals else math.nan, "tol": tol}


def span_of_R(runs: Sequence[Run], min_decades: float) -> tuple[bool, dict]:
    """The teachers' median log₁₀R spans at least ``min_decades`` orders of magnitude."""
    if min_decades <= 0:
        raise ValueError(f"min_decades must be > 0 (a span ≥ 0 cannot fail), got {min_decades}")
    vals = [r["teacher_median_log10_R"] for r in runs]
    lo, hi = min(vals), max(vals)
    return bool(hi - lo >= min_decades), {"lo": lo, "hi": hi, "span": hi - lo}


def endpoint_claim(runs: Sequence[Run], tol: float = 1e-7) -> tuple[bool, dict]:
    """Lowest-R group's median final L/L₀ ≤ ``tol`` and highest-R group's median above it."""
    groups: dict[float, list[Run]] = {}
    for r in runs:
        groups.setdefault(r["sigma_p"], []).append(r)
    med = sorted((float(np.median([r["teacher_median_log10_R"] for r in rs])),
                  float(np.median([r["final_rel_loss"] for r in rs]))) for rs in groups.values())
    (r_lo, l_lo), (r_hi, l_hi) = med[0], med[-1]
    ok = len(med) >= 2 and l_lo <= tol < l_hi
    return bool(ok), {"low_R": r_lo, "low_R_loss": l_lo, "high_R": r_hi, "high_R_loss": l_hi}
