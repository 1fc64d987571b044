"""jaxspectra.monitors: training monitors (papers 001–004), see ``base.py`` for the protocols.

=====================  ===================================================================
module                 what
=====================  ===================================================================
``spectral``           σ_max, ‖W‖_F, stable rank, σ / Σ̂, Gram diagonal and off-diagonal, max σ
                       per group, one-step ΔΣ_t (paper 002 §3.3): device, host and optax forms
``stable_rank``        optax transformation recording srank every k steps (paper 003)
``heavy_tail``         power-law α by MLE over x_min with KS, α-weighted, log spectral norm
``sosd``               post-hoc SoSD analysis and plots (paper 002 Figs. 1–3)
``jacobian``           block Jacobians by jvp/vjp power iteration, alignment, Thm 4.2 bound
``grad_norms``         global / per-group / per-layer gradient norms
``attention``          R, entropy, logits, ‖J_softmax‖_F, exact κ on 1⊥ (papers 001, 004)
``registry``           ``build_monitors(spec, ...)``: monitors by name from a config table
=====================  ===================================================================
"""

from jaxspectra.monitors.attention import (
    AttentionMonitor,
    attention_metrics,
    softmax_row_stats,
    sown_attention_logits,
)
from jaxspectra.monitors.base import DeviceMonitor, HostMonitor
from jaxspectra.monitors.grad_norms import GradNormMonitor, grad_norm_metrics, grad_norm_monitor
from jaxspectra.monitors.heavy_tail import (
    HeavyTailMonitor,
    heavy_tail_metrics,
    heavy_tail_stats,
    powerlaw_fit,
)
from jaxspectra.monitors.jacobian import (
    JacobianMonitor,
    chain_jacobian_stats,
    jacobian_metrics,
    thm42_bound,
)
from jaxspectra.monitors.registry import build_monitors
from jaxspectra.monitors.spectral import (
    HostSpectralMonitor,
    SpectralMonitor,
    delta_sigma,
    matrix_stats,
    spectral_metrics,
    spectral_monitor,
)
from jaxspectra.monitors.stable_rank import stable_rank_monitor

__all__ = [
    "AttentionMonitor",
    "DeviceMonitor",
    "GradNormMonitor",
    "HeavyTailMonitor",
    "HostMonitor",
    "HostSpectralMonitor",
    "JacobianMonitor",
    "SpectralMonitor",
    "sown_attention_logits",
    "attention_metrics",
    "build_monitors",
    "chain_jacobian_stats",
    "delta_sigma",
    "grad_norm_metrics",
    "grad_norm_monitor",
    "heavy_tail_metrics",
    "heavy_tail_stats",
    "jacobian_metrics",
    "matrix_stats",
    "powerlaw_fit",
    "softmax_row_stats",
    "spectral_metrics",
    "spectral_monitor",
    "stable_rank_monitor",
    "thm42_bound",
]
