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

_BASE = dict(attention="softmax", train_W=False, power_iters=50, retries=2, seed=0, loss_floor=1e-12,
             fit_floor=1e-10, linear_tol=1e-7)
PRESETS: dict[str, dict[str, Any]] = {
    "smoke": dict(_BASE, N=100, dims=(20,), sigma_ps=(0.1, 1.0), seeds=2, steps=3000, chunks=10,
                  over_N=24, over_dims=(32,), over_steps=1000),
    "full": dict(_BASE, N=100, dims=(20, 150, 400), sigma_ps=(0.1, 1.0), seeds=3, steps=20000,
                 chunks=40, over_N=0, over_dims=(), over_steps=0),
}

TITLE = "Paper 001 Fig. 1 — GD on softmax prompt attention, under- vs over-parameterised"

def run(preset: str, out_dir: pathlib.Path, overrides: dict[str, Any] | None = None) -> dict:
    return _softmax.run_experiment("softmax_fig1", TITLE, PRESETS, preset, out_dir, overrides)
