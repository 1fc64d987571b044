"""Paper 001, Fig. 7 (App. J.2): convergence vs attention sparsity R, under-parameterised.

d = 20, N = 100, n = d, W = I; the teacher scale σ_p is swept so that the median log10 R of the
teacher spans more than five orders of magnitude (≈ 0.1 at σ_p = 0.02 to ≈ 12 at σ_p = 1.5);
full-batch GD on (p, v). The paper (App. J.2): "GD convergence degrades monotonically with R:
nearly uniform attention (R ≈ 1) yields rapid convergence to 10⁻⁷, while highly sparse attention
(R ≈ 10⁸) causes stagnation above 10⁻⁷."

Criteria (:mod:`experiments._softmax_criteria`, fixed in the presets): the teachers' R spans
≥ ``min_R_span`` = 5 decades; speed (steps to L_t/L_0 ≤ 1e-3) is ordered by the teacher's R in
≥ 75 % of cross-σ_p pairs of runs (8 seeds per σ_p); the endpoints: the lowest-R group's median
final L/L₀ ≤ 1e-7 and the highest-R group's above it. The report states, per σ_p, the median steps,
the fraction that converged and R at the end of training — what the data show, group by group,
instead of a single "monotone" verdict (in the full run the *smallest* σ_p, 0.02–0.1, converge
slowest among the runs that converge: their attention is near uniform and ∇ₚ is small).
"""

from __future__ import annotations

import pathlib
from typing import Any

from . import _softmax
from . import _softmax_criteria as crit

DESCRIPTION = "paper 001 Fig. 7: under-parameterised GD vs R swept over > 5 orders of magnitude"

_BASE = dict(N=100, dims=(20,), attention="softmax", train_W=False, power_iters=50, retries=2, seed=0,
             loss_floor=1e-12, fit_floor=1e-10, linear_tol=1e-7, over_N=0, over_dims=(),
             over_steps=0, speed_tol=1e-3, min_concordance=0.75, min_seeds=8,
             min_decades_per_kstep=1.0, min_R_span=5.0, labels="own")
PRESETS: dict[str, dict[str, Any]] = {
    "smoke": dict(_BASE, sigma_ps=(0.02, 0.3, 1.5), seeds=8, steps=3000, chunks=10),
    "full": dict(_BASE, sigma_ps=(0.02, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5), seeds=8, steps=20000,
                 chunks=40),
}

TITLE = "Paper 001 Fig. 7 — GD vs attention ratio R (d=20, N=100, under-parameterised)"
TITLES = {"loss": "Paper 001 Fig. 7 — training loss per σ_p (d=20, N=100)",
          "loss_vs_R": "Paper 001 Fig. 7 — final loss vs attention ratio R (d=20, N=100)"}

CLAIM_SPEED = ('App. J.2: "GD convergence degrades monotonically with R"')
CLAIM_ENDS = ('App. J.2: "nearly uniform attention (R ≈ 1) yields rapid convergence to 10^{-7}, '
              'while highly sparse attention (R ≈ 10^8) causes stagnation above 10^{-7}"')
CLAIM_SPAN = 'App. J.2: "We sweep attention sparsity R across five orders of magnitude"'


def checks(cfg: dict, runs: list[dict]) -> list[dict]:
    """Span of R, speed ordered by R (as Fig. 1), and the paper's two endpoints."""
    ok, det = crit.span_of_R(runs, cfg["min_R_span"])
    out = [_softmax.Check(CLAIM_SPAN, f"median log10 R of the teachers spans ≥ "
                          f"{cfg['min_R_span']:g} decades", ok,
                          f"{det['lo']:.2f} to {det['hi']:.2f} ({det['span']:.1f} decades)")]
    speed = _softmax.under_check(cfg, runs)
    out.append(dict(speed, claim=CLAIM_SPEED))
    ok, det = crit.endpoint_claim(runs, cfg["linear_tol"])
    out.append(_softmax.Check(
        CLAIM_ENDS, f"median final L/L₀ ≤ {cfg['linear_tol']:g} for the lowest-R σ_p and above "
        "it for the highest-R σ_p", ok,
        f"log10R {det['low_R']:.2f}: {det['low_R_loss']:.1e}; log10R {det['high_R']:.2f}: "
        f"{det['high_R_loss']:.1e}"))
    return out


def run(preset: str, out_dir: pathlib.Path, overrides: dict[str, Any] | None = None) -> dict:
    return _softmax.run_experiment("softmax_fig7", TITLE, PRESETS, preset, out_dir, overrides,
                                   loss_vs_R=True, titles=TITLES, checks_fn=checks)
