"""Paper 001 §4 / App. K (WikiText-2, Fig. 3): the learning-rate choice and the three criteria.

Pure functions of the logged curves, fixed before any full run (thresholds are arguments whose
defaults are the presets' values; the tests give each a positive and a negative control):

* :func:`final_loss` / :func:`best_lr` — App. K: "we select the learning rate that gives the
  lowest mean final training loss across the 3 seeds". The final loss of a run is the mean of its
  last ``tail`` per-step training losses (each step's loss is on its own mini-batch of 32, so one
  step alone is noise); a run that turned non-finite has final loss +inf and never wins.
* :func:`sgd_stagnates_adam_converges` — NTP: best Adam's final ℓ/ℓ₀ ≤ ``max_fraction`` × best
  SGD's (seed means).
* :func:`no_adam_advantage` — BoW: Adam's advantage ``sgd − adam`` in final ℓ/ℓ₀ is at most
  ``band`` (SGD ahead by any amount also means "Adam no longer outperforms SGD"; the signed
  difference is reported).
* :func:`sparser_on_ntp` — the [CLS] attention ratio at the end of training (log10 of the mean R
  over heads, examples and layers): log10 R(NTP) − log10 R(BoW) ≥ ``min_decades`` for *every*
  optimiser's best run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np


def final_loss(losses: np.ndarray, tail: int) -> np.ndarray:
    """Mean of the last ``tail`` rows of ``losses [steps, members]`` per member; +inf where any of
    them is non-finite."""
    losses = np.asarray(losses, np.float64)
    if losses.ndim != 2:
        raise ValueError(f"losses must be [steps, members], got shape {losses.shape}")
    if not 1 <= tail <= losses.shape[0]:
        raise ValueError(f"tail must be in [1, {losses.shape[0]}] (the steps), got {tail}")
    last = losses[-tail:]
    return np.where(np.isfinite(last).all(axis=0), last.mean(axis=0), np.inf)


def best_lr(final: Sequence[float], lrs: Sequence[float]) -> tuple[float, dict[float, float]]:
    """The learning rate with the lowest mean final loss over its seeds, and every lr's mean.

    ``final[i]`` and ``lrs[i]`` are member ``i``'s final loss and learning rate."""
    if len(final) != len(lrs) or not len(lrs):
        raise ValueError(f"final ({len(final)}) and lrs ({len(lrs)}) must be non-empty and agree")
    f, lr = np.asarray(final, np.float64), np.asarray(lrs, np.float64)
    means = {float(v): float(np.mean(f[lr == v])) for v in np.unique(lr)}
    return min(means, key=lambda v: (means[v], v)), means


def _finite(*xs: float) -> bool:
    return all(isinstance(x, (int, float)) and math.isfinite(x) for x in xs)


def sgd_stagnates_adam_converges(sgd_ratio: float, adam_ratio: float,
                                 max_fraction: float) -> tuple[bool, dict]:
    """NTP (Fig. 3 top): ``adam_ratio ≤ max_fraction · sgd_ratio`` (final ℓ/ℓ₀, seed means of
    each optimiser's best η). Non-finite input fails."""
    if not 0 < max_fraction <= 1:
        raise ValueError(f"max_fraction must be in (0, 1], got {max_fraction}")
    ok = _finite(sgd_ratio, adam_ratio) and adam_ratio <= max_fraction * sgd_ratio
    frac = adam_ratio / sgd_ratio if _finite(sgd_ratio, adam_ratio) and sgd_ratio > 0 else math.nan
    return bool(ok), {"sgd": sgd_ratio, "adam": adam_ratio, "fraction": frac}


def no_adam_advantage(sgd_ratio: float, adam_ratio: float, band: float) -> tuple[bool, dict]:
    """BoW (Fig. 3 bottom): ``sgd_ratio − adam_ratio ≤ band`` (Adam at most ``band`` better in
    final ℓ/ℓ₀). Non-finite input fails."""
    if band < 0:
        raise ValueError(f"band must be >= 0, got {band}")
    diff = sgd_ratio - adam_ratio
    ok = _finite(sgd_ratio, adam_ratio) and diff <= band
    return bool(ok), {"sgd": sgd_ratio, "adam": adam_ratio, "sgd_minus_adam": diff}


def sparser_on_ntp(log10_r: Mapping[str, Mapping[str, float]],
                   min_decades: float) -> tuple[bool, dict]:
    """``log10_r[task][optimiser]`` (final [CLS] log10 R, seed mean of the best η; tasks
    ``"next_token"`` and ``"bag_of_words"``): NTP exceeds BoW by ≥ ``min_decades`` for every
    optimiser present in both. Non-finite values fail."""
    if min_decades <= 0:
        raise ValueError(f"min_decades must be > 0, got {min_decades}")
    ntp, bow = log10_r.get("next_token", {}), log10_r.get("bag_of_words", {})
    opts = sorted(set(ntp) & set(bow))
    if not opts:
        raise ValueError("sparser_on_ntp needs at least one optimiser run on both tasks")
    gaps = {o: ntp[o] - bow[o] for o in opts}
    ok = all(_finite(g) and g >= min_decades for g in gaps.values())
    return bool(ok), {"gap_decades": gaps}


__all__ = ["best_lr", "final_loss", "no_adam_advantage", "sgd_stagnates_adam_converges",
           "sparser_on_ntp"]
