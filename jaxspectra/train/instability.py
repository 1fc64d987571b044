"""Instability verdict of a run from its evaluation-loss curve (paper 004, App. A).

Paper 004 classifies a run as *unstable* if any of four conditions holds; the extraction lost
their numbers (and the authors' code has none), so jaxspectra defines them here. Losses are in
nats; ``best(<i)`` is the lowest finite evaluation loss strictly before evaluation ``i``; ``T`` is
the planned number of steps; thresholds are :class:`jaxspectra.train.config.InstabilitySection`.

1. **Hard loss spike** — an evaluation at step ``≥ spike_after·T`` with
   ``L_i > best(<i) + spike_delta`` (default 1.0 nat: ×2.7 perplexity; evaluation noise of a
   converging run is ≪ 0.1 nat, so this is a spike, not a fluctuation). The first ``10%`` of
   training is excluded because early curves are steep and noisy.
2. **Persistent drift** — the mean over the final ``drift_window`` fraction (default 20%, at least
   one evaluation) exceeds the best loss reached *before* that window by ``drift_delta`` (default
   0.1 nat): the run has left its best loss and stayed away. Comparing with the best before the
   window (not the global minimum) keeps a still-descending curve from being flagged.
3. **Failure to recover from degradation** — some evaluation ``i`` is degraded,
   ``L_i ≥ best(<i) + degrade_delta`` (default 0.5 nat), and every later evaluation stays above
   ``best(<i) + recover_delta`` (default 0.2 nat).
4. **Early termination** — a non-finite training or evaluation loss at a step
   ``≤ early_fraction·T`` (default 1.0: any non-finite loss before the planned end).

The training curve from step 0 (paper 004 has no such criteria; they close the gap through which
a run that never learned — ``learning_rate = 1e3``: loss 4.2 → 1.5e7 — was called stable, since
criteria 1–3 compare evaluations only with each other):

5. **Training divergence** — the mean training loss over the final ``drift_window`` fraction of
   the recorded steps exceeds the step-0 loss (the loss at initialisation) by ``diverge_delta``
   (default 1.0 nat). The step-0 loss also joins the evaluation curve as its first point (when
   the curve has none at step 0), so criteria 1–3 measure against the initial loss too.
6. **Gradient explosion** — a gradient norm above ``explode_factor`` (default 100) × the median
   of all earlier gradient norms, after ``explode_after`` (default 10) steps of history; a
   non-finite gradient norm counts. Normal training moves the gradient norm by ≲ 10× over a
   run (warm-up transients included), so 100× is an explosion, not a fluctuation.

"Small fluctuations within the stable trajectory of converged runs are not treated as unstable"
(paper 004): each threshold is far above evaluation noise. The trainer stops a run at its first
non-finite loss and keeps its last good checkpoint (:mod:`jaxspectra.train.loop`).

Example:
  >>> from jaxspectra.train.config import InstabilitySection
  >>> v = assess([100, 200, 300, 400], [4.0, 3.5, 3.2, 3.1], 400, InstabilitySection())
  >>> v["unstable"]
  False
  >>> assess([100, 200, 300, 400], [4.0, 3.5, 5.0, 3.1], 400, InstabilitySection())["criteria"][
  ...     "hard_spike"]["step"]
  300
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from jaxspectra.train.config import InstabilitySection

CRITERIA = ("hard_spike", "persistent_drift", "failure_to_recover", "early_nonfinite",
            "train_divergence", "grad_explosion")


def _finite(x: float) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def _crit(triggered: bool, step: int | None = None, detail: str = "") -> dict[str, Any]:
    return {"triggered": bool(triggered), "step": step, "detail": detail}


def assess(
    steps: Sequence[int],
    losses: Sequence[float],
    total_steps: int,
    th: InstabilitySection | None = None,
    nonfinite_step: int | None = None,
    train: tuple[Sequence[int], Sequence[float]] | None = None,
    grad_norms: tuple[Sequence[int], Sequence[float]] | None = None,
) -> dict[str, Any]:
    """The verdict: ``{"unstable", "criteria": {name: {triggered, step, detail}}, "thresholds"}``.

    Args:
      steps, losses: the evaluation curve (non-finite values allowed; they trigger criterion 4).
      total_steps: the planned length of the run ``T``.
      th: thresholds (defaults documented in the module docstring).
      nonfinite_step: the step of a non-finite *training* loss, if the run stopped on one.
      train: ``(steps, losses)`` of the training curve from step 0 (criterion 5; its step-0
        loss also opens the evaluation curve).
      grad_norms: ``(steps, norms)`` of the gradient norms (criterion 6).
    """
    th = th or InstabilitySection()
    steps = [int(s) for s in steps]
    losses = [float(x) for x in losses]
    crit: dict[str, dict[str, Any]] = {}
    crit["train_divergence"] = _divergence(train, th)
    crit["grad_explosion"] = _explosion(grad_norms, th)
    if train is not None and len(train[0]) and int(train[0][0]) == 0 and (
            not steps or steps[0] > 0) and _finite(float(train[1][0])):
        steps, losses = [0, *steps], [float(train[1][0]), *losses]

    crit["early_nonfinite"] = _early_nonfinite(steps, losses, total_steps, th, nonfinite_step)
    fin = [(s, x) for s, x in zip(steps, losses) if _finite(x)]
    crit["hard_spike"] = _hard_spike(fin, total_steps, th)
    crit["persistent_drift"] = _drift(fin, th)
    crit["failure_to_recover"] = _no_recovery(fin, th)

    return {
        "unstable": any(c["triggered"] for c in crit.values()),
        "criteria": {name: crit[name] for name in CRITERIA},
        "thresholds": dataclasses.asdict(th),
    }


def _divergence(train: tuple[Sequence[int], Sequence[float]] | None,
                th: InstabilitySection) -> dict[str, Any]:
    if train is None or not len(train[0]) or int(train[0][0]) != 0:
        return _crit(False)
    xs = [float(x) for x in train[1]]
    k = max(1, math.ceil(th.drift_window * len(xs)))
    window = xs[-k:]
    l0 = xs[0]
    if not _finite(l0):
        return _crit(False)
    if any(not _finite(x) for x in window):
        return _crit(True, int(train[0][-k]), "non-finite training loss in the final window")
    mean = sum(window) / k
    hit = mean > l0 + th.diverge_delta
    return _crit(hit, int(train[0][-k]) if hit else None,
                 f"final-window mean train loss {mean:.4g} > step-0 loss {l0:.4g} + "
                 f"{th.diverge_delta}" if hit else "")


def _explosion(grad_norms: tuple[Sequence[int], Sequence[float]] | None,
               th: InstabilitySection) -> dict[str, Any]:
    if grad_norms is None:
        return _crit(False)
    steps, norms = [int(s) for s in grad_norms[0]], [float(x) for x in grad_norms[1]]
    hist: list[float] = []
    for s, g in zip(steps, norms):
        if len(hist) >= th.explode_after:
            med = hist[len(hist) // 2]  # hist is kept sorted
            if not _finite(g) or g > th.explode_factor * med:
                return _crit(True, s, f"gradient norm {g:.4g} > {th.explode_factor} × running "
                                      f"median {med:.4g}")
        if _finite(g):
            bisect.insort(hist, g)
    return _crit(False)


def _best_before(fin: list[tuple[int, float]]) -> list[float]:
    """The lowest loss strictly before each evaluation."""
    out, best = [], math.inf
    for _, x in fin:
        out.append(best)
        best = min(best, x)
    return out


def _early_nonfinite(steps, losses, total_steps, th, nonfinite_step) -> dict[str, Any]:
    """Criterion 4."""
    bad = [s for s, x in zip(steps, losses) if not _finite(x)]
    first_bad = min([s for s in [nonfinite_step, *bad] if s is not None], default=None)
    return _crit(first_bad is not None and first_bad <= th.early_fraction * total_steps,
                 first_bad, f"non-finite loss at step {first_bad}" if first_bad is not None else "")


def _hard_spike(fin, total_steps, th) -> dict[str, Any]:
    """Criterion 1."""
    for (s, x), b in zip(fin, _best_before(fin)):
        if s >= th.spike_after * total_steps and b < math.inf and x > b + th.spike_delta:
            return _crit(True, s, f"loss {x:.4g} > best {b:.4g} + {th.spike_delta}")
    return _crit(False)


def _drift(fin, th) -> dict[str, Any]:
    """Criterion 2."""
    n = len(fin)
    k = max(1, math.ceil(th.drift_window * n))
    if n <= k:
        return _crit(False)
    mean = sum(x for _, x in fin[-k:]) / k
    ref = min(x for _, x in fin[:-k])
    if mean > ref + th.drift_delta:
        return _crit(True, fin[-k][0], f"mean of final {k} eval(s) {mean:.4g} > earlier best "
                                       f"{ref:.4g} + {th.drift_delta}")
    return _crit(False)


def _no_recovery(fin, th) -> dict[str, Any]:
    """Criterion 3."""
    for i, ((s, x), b) in enumerate(zip(fin, _best_before(fin))):
        if b < math.inf and x >= b + th.degrade_delta and all(
                y > b + th.recover_delta for _, y in fin[i:]):
            return _crit(True, s, f"degraded to {x:.4g} (best {b:.4g}) and never back within "
                                  f"{th.recover_delta}")
    return _crit(False)
