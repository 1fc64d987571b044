"""The run's start-up header and ``summary.json`` (with the instability verdict).

The verdict (:func:`jaxspectra.train.instability.assess`) reads the evaluation curve — or, when a
run evaluates nothing, the training curve averaged over 20 windows — together with the training
loss from step 0 and the gradient norms, so divergence, explosion and NaN are never "stable".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from jaxspectra.train.instability import assess


def write_json(path: Path, obj: Any) -> None:
    """Atomic JSON write (a temporary file renamed into place)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    tmp.replace(path)


def header(s: Any, run: Any, members: int | None = None) -> str:
    """One line: parameters per group, FLOPs/token, devices, fresh or resumed."""
    counts = run.param_counts
    groups = ", ".join(f"{k} {v:,}" for k, v in counts.items() if k != "total")
    what = f"sweep of {members} members, " if members else ""
    return (f"jaxspectra {'sweep' if members else 'train'}: {what}{counts['total']:,} parameters "
            f"({groups}); {run.flops_per_token / 1e6:.3g} MFLOP/token; {s.n_devices} device(s); "
            + (f"resumed at step {run.start}" if run.start else "from scratch")
            + f"; outputs in {s.run_dir}")


def _windowed(curve: list[tuple[int, float]], n: int = 20) -> list[tuple[int, float]]:
    w = max(1, len(curve) // n)
    return [(curve[i + w - 1][0], float(np.mean([x for _, x in curve[i:i + w]])))
            for i in range(0, len(curve) - w + 1, w)]


def verdict(cfg: Any, history: Any, nonfinite_step: int | None, member: int | None = None
            ) -> dict[str, Any]:
    """The instability verdict of one run (``member``: one column of a sweep's history)."""
    def col(curve):
        return [(s, float(np.asarray(v)[member]) if member is not None else float(v))
                for s, v in curve]

    train, grads, evals = col(history.train), col(history.grad_norm), col(history.evals)
    curve = evals or _windowed(train)
    return assess([c[0] for c in curve], [c[1] for c in curve], cfg.train.steps,
                  cfg.instability, nonfinite_step,
                  train=([s for s, _ in train], [x for _, x in train]),
                  grad_norms=([s for s, _ in grads], [x for _, x in grads]))


def run_summary(s: Any, run: Any, state: Any, control: Any, history: Any, nonfinite: Any,
                tput: Any, hosts: Any, end: int) -> dict[str, Any]:
    """``summary.json`` of a single run."""
    cfg = s.cfg
    reason = control.stop_reason
    done = int(state.step)
    stopped = {"nonfinite": "nonfinite", "preempted": "preempted",
               "interrupted": "interrupted"}.get(reason or "", "completed")
    if stopped == "completed" and done < cfg.train.steps:
        stopped = "preempted"  # stop_after: a planned stop before the end
    tok_s = tput.steady()
    return {
        "steps_done": nonfinite.first if reason == "nonfinite" else done,
        "planned_steps": cfg.train.steps,
        "stopped": stopped,
        "resumed_from": run.resumed_from,
        "last_checkpoint": getattr(run, "last_saved", None),
        "final_loss": float(history.train[-1][1]) if history.train else None,
        "final_eval_loss": float(history.evals[-1][1]) if history.evals else None,
        "param_counts": run.param_counts,
        "flops_per_token": run.flops_per_token,
        "tokens_per_s": tok_s,
        "mfu": (tok_s * run.flops_per_token / run.peak_flops
                if run.peak_flops and np.isfinite(tok_s) else None),
        "devices": s.n_devices,
        "monitor_errors": hosts.errors,
        "monitor_skipped": hosts.skipped,  # measurements a bounded host queue dropped
        "verdict": verdict(cfg, history, nonfinite.first),
    }
