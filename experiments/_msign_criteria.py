"""Criteria of the MSign failure / rescue / ablation reproduction (paper 003 §3, §6.2, §6.4).

Every verdict of ``experiments/msign_failure.py`` is one of the pure functions below, with its
constants fixed here *before* any full run; each has a negative control in
``tests/experiments/test_msign_failure.py`` (data built to violate it returns *fail*).

* **Failure of one seed** (:func:`first_failure`): the first step ``t`` whose loss or gradient
  norm is non-finite, or whose gradient norm exceeds ``FAIL_FACTOR`` × the median of the
  previous ``FAIL_WINDOW`` steps' gradient norms (trailing window; no spike test before
  ``FAIL_MIN_HISTORY`` finite steps exist, so step 0's large initial norm is never compared with
  nothing). The gradient norm is the global norm *before* clipping (the trainer's ``grad_norm``).
  Paper 003 Fig. 3 calls a run failed at its "sudden loss spikes and divergence" with
  "exponential gradient explosion"; a 10× jump over the recent median is our stated form of it.
* **A configuration fails** (:func:`config_fails`): at least ``SEEDS_NEEDED`` (= 3 of 3) of its
  seeds fail before the horizon (the run's last step).
* **Rescue** (:func:`config_survives`): *no* seed fails before the horizon (3/3 survive).
* **Precursors** (paper 003 Fig. 1, Observations 1–2), per failing seed, on the monitor samples
  (steps ``s_k``) strictly before its failure step ``t_f``: the reference sample is the one
  nearest ``max(warmup, PRECURSOR_REF_FRAC·t_f)`` (at or after the warm-up, so the first
  steps' change from a random init does not count) and the last sample before ``t_f`` must be at
  least ``PRECURSOR_MIN_GAP`` samples later.

  - :func:`srank_fell`: early-layer stable-rank geometric mean at the last sample ≤
    (1 − ``SRANK_DROP``) × its value at the reference;
  - :func:`align_rose`: mean adjacent-layer Jacobian alignment at the last sample ≥ its value at
    the reference + ``ALIGN_RISE`` (alignment lies in [0, 1]).

  Too few samples before the failure is *fail* (undetermined is not a pass).
* **Adaptive MSign** (:func:`fewer_restorations`): it rescues (3/3) with fewer matrix
  restorations (mean over seeds) than fixed P = 100 on the same targets.
* **P grid** (:func:`rescaled_periods`): the paper's periods {10, …, 100000} (Table 3, NanoGPT-5M
  failing near step 30k) scaled by ``t_fail / PAPER_FAIL_STEP`` (rounded, at least 1, duplicates
  kept once), so "P per failure horizon" matches the paper's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

# ---- fixed before the full runs ------------------------------------------------------------------
FAIL_FACTOR = 10.0        # spike: grad norm > this × trailing median
FAIL_WINDOW = 50          # trailing median over this many previous steps
FAIL_MIN_HISTORY = 20     # no spike test before this many finite previous steps
SEEDS_NEEDED = 3          # a configuration fails only if this many seeds fail (3 of 3)
PRECURSOR_REF_FRAC = 0.5  # reference sample near max(warmup, this × failure step)
PRECURSOR_MIN_GAP = 1     # the last pre-failure sample must be ≥ this many samples after the ref
SRANK_DROP = 0.2          # stable rank fell by ≥ 20 % from the reference
ALIGN_RISE = 0.1          # alignment rose by ≥ 0.1 (absolute) from the reference
PAPER_FAIL_STEP = 30_000  # NanoGPT-5M baseline collapse (paper 003 §6.2, "around step 30k")
PAPER_PERIODS = (10, 100, 1000, 10_000, 100_000)  # Table 3


class Check(NamedTuple):
    """One criterion's outcome: its name, the verdict and the numbers behind it."""

    name: str
    passed: bool
    detail: str


def first_failure(grad_norm: Sequence[float], loss: Sequence[float] | None = None, *,
                  factor: float = FAIL_FACTOR, window: int = FAIL_WINDOW,
                  min_history: int = FAIL_MIN_HISTORY) -> int | None:
    """Index of the first failing step of one seed (module doc), or ``None`` if it never fails.

    ``grad_norm[t]`` (and ``loss[t]``) belong to update ``t``. Raises ``ValueError`` for
    mismatched lengths or bad window settings.
    """
    g = np.asarray(grad_norm, np.float64)
    if g.ndim != 1:
        raise ValueError(f"grad_norm must be 1-D, got shape {g.shape}")
    lo = np.zeros_like(g) if loss is None else np.asarray(loss, np.float64)
    if lo.shape != g.shape:
        raise ValueError(f"loss and grad_norm lengths differ: {lo.shape} vs {g.shape}")
    if factor <= 1 or window < 1 or not 1 <= min_history <= window:
        raise ValueError(f"need factor > 1 and 1 ≤ min_history ≤ window, got factor={factor}, "
                         f"window={window}, min_history={min_history}")
    bad = np.flatnonzero(~(np.isfinite(g) & np.isfinite(lo)))
    end = int(bad[0]) if bad.size else g.size  # spikes are looked for before the first NaN
    for t in range(min_history, min(window, end)):  # a growing window at the start
        if g[t] > factor * np.median(g[:t]):
            return t
    if end > window:  # full windows g[t-window:t], t = window .. end-1, vectorised
        med = np.median(np.lib.stride_tricks.sliding_window_view(g[:end - 1], window), axis=1)
        hits = np.flatnonzero(g[window:end] > factor * med)
        if hits.size:
            return int(window + hits[0])
    return None if end == g.size else end


def failures(grad_norm: np.ndarray, loss: np.ndarray, **kw) -> list[int | None]:
    """:func:`first_failure` per member of ``[steps, members]`` arrays."""
    g, lo = np.asarray(grad_norm), np.asarray(loss)
    if g.ndim != 2 or g.shape != lo.shape:
        raise ValueError(f"need [steps, members] arrays of one shape, got {g.shape}, {lo.shape}")
    return [first_failure(g[:, i], lo[:, i], **kw) for i in range(g.shape[1])]


def config_fails(first: Sequence[int | None], horizon: int,
                 need: int = SEEDS_NEEDED) -> Check:
    """A configuration fails iff ≥ ``need`` seeds fail at a step < ``horizon``."""
    n = sum(f is not None and f < horizon for f in first)
    return Check("fails", n >= need,
                 f"{n}/{len(first)} seeds fail before step {horizon} (steps: "
                 f"{', '.join('-' if f is None else str(f) for f in first)}; need {need})")


def config_survives(first: Sequence[int | None], horizon: int) -> Check:
    """Rescue: every seed survives (no failure at a step < ``horizon``)."""
    bad = [f for f in first if f is not None and f < horizon]
    return Check("survives", not bad and len(first) > 0,
                 f"{len(first) - len(bad)}/{len(first)} seeds survive to step {horizon}"
                 + (f" (failures at {', '.join(map(str, bad))})" if bad else ""))


def _ref_and_last(steps: np.ndarray, fail_step: int, warmup: int,
                  ref_frac: float, min_gap: int) -> tuple[int, int] | None:
    before = np.flatnonzero(steps < fail_step)
    if before.size == 0:
        return None
    last = int(before[-1])
    target = max(warmup, ref_frac * fail_step)
    eligible = before[steps[before] >= warmup]
    if eligible.size == 0:
        return None
    ref = int(eligible[np.argmin(np.abs(steps[eligible] - target))])
    if last - ref < min_gap:
        return None
    return ref, last


def _precursor(name: str, steps: Sequence[int], values: Sequence[float], fail_step: int | None,
               warmup: int, rising: bool, amount: float, ref_frac: float,
               min_gap: int) -> Check:
    s = np.asarray(steps, np.int64)
    v = np.asarray(values, np.float64)
    if s.shape != v.shape or s.ndim != 1:
        raise ValueError(f"steps and values must be 1-D of one length, got {s.shape}, {v.shape}")
    if fail_step is None:
        return Check(name, False, "no failure step (nothing precedes)")
    order = np.argsort(s)
    s, v = s[order], v[order]
    ok = np.isfinite(v)
    s, v = s[ok], v[ok]
    idx = _ref_and_last(s, fail_step, warmup, ref_frac, min_gap)
    if idx is None:
        return Check(name, False, f"too few finite samples between warm-up ({warmup}) and the "
                                  f"failure step {fail_step}: undetermined")
    r, last = idx
    a, b = v[r], v[last]
    if rising:
        passed = b >= a + amount
        rel = f"{a:.3g} → {b:.3g} (Δ {b - a:+.3g}, need ≥ +{amount:g})"
    else:
        passed = b <= (1 - amount) * a
        rel = f"{a:.3g} → {b:.3g} (×{b / a if a else float('nan'):.3g}, need ≤ ×{1 - amount:g})"
    return Check(name, bool(passed), f"step {s[r]} → {s[last]} (failure {fail_step}): {rel}")


def srank_fell(steps: Sequence[int], srank: Sequence[float], fail_step: int | None,
               warmup: int, *, drop: float = SRANK_DROP, ref_frac: float = PRECURSOR_REF_FRAC,
               min_gap: int = PRECURSOR_MIN_GAP) -> Check:
    """Observation 1: the early-layer stable rank fell before the failure (module doc)."""
    return _precursor("srank_fell", steps, srank, fail_step, warmup, False, drop, ref_frac,
                      min_gap)


def align_rose(steps: Sequence[int], align: Sequence[float], fail_step: int | None,
               warmup: int, *, rise: float = ALIGN_RISE, ref_frac: float = PRECURSOR_REF_FRAC,
               min_gap: int = PRECURSOR_MIN_GAP) -> Check:
    """Observation 2: the mean adjacent-layer alignment rose before the failure (module doc)."""
    return _precursor("align_rose", steps, align, fail_step, warmup, True, rise, ref_frac,
                      min_gap)


def fewer_restorations(first: Sequence[int | None], horizon: int,
                       restorations: Sequence[float], reference: float,
                       period: int = 100) -> Check:
    """Adaptive MSign succeeds iff it survives 3/3 with mean restorations < ``reference`` (the
    count of fixed MSign with ``period`` on the same targets)."""
    surv = config_survives(first, horizon)
    mean = float(np.mean(restorations)) if len(restorations) else float("nan")
    passed = surv.passed and mean < reference
    return Check("adaptive_fewer_restorations", bool(passed),
                 f"{surv.detail}; restorations {mean:.0f} vs {reference:.0f} at P = {period}")


def thm42_log10(norms: np.ndarray, aligns: np.ndarray) -> np.ndarray:
    """log₁₀ of Theorem 4.2's (aM)ᴸ/a in float64 (``M = min_ℓ ‖J_ℓ‖``, ``a = min_ℓ Align``) for
    ``norms [..., L]`` and ``aligns [..., L−1]``; in float32 the bound underflows to 0 for
    L = 24 and a ≈ 0.01 (−inf when a = 0)."""
    n = np.asarray(norms, np.float64)
    a = np.asarray(aligns, np.float64)
    if n.shape[:-1] != a.shape[:-1] or a.shape[-1] != n.shape[-1] - 1:
        raise ValueError(f"need norms [..., L] and aligns [..., L-1], got {n.shape}, {a.shape}")
    m, amin = n.min(axis=-1), a.min(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return n.shape[-1] * np.log10(amin * m) - np.log10(amin)


def rescaled_periods(fail_step: int, paper_fail_step: int = PAPER_FAIL_STEP,
                     periods: Sequence[int] = PAPER_PERIODS) -> list[tuple[int, int]]:
    """``[(paper P, our P)]``: each period scaled by ``fail_step / paper_fail_step``, rounded,
    at least 1; a period whose rounded value repeats an earlier one is dropped."""
    if fail_step < 1:
        raise ValueError(f"fail_step must be ≥ 1, got {fail_step}")
    out: list[tuple[int, int]] = []
    seen = set()
    for p in periods:
        q = max(1, int(round(p * fail_step / paper_fail_step)))
        if q not in seen:
            seen.add(q)
            out.append((int(p), q))
    return out
