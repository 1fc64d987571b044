"""Paper 001, Fig. 1: GD on the prompt-attention model, under- vs over-parameterised.

§4 setting: N = 100 examples, n = d tokens, W = I, d ∈ {20, 150, 400}, teacher scale
σ_p ∈ {0.1, 1} (median log10 R_teacher 0.7 / 8 at d = 20), full-batch GD on (p, v). The paper's
claims: under-parameterised (d < N) GD slows or stalls for large R, converges for small R;
over-parameterised (d ≥ N) it converges linearly. See :mod:`experiments._softmax` for the step
size, the per-run quantities of the report and the pass criteria.

``smoke`` keeps the paper's under-parameterised group (d = 20, N = 100) and replaces d = 150/400
by a small over-parameterised group at N = 24 run as a second grid (d = 32 ≥ N); it runs on a CPU
in well under a minute. ``full`` is the paper's grid (d = 400 needs an accelerator).
"""

from __future__ import annotations

import pathlib
from typing import Any

from . import _softmax

DESCRIPTION = "paper 001 Fig. 1: GD slows with attention sparsity R when under-parameterised"

#: Criteria, fixed before any run (experiments/_softmax_criteria.py): under-parameterised speed
#: = steps to L_t/L_0 ≤ 1e-3, larger teacher R slower in ≥ 75 % of cross-σ_p pairs with ≥ 8 seeds
#: per σ_p (null std of that fraction 0.15: 0.75 is 1.7 std above chance); over-parameterised
#: linear convergence = R² ≥ 0.9 and ≥ 1 decade per 1000 steps.
_BASE = dict(attention="softmax", train_W=False, power_iters=50, retries=2, seed=0, loss_floor=1e-12,
             fit_floor=1e-10, linear_tol=1e-7, speed_tol=1e-3, min_concordance=0.75,
             min_seeds=8, min_decades_per_kstep=1.0, min_R_span=0.0, labels="own")
PRESETS: dict[str, dict[str, Any]] = {
    "smoke": dict(_BASE, N=100, dims=(20,), sigma_ps=(0.1, 1.0), seeds=8, steps=3000, chunks=10,
                  over_N=24, over_dims=(32,), over_steps=1000),
    "full": dict(_BASE, N=100, dims=(20, 150, 400), sigma_ps=(0.1, 1.0), seeds=8, steps=20000,
                 chunks=40, over_N=0, over_dims=(), over_steps=0),
}

TITLE = "Paper 001 Fig. 1 — GD on softmax prompt attention, under- vs over-parameterised"

def run(preset: str, out_dir: pathlib.Path, overrides: dict[str, Any] | None = None) -> dict:
    return _softmax.run_experiment("softmax_fig1", TITLE, PRESETS, preset, out_dir, overrides)
