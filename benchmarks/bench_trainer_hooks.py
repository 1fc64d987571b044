"""What the hook-driven loop costs (issue 18 §6), in one process on one device.

* ``bare jitted step`` — the engine's plain compiled step called in a Python loop, nothing else
  (the floor);
* ``trainer loop, no hook due`` — :func:`jaxspectra.train.loop.run_loop` with the trainer's own
  per-step host hooks (throughput, metrics file, history, non-finite stop; the metrics fetched
  one step late) and no in-step hook due: goal ≤ 1 % above the bare step;
* ``in-step grad-norm hook, every step`` — :class:`jaxspectra.monitors.grad_norms.GradNormMonitor`
  reading the step's own gradients inside the compiled step;
* ``second-backward grad-norm monitor, every step`` — the former design: a device monitor that
  differentiates the loss once more on the step's batch.

Rows give ms per step (loop wall time / steps, compilation excluded by a warm-up of every
variant) and the overhead against the bare step. ``--quick``: ``gpt-tiny`` on the CPU.
"""

from __future__ import annotations

import tempfile
import time

import jax

from .harness import BenchResult, benchmark, block


class _SecondBackwardGradNorm:
    """The pre-hook design, kept here as the baseline: ∇loss recomputed on the step's batch."""

    name = "grad_norms_2nd_backward"

    def __init__(self, loss_fn):
        self.loss_fn = loss_fn

    def due(self, step):
        return True

    def init(self, params):
        return ()

    def __call__(self, ctx, state):
        from jaxspectra.monitors.grad_norms import grad_norm_metrics

        inputs, targets = ctx.batch
        g = jax.grad(self.loss_fn)(ctx.params, inputs, targets, jax.random.PRNGKey(0))
        return grad_norm_metrics(g), state


def _config(quick: bool):
    from jaxspectra.train.config import from_dict

    on_gpu = jax.default_backend() == "gpu"
    model = ({"name": "gpt-tiny"} if quick else
             {"name": "gpt2-small", "dtype": "bfloat16" if on_gpu else "float32"})
    return from_dict({
        "run": {"dir": tempfile.mkdtemp(prefix="bench_trainer_hooks_"), "num_devices": 1},
        "model": model,
        "data": {"source": "synthetic", "batch_size": 8 if quick else 16,
                 "seq_len": 32 if quick else 1024, "eval_batches": 0},
        "optim": {"name": "adamw", "learning_rate": 6e-4, "clip_norm": 1.0},
        "train": {"steps": 10_000, "progress": False, "log_every": 10},
        "checkpoint": {"every": 0, "keep": 0},
    })


@benchmark("trainer_hooks", "The hook-driven training loop with no hook due vs the bare jitted "
           "step, and the in-step gradient-norm hook vs a second backward pass")
def run(quick: bool) -> BenchResult:
    from jaxspectra.monitors.grad_norms import GradNormMonitor
    from jaxspectra.train.builtin_hooks import History, MetricsLog, StopOnNonFinite, Throughput
    from jaxspectra.train.engine import Engine
    from jaxspectra.train.loop import run_loop
    from jaxspectra.train.setup import setup

    cfg = _config(quick)
    s = setup(cfg, monitors=False)
    eng = Engine(s)
    n = 40 if quick else 100
    batches = [eng.batch(s.dataset, 0, t) for t in range(n)]
    state = eng.init_state(0)
    plain = eng.step(())

    def bare(state):
        t0 = time.perf_counter()
        for b in batches:
            state, m, _, _ = plain(state, b, ())
        block(state.params)
        jax.device_get(m)
        return state, (time.perf_counter() - t0) / n

    def looped(state, step_hooks):
        hooks = [Throughput(1, 1.0, None, []), History(), StopOnNonFinite(),
                 MetricsLog(s.run_dir, cfg.train.log_every, 10**9)]
        t0 = time.perf_counter()
        state, _ = run_loop(eng, state, 0, n, lambda t: batches[t], hooks, step_hooks)
        block(state.params)
        return state, (time.perf_counter() - t0) / n

    variants = [("trainer loop, no hook due", []),
                ("in-step grad-norm hook, every step", [GradNormMonitor(every=1)]),
                ("second-backward grad-norm monitor, every step",
                 [_SecondBackwardGradNorm(eng.loss_fn)])]
    state, _ = bare(state)  # warm-up: compile every variant
    for _, hooks in variants:
        state, _ = looped(state, hooks)
    rows = []
    reps = 2 if quick else 3
    base = float("inf")
    for _ in range(reps):
        state, dt = bare(state)
        base = min(base, dt)
    rows.append({"variant": "bare jitted step", "step_ms": base * 1e3, "overhead_%": 0.0})
    for name, hooks in variants:
        best = float("inf")
        for _ in range(reps):
            state, dt = looped(state, hooks)
            best = min(best, dt)
        rows.append({"variant": name, "step_ms": best * 1e3,
                     "overhead_%": 100 * (best / base - 1)})
    size = "quick: gpt-tiny, B=8, T=32" if quick else "gpt2-small, B=16, T=1024, bf16"
    notes = (f"{size}; {n} steps per variant, best of {reps}; overhead against the bare jitted "
             "step in the same process. Goal: the loop with no hook due ≤ 1 % above the bare "
             "step; the in-step hook well below the second backward pass.")
    return BenchResult(rows=rows, notes=notes, title="trainer_hooks")
