"""Paper 001, Fig. 7 (App. J.2): final loss vs attention sparsity R, under-parameterised.

d = 20, N = 100, n = d, W = I; the teacher scale σ_p is swept so that the median log10 R of the
teacher spans more than five orders of magnitude (≈ 0.1 at σ_p = 0.02 to ≈ 12 at σ_p = 1.5);
full-batch GD on (p, v). The paper's claim: convergence degrades monotonically with R (R ≈ 1
reaches 1e-7, R ≈ 1e8 stagnates above it). R is measured, as in the paper, at the end of
training. Step size, reported quantities and the pass criterion (median final loss non-decreasing
in median final R): :mod:`experiments._softmax`.
"""

from __future__ import annotations

import pathlib
from typing import Any

from . import _softmax

DESCRIPTION = "paper 001 Fig. 7: under-parameterised GD vs R swept over > 5 orders of magnitude"

_BASE = dict(N=100, dims=(20,), attention="softmax", train_W=False, power_iters=50, retries=2, seed=0,
             loss_floor=1e-12, fit_floor=1e-10, linear_tol=1e-7, over_N=0, over_dims=(),
             over_steps=0, speed_tol=1e-3, min_concordance=0.75, min_seeds=8,
             min_decades_per_kstep=1.0, min_R_span=5.0, labels="own")
PRESETS: dict[str, dict[str, Any]] = {
    "smoke": dict(_BASE, sigma_ps=(0.02, 0.3, 1.5), seeds=3, steps=3000, chunks=10),
    "full": dict(_BASE, sigma_ps=(0.02, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5), seeds=8, steps=20000,
                 chunks=40),
}

TITLE = "Paper 001 Fig. 7 — final loss vs attention ratio R (d=20, N=100)"


def _span(cfg: dict, runs: list[dict]) -> list[tuple[str, bool, str]]:
    lo = min(r["teacher_median_log10_R"] for r in runs)
    hi = max(r["teacher_median_log10_R"] for r in runs)
    need = 5.0 if len(cfg["sigma_ps"]) >= 5 else 0.0
    return [(f"teacher R spans ≥ {need:g} orders of magnitude", hi - lo >= need,
             f"median log10 R_teacher from {lo:.2f} to {hi:.2f}")]


def run(preset: str, out_dir: pathlib.Path, overrides: dict[str, Any] | None = None) -> dict:
    return _softmax.run_experiment("softmax_fig7", TITLE, PRESETS, preset, out_dir, overrides,
                                   extra_checks=_span, loss_vs_R=True)
