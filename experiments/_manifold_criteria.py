"""Paper 004 reproduction: the measurements and the pass/fail criteria, as small pure functions.

Every threshold below is fixed here, in code, *before* the full runs (``docs/reproductions/
manifold_muon.md`` lists them); each criterion has a negative control in
``tests/experiments/test_manifold_repro.py`` (data built to violate it returns *fail*).

Measurements (NumPy float64, on host copies of the weights):

* :func:`tall` — a kernel ``(fan_in, fan_out)`` in the tall orientation Manifold Muon works in
  (paper 004 App. A: wide matrices are transposed), so "columns" are the DGram columns.
* :func:`dgram_sigma_vs_colnorm` — App. C: on the DGram manifold WᵀW = diag(‖w_j‖²), hence the
  singular values are the column norms, σ_j = ‖w_(j)‖ (sorted). Returns the largest relative
  difference max_j |σ_j − ‖w‖_(j)| / σ_max.
* :func:`swap_eligible_pairs` — how many adjacent pairs of (sorted) column norms lie within
  2η of each other. One Manifold-Muon step moves each column by at most η (‖A‖₂ ≤ 1 ⇒ every
  column of η·A has norm ≤ η), so only such pairs can change order in that step: an *upper bound*
  on the column-rank swaps the authors' sorted retraction (U Vᵀ)·diag(S) can make at that step
  (the exact count needs the pre-retraction point, which the optimiser does not expose).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# ---- thresholds, fixed before the full runs --------------------------------------------------

#: Saturation: a layer-head's mean top-1 − top-2 attention-logit gap ≥ this many nats. Paper 004
#: App. C bounds ‖J_softmax‖_F by ≈ √2·(n − 1)·e^(−Δ) for gap Δ; at Δ = 10 and n = 128 keys that
#: is ≤ 8e-3 (vs ≈ 1/√n ≈ 0.09 for uniform attention): gradients through that head are ~10× below
#: the uniform level, i.e. saturated, not merely peaked.
GAP_SATURATED = 10.0
#: App. C's σ_j = ‖w_j‖ under DGram holds if the relative difference is below this. The sorted
#: retraction uses the "accurate" polar factor (relative error ≤ 1e-4 per entry of QᵀQ − I, the
#: library's stated accuracy); σ_j vs ‖w_j‖ then differ by ≤ n·1e-4 relative for n ≤ 10 columns
#: in a ‖·‖₂ sense, so 1e-3 (float32 eps 1.2e-7 × n = 256 × ~30 is the same order) separates
#: "on the manifold" from "off it" (a generic matrix: differences of order 1).
SIGMA_COLNORM_RTOL = 1e-3
#: "Explosive growth" of the attention σ_max (paper 004 §4.1 Fig. 2) := final σ_max ≥ this × its
#: value at the first log point; "bounded" (Stiefel) := every logged σ_max ≤ 1 + STIEFEL_SIGMA_TOL
#: (the bf16 Polar-Express retraction leaves |σ − 1| ≲ 1e-2 on GPT-2 shapes; 0.05 is ≫ that).
SIGMA_GROWTH = 3.0
STIEFEL_SIGMA_TOL = 0.05
#: A claim about instability needs this many of the seeds to agree (3 seeds: 2 of 3).
MAJORITY = 2 / 3
#: No ranking from fewer seeds than this (issue 23: "3 seeds before any ranking").
MIN_SEEDS_RANK = 3


# ---- measurements -------------------------------------------------------------------------


def tall(kernel: np.ndarray) -> np.ndarray:
    """The kernel in Manifold Muon's tall orientation (paper 004 App. A): ``(m, n)``, m ≥ n."""
    k = np.asarray(kernel, np.float64)
    if k.ndim != 2:
        raise ValueError(f"tall expects a 2-D kernel, got shape {k.shape}; split stacked leaves")
    return k if k.shape[0] >= k.shape[1] else k.T


def dgram_sigma_vs_colnorm(kernel: np.ndarray) -> float:
    """max_j |σ_j − ‖w‖_(j)| / σ_max for the tall kernel (0 on the DGram manifold, App. C)."""
    w = tall(kernel)
    return sigma_colnorm_rel(np.linalg.svd(w, compute_uv=False), np.linalg.norm(w, axis=0))


def sigma_colnorm_rel(sigmas: np.ndarray, colnorms: np.ndarray) -> float:
    """max_j |σ_j − ‖w‖_(j)| / σ_max from given singular values and column norms (any order)."""
    s = np.sort(np.asarray(sigmas, np.float64))[::-1]
    c = np.sort(np.asarray(colnorms, np.float64))[::-1]
    return float(np.max(np.abs(s - c)) / max(s[0], 1e-30))


def swap_eligible_pairs(kernel: np.ndarray, step_size: float) -> int:
    """Adjacent (sorted) column-norm pairs of the tall kernel closer than 2·``step_size``."""
    if step_size < 0:
        raise ValueError(f"step_size must be ≥ 0 (the Muon learning rate), got {step_size}")
    c = np.sort(np.linalg.norm(tall(kernel), axis=0))[::-1]
    return int(np.sum(np.diff(-c) <= 2 * step_size))


def first_crossing(steps: Sequence[int], values: Sequence[float], threshold: float) -> int | None:
    """First step whose value is ≥ ``threshold`` (non-finite values count as crossed)."""
    for s, v in zip(steps, values):
        if not math.isfinite(v) or v >= threshold:
            return int(s)
    return None


# ---- criteria -----------------------------------------------------------------------------


def verdict_step(verdict: Mapping[str, Any]) -> int | None:
    """The earliest step at which a triggered instability criterion fired (``None``: stable)."""
    steps = [c["step"] for c in verdict["criteria"].values()
             if c["triggered"] and c["step"] is not None]
    if verdict["unstable"] and not steps:
        return 0
    return min(steps) if steps else None


def instability_pattern(unstable: Mapping[str, Sequence[bool]],
                        dgram_attention: Sequence[str],
                        stiefel_attention: Sequence[str]) -> dict[str, Any]:
    """Paper 004 Table 1's qualitative claim: every DGram-attention assignment unstable, every
    Stiefel-attention one stable. ``unstable[assignment]`` lists the per-seed verdicts.

    Supported iff each DGram-attention assignment is unstable in ≥ :data:`MAJORITY` of its seeds
    and each Stiefel-attention assignment is stable in *all* of its seeds.
    """
    missing = [a for a in (*dgram_attention, *stiefel_attention) if not unstable.get(a)]
    if missing:
        return {"status": "untestable", "detail": f"no runs for {missing}"}
    bad_d = [a for a in dgram_attention if np.mean(unstable[a]) < MAJORITY - 1e-9]
    bad_s = [a for a in stiefel_attention if any(unstable[a])]
    ok = not bad_d and not bad_s
    detail = "; ".join(f"{a}: {sum(unstable[a])}/{len(unstable[a])} unstable"
                       for a in (*dgram_attention, *stiefel_attention))
    return {"status": "supported" if ok else "not supported", "detail": detail,
            "dgram_attention_not_failing": bad_d, "stiefel_attention_failing": bad_s}


def ordering(final: Mapping[str, Sequence[float]], order: Sequence[str]) -> dict[str, Any]:
    """Paper 004 Table 1's ranking (``order`` best first, e.g. Hetero < All-Stiefel <
    Unconstrained). Each consecutive pair (a, b) is *resolved* if mean(a) + spread < mean(b),
    with spread = half-range(a) + half-range(b) over seeds (a gap larger than the seeds' scatter);
    *reversed* if mean(b) + spread < mean(a); else *unresolved*. The ranking is "supported" iff
    every pair is resolved, "contradicted" if any is reversed, else "unresolved"; "untestable"
    with fewer than :data:`MIN_SEEDS_RANK` seeds or a non-finite loss.
    """
    pairs = []
    for a, b in zip(order, order[1:]):
        xa, xb = np.asarray(final.get(a, []), float), np.asarray(final.get(b, []), float)
        if min(len(xa), len(xb)) < MIN_SEEDS_RANK or not (
                np.all(np.isfinite(xa)) and np.all(np.isfinite(xb))):
            pairs.append((a, b, "untestable"))
            continue
        spread = np.ptp(xa) / 2 + np.ptp(xb) / 2
        if xa.mean() + spread < xb.mean():
            pairs.append((a, b, "resolved"))
        elif xb.mean() + spread < xa.mean():
            pairs.append((a, b, "reversed"))
        else:
            pairs.append((a, b, "unresolved"))
    kinds = [p[2] for p in pairs]
    status = ("untestable" if "untestable" in kinds else "contradicted" if "reversed" in kinds
              else "supported" if all(k == "resolved" for k in kinds) else "unresolved")
    return {"status": status, "pairs": pairs}


def sigma_growth(attn_sigma: Mapping[str, Sequence[Sequence[float]]],
                 dgram_attention: Sequence[str],
                 stiefel_attention: Sequence[str]) -> dict[str, Any]:
    """Paper 004 Fig. 2: DGram attention σ_max grows (final ≥ :data:`SIGMA_GROWTH` × first, in
    ≥ :data:`MAJORITY` of seeds), Stiefel attention's stays ≤ 1 + :data:`STIEFEL_SIGMA_TOL`
    (every seed, every log point). ``attn_sigma[assignment]`` = per-seed σ_max curves."""
    def grew(c):
        c = np.asarray(c, float)
        return len(c) > 1 and (not np.isfinite(c[-1]) or c[-1] >= SIGMA_GROWTH * c[0])

    miss = [a for a in (*dgram_attention, *stiefel_attention) if not attn_sigma.get(a)]
    if miss:
        return {"status": "untestable", "detail": f"no σ curves for {miss}"}
    d_ok = {a: float(np.mean([grew(c) for c in attn_sigma[a]])) for a in dgram_attention}
    s_max = {a: float(max(np.nanmax(np.asarray(c, float)) for c in attn_sigma[a]))
             for a in stiefel_attention}
    ok = all(v >= MAJORITY - 1e-9 for v in d_ok.values()) and all(
        v <= 1 + STIEFEL_SIGMA_TOL for v in s_max.values())
    return {"status": "supported" if ok else "not supported",
            "dgram_fraction_grown": d_ok, "stiefel_max_sigma": s_max}


def colnorm_claim(rel_diffs: Sequence[float]) -> dict[str, Any]:
    """App. C: σ_j = ‖w_j‖ under DGram — supported iff every measured relative difference
    (:func:`dgram_sigma_vs_colnorm`) is ≤ :data:`SIGMA_COLNORM_RTOL`."""
    x = np.asarray(rel_diffs, float)
    if not len(x):
        return {"status": "untestable", "max_rel_diff": None}
    worst = float(np.nanmax(np.where(np.isfinite(x), x, np.inf)))
    return {"status": "supported" if worst <= SIGMA_COLNORM_RTOL else "not supported",
            "max_rel_diff": worst}


def mechanism(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Issue 23 item 3: in every run called unstable the saturation measure crosses
    :data:`GAP_SATURATED` at or before the verdict step, and in no Stiefel-attention run.

    Each run: ``{"name", "unstable", "verdict_step", "stiefel_attention", "sat_step"}``
    (``sat_step``: :func:`first_crossing` of the max layer-head logit gap, or ``None``).
    "untestable" if no run is unstable (nothing to explain).
    """
    unstable = [r for r in runs if r["unstable"]]
    late = [r["name"] for r in unstable
            if r["sat_step"] is None or (r["verdict_step"] is not None
                                         and r["sat_step"] > r["verdict_step"])]
    stiefel_sat = [r["name"] for r in runs if r["stiefel_attention"] and r["sat_step"] is not None]
    if not unstable:
        status = "untestable"
    else:
        status = "supported" if not late and not stiefel_sat else "not supported"
    return {"status": status, "unstable_runs": [r["name"] for r in unstable],
            "unstable_without_prior_saturation": late, "stiefel_runs_saturated": stiefel_sat}


def artefact(faithful_unstable: Sequence[bool], default_unstable: Sequence[bool]) -> dict[str, Any]:
    """Issue 23 item 4: is DGram attention's failure an artefact of the sorted retraction?

    * "artefact": faithful runs unstable in ≥ :data:`MAJORITY` of seeds and every
      default-retraction run stable;
    * "not an artefact": default-retraction runs unstable in ≥ :data:`MAJORITY` of seeds;
    * "no failure to explain": the faithful runs are not (majority) unstable;
    * "mixed": anything else.
    """
    f, d = np.asarray(faithful_unstable, bool), np.asarray(default_unstable, bool)
    if not len(f) or not len(d):
        return {"status": "untestable"}
    if f.mean() < MAJORITY - 1e-9:
        status = "no failure to explain"
    elif d.mean() >= MAJORITY - 1e-9:
        status = "not an artefact"
    elif not d.any():
        status = "artefact"
    else:
        status = "mixed"
    return {"status": status, "faithful_unstable": f"{int(f.sum())}/{len(f)}",
            "default_unstable": f"{int(d.sum())}/{len(d)}"}


def stabilised(unstable: Sequence[bool], faithful_unstable: Sequence[bool]) -> dict[str, Any]:
    """Issue 23 item 5: a scale control *stabilises* DGram attention iff every seed is stable by
    the instability criterion at the same horizon as the Stiefel runs — and the same assignment
    without the control fails (≥ :data:`MAJORITY` of seeds), else "no failure to stabilise"."""
    u, f = np.asarray(unstable, bool), np.asarray(faithful_unstable, bool)
    if not len(u) or not len(f):
        return {"status": "untestable"}
    if f.mean() < MAJORITY - 1e-9:
        status = "no failure to stabilise"
    else:
        status = "stabilised" if not u.any() else "not stabilised"
    return {"status": status, "unstable": f"{int(u.sum())}/{len(u)}",
            "without_control_unstable": f"{int(f.sum())}/{len(f)}"}


def mlp_tolerance(mlp_sigma_growth: Sequence[float], unstable: Sequence[bool],
                  mlp_grad_ratio: Sequence[float]) -> dict[str, Any]:
    """§4.3, measured: DGram MLPs (Hetero) *tolerate* growth iff their σ_max grows (final/first ≥
    :data:`SIGMA_GROWTH` in ≥ :data:`MAJORITY` of seeds) while every run stays stable and the MLP
    gradient norm keeps ≥ 0.1 of its early level (no gradient collapse)."""
    g, u, r = (np.asarray(x, float) for x in (mlp_sigma_growth, unstable, mlp_grad_ratio))
    if not len(g):
        return {"status": "untestable"}
    grew = float(np.mean(g >= SIGMA_GROWTH))
    ok_grad = bool(np.all(np.nan_to_num(r, nan=0.0) >= 0.1))
    if grew < MAJORITY - 1e-9:
        status = "no growth to tolerate"
    else:
        status = "tolerated" if (not u.any() and ok_grad) else "not tolerated"
    return {"status": status, "fraction_grown": grew, "min_grad_ratio": float(np.nanmin(r))}
