"""Cost of the training monitors (issue 15 §7): step time with spectral monitors on vs off.

A GPT-2-small training loop (the trainer's own compiled steps, :class:`jaxspectra.train.loop.
Engine`, synthetic data, bf16 compute on GPUs) is run for ``N`` steps with

* ``none`` — the plain step every step (baseline, same process);
* ``device every k`` — :class:`~jaxspectra.monitors.SpectralMonitor` inside the hooked step on
  steps ``t % k == 0`` (σ_max, ‖W‖_F, stable rank, σ, Gram diagonal/off-diagonal of every
  matrix, the fused qkv split: fp32 Gram ``eigvalsh`` on the device, on the critical path);
* ``host every k`` — :class:`~jaxspectra.monitors.HostSpectralMonitor`: params copied out after
  steps t and t+1 (``jax.device_get``, as the trainer does) and the spectra + one-step ΔΣ
  computed in a NumPy thread while the device trains.

for k = 10 and 50, reporting the mean step time (wall time of the loop / N, compile excluded by
a warm-up pass that runs both the plain and the hooked steps) and the overhead against ``none``
(goals: ≤ 5 % every 50, ≤ 20 % every 10). For the host monitor, ``backlog_s`` is how long
``close()`` still had to wait after the last step: a backlog that grows with N means the host
cannot keep up at that cadence. Also timed per call (``time_fn``, jitted): the device spectral
metrics alone, the heavy-tail fit of every matrix, the attention monitor and the Jacobian monitor
(``iters`` power-iteration steps per block plus the total norm) on a probe batch.

``--quick``: ``gpt-tiny`` on the CPU, 60 steps, cadences 10 and 50.
"""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp

from jaxspectra.monitors import (
    AttentionMonitor,
    HostSpectralMonitor,
    JacobianMonitor,
    SpectralMonitor,
    heavy_tail_metrics,
    spectral_metrics,
)
from jaxspectra.train.config import from_dict
from jaxspectra.train.engine import Engine
from jaxspectra.train.hooks import Hook
from jaxspectra.train.loop import run_loop
from jaxspectra.train.monitor_hooks import HostMonitors, as_step_hook
from jaxspectra.train.setup import setup

from .harness import BenchResult, benchmark, block, time_fn


def _config(quick: bool, run_dir: str):
    on_gpu = jax.default_backend() == "gpu"
    model = ({"name": "gpt-tiny"} if quick else
             {"name": "gpt2-small", "dtype": "bfloat16" if on_gpu else "float32"})
    return from_dict({
        "run": {"dir": run_dir, "seed": 0, "num_devices": 1},
        "model": model,
        "data": {"source": "synthetic", "batch_size": 8 if quick else 16,
                 "seq_len": 32 if quick else 1024, "eval_batches": 0},
        "optim": {"name": "adamw", "learning_rate": 6e-4},
        "train": {"steps": 10_000, "progress": False},
        "checkpoint": {"every": 0, "keep": 0},
    })


def _loop(eng: Engine, state, batches, device_mons, host_mons, start: int):
    """The trainer's own loop (:func:`~jaxspectra.train.loop.run_loop`) with the monitors as its
    hooks; returns (state, seconds per step, backlog seconds)."""
    hosts = HostMonitors(host_mons, eng.state_sh.params)
    n = len(batches)
    t0 = time.perf_counter()
    state, _ = run_loop(eng, state, start, start + n, lambda t: batches[t - start],
                        [_Timer(), hosts], [as_step_hook(m) for m in device_mons])
    dt = (time.perf_counter() - t0) / n
    return state, dt, hosts.close_seconds


class _Timer(Hook):
    """Blocks on the last state before the loop's hooks close (the host backlog is timed apart)."""

    def close(self, info):
        block(info.state.params)


def _add(rows: list, row: dict) -> None:
    rows.append(row)
    print(f"[monitors] {row}", file=sys.stderr, flush=True)  # progress survives a time limit


@benchmark("monitors", "Training-loop overhead of the spectral monitors (device / host) every "
           "10 and 50 steps vs none, and the per-call cost of each monitor")
def run(quick: bool) -> BenchResult:
    import tempfile

    tmp = tempfile.mkdtemp(prefix="bench_monitors_")
    cfg = _config(quick, tmp)
    s = setup(cfg, monitors=False)
    n_steps = 60 if quick else 100
    cadences = (10, 50)
    spec_mons = {k: SpectralMonitor(every=k, name=f"spectral_{k}") for k in cadences}
    eng = Engine(s)
    state = eng.init_state(0)
    batches = [eng.batch(s.dataset, s.data_seed, t) for t in range(n_steps)]
    # warm-up: compile the plain and every hooked step
    for m in spec_mons.values():
        state, _, _ = _loop(eng, state, batches[:2], [m], [], start=0)
    state, _, _ = _loop(eng, state, batches[:2], [], [], start=1)

    rows = []
    state, base, _ = _loop(eng, state, batches, [], [], start=1)
    _add(rows, {"variant": "none", "every": "-", "step_ms": base * 1e3, "overhead_%": 0.0,
                 "backlog_s": 0.0})
    for k in cadences:
        state, dt, _ = _loop(eng, state, batches, [spec_mons[k]], [], start=0)
        _add(rows, {"variant": "device spectral", "every": k, "step_ms": dt * 1e3,
                     "overhead_%": 100 * (dt / base - 1), "backlog_s": 0.0})
    for k in cadences:
        hm = HostSpectralMonitor(every=k, workers=2 if quick else 8)
        state, dt, backlog = _loop(eng, state, batches, [], [hm], start=0)
        _add(rows, {"variant": "host spectral (t, t+1; ΔΣ)", "every": k, "step_ms": dt * 1e3,
                     "overhead_%": 100 * (dt / base - 1), "backlog_s": backlog})
    # re-time the baseline last (drift check)
    state, base2, _ = _loop(eng, state, batches, [], [], start=1)
    _add(rows, {"variant": "none (again)", "every": "-", "step_ms": base2 * 1e3,
                 "overhead_%": 100 * (base2 / base - 1), "backlog_s": 0.0})

    params = state.params
    module, mcfg = s.module, s.model_config
    probe = jnp.zeros((1, 32 if quick else 128), jnp.int32)
    reps = dict(warmup=1, repeats=3 if quick else 5)
    per_call = [
        ("spectral_metrics (device, all matrices)", jax.jit(spectral_metrics), (params,)),
        ("heavy_tail_metrics (all matrices)", jax.jit(heavy_tail_metrics), (params,)),
        ("attention monitor (probe 4×T)", jax.jit(
            lambda p: AttentionMonitor(module, probe.repeat(4, 0))(p, None, ())[0]), (params,)),
        ("jacobian monitor (probe 1×T, 20 iters)", jax.jit(
            lambda p: JacobianMonitor(module, probe, mcfg.n_layers, iters=20)(p, None, ())[0]),
         (params,)),
    ]
    for name, fn, args in per_call:
        t = time_fn(fn, *args, **reps)
        _add(rows, {"variant": name, "every": "per call", "step_ms": t * 1e3,
                     "overhead_%": "", "backlog_s": ""})
    size = "quick: gpt-tiny, B=8, T=32" if quick else "gpt2-small, B=16, T=1024"
    notes = (f"{size}; {n_steps} steps per variant; step_ms = loop wall time / steps (compile "
             "excluded). Goals: ≤ 5 % overhead every 50 steps, ≤ 20 % every 10. The host "
             "variant uses the trainer's copy-out (`train/monitor_hooks.HostMonitors`: an on-device copy "
             "and an async device→host transfer, submitted one step later); its spectra run in NumPy threads (2 quick, 8 full); backlog_s > 0 means the "
             "host had not caught up when training ended.")
    return BenchResult(rows=rows, notes=notes, title="monitors")
