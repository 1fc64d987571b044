"""Cost of the training monitors (issues 15 §7, 24 item 2): step time with spectral monitors.

A GPT-2-small training loop (the trainer's own compiled steps, :class:`jaxspectra.train.loop.
Engine`, synthetic data, bf16 compute on GPUs, B=16, T=1024) is run for ``N`` steps with

* ``bare jitted step`` — the plain compiled step in a Python loop (the baseline of issue 24);
* ``none`` — the trainer loop with no monitor (same process);
* ``device full every k`` — :class:`~jaxspectra.monitors.SpectralMonitor` inside the hooked step
  on steps ``t % k == 0`` (σ_max, ‖W‖_F, stable rank, σ, Gram diagonal/off-diagonal of every
  matrix; no ΔΣ), on the critical path;
* ``rotating k/N every k'`` — :class:`~jaxspectra.train.monitor_hooks.RotatingSpectralHook`:
  Σ̂ and the one-step ΔΣ of a slice of ``ROT_K`` of the N matrices per measurement (its spectra
  of W_u and W_{u+1}, small jitted programs between steps); every matrix every k'·S steps;
* ``host bounded every k`` — :class:`~jaxspectra.monitors.HostSpectralMonitor` with its bounded
  queue (``max_pending=2`` measurements): params copied out after t and t+1 (the trainer's
  :class:`~jaxspectra.train.monitor_hooks.HostMonitors`) and spectra + ΔΣ computed in NumPy
  threads; ``skipped`` = measurements dropped because the queue was full;

for k = 10 and 50, reporting the mean step time (loop wall time / N, compile excluded by a
warm-up that runs every compiled program) and the overhead against the bare step (goals: ≤ 5 %
every 50, ≤ 20 % every 10). ``backlog_s`` is how long the host monitor's ``close()`` still had to
wait after the last step (bounded by ``max_pending`` measurements). Also timed per call (jitted):
the device spectral metrics, the spectra of all matrices with each eigensolver (``eigh``,
``jacobi`` (GPU only), ``svd`` of the Gram) and one rotating slice; the heavy-tail fit, the
attention monitor and the Jacobian monitor only with ``JAXSPECTRA_BENCH_MONITORS_OTHERS=1``
(their compiles would take the full run past 3 min).

``--quick``: ``gpt-tiny`` on the CPU, 20 steps, cadences 10 and 50 (a sanity run).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp

from jaxspectra import matrices
from jaxspectra.monitors import (
    AttentionMonitor,
    HostSpectralMonitor,
    JacobianMonitor,
    SpectralMonitor,
    heavy_tail_metrics,
    spectral_metrics,
)
from jaxspectra.monitors.rotating import gram_spectrum, jitted_slice_spectra, plan_slices
from jaxspectra.monitors.spectral import matrix_entries
from jaxspectra.train.config import from_dict
from jaxspectra.train.engine import Engine
from jaxspectra.train.hooks import Hook
from jaxspectra.train.loop import run_loop
from jaxspectra.train.monitor_hooks import HostMonitors, RotatingSpectralHook, as_step_hook
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


ROT_K = 12  # matrices per rotating slice: GPT-2-small's 74 → 7 slices of 10–11


def _loop(eng: Engine, state, batches, device_mons, host_mons, start: int, hooks=()):
    """The trainer's own loop (:func:`~jaxspectra.train.loop.run_loop`) with the monitors as its
    hooks; returns (state, seconds per step, host backlog seconds, host monitors hook)."""
    hosts = HostMonitors(host_mons, eng.state_sh.params)
    n = len(batches)
    t0 = time.perf_counter()
    state, _ = run_loop(eng, state, start, start + n, lambda t: batches[t - start],
                        [_Timer(), hosts, *hooks], [as_step_hook(m) for m in device_mons])
    dt = (time.perf_counter() - t0) / n
    return state, dt, hosts.close_seconds, hosts


def _bare(eng: Engine, state, batches):
    """The plain compiled step in a Python loop, no hooks and no metrics fetched."""
    step = eng.step(())
    t0 = time.perf_counter()
    for b in batches:
        state, metrics, _, _ = step(state, b, ())
    block((state.params, metrics))
    return state, (time.perf_counter() - t0) / len(batches)


class _Timer(Hook):
    """Blocks on the last state before the loop's hooks close (the host backlog is timed apart)."""

    def close(self, info):
        block(info.state.params)


def _add(rows: list, row: dict) -> None:
    rows.append(row)
    print(f"[monitors] {row}", file=sys.stderr, flush=True)  # progress survives a time limit


def _all_spectra(params, solver: str):
    """σ of every monitored matrix with ``solver`` (one batched eigenproblem per shape)."""
    ents = [x.reshape((-1,) + x.shape[-2:]) for _, _, x in matrix_entries(params)]
    return matrices.map_banks(lambda b: gram_spectrum(b, solver=solver), ents)


@benchmark("monitors", "Training-loop overhead of the spectral monitors (device full, rotating "
           "slices with one-step ΔΣ, host with a bounded queue) every 10 and 50 steps vs the "
           "bare step, and the per-call cost of each monitor and eigensolver")
def run(quick: bool) -> BenchResult:
    import tempfile

    tmp = tempfile.mkdtemp(prefix="bench_monitors_")
    cfg = _config(quick, tmp)
    s = setup(cfg, monitors=False)
    n_steps = 20 if quick else 60
    cadences = (10, 50)
    full = SpectralMonitor(every=cadences[0], name="spectral_full")  # one compiled variant
    eng = Engine(s)
    state = eng.init_state(0)
    batches = [eng.batch(s.dataset, s.data_seed, t) for t in range(n_steps)]
    rot_k = min(ROT_K, 4) if quick else ROT_K
    # warm-up: compile the plain and the hooked step and every rotating slice's program
    state, _, _, _ = _loop(eng, state, batches[:2], [full], [], start=0)
    state, _ = _bare(eng, state, batches[:2])
    warm = RotatingSpectralHook(every=1, k=rot_k)
    state, _, _, _ = _loop(eng, state, batches[:2], [], [], start=1, hooks=[warm])
    for sl in range(warm.plan.n_slices):
        block(warm._fn(sl)(state.params))

    rows = []

    def add(variant, every, dt, backlog=0.0, skipped=""):  # overhead filled in at the end
        _add(rows, {"variant": variant, "every": every, "step_ms": dt * 1e3,
                    "overhead_%": None, "backlog_s": backlog, "skipped": skipped})

    state, base = _bare(eng, state, batches)
    add("bare jitted step", "-", base)
    state, dt, _, _ = _loop(eng, state, batches, [], [], start=1)
    add("none (trainer loop)", "-", dt)
    for k in cadences:
        full.every = k
        state, dt, _, _ = _loop(eng, state, batches, [full], [], start=0)
        add("device full (Σ̂ only, all matrices)", k, dt)
    for k in cadences:
        rot = RotatingSpectralHook(every=k, k=rot_k)
        state, dt, _, _ = _loop(eng, state, batches, [], [], start=0, hooks=[rot])
        n, sl = len(rot.plan.units), rot.plan.n_slices
        add(f"rotating {rot_k}/{n} (Σ̂ + ΔΣ; each matrix every {k * sl})", k, dt)
    for k in cadences:
        hm = HostSpectralMonitor(every=k, workers=2, max_pending=2)
        state, dt, backlog, _ = _loop(eng, state, batches, [], [hm], start=0)
        add("host bounded (Σ̂ + ΔΣ, max_pending=2)", k, dt, backlog,
            f"{hm.skipped} of {hm.skipped + hm.accepted}")
    state, base2 = _bare(eng, state, batches)
    add("bare jitted step (again)", "-", base2)
    ref_ms = min(base, base2) * 1e3  # the faster of the two bare runs (drift shows between them)
    for r in rows:
        r["overhead_%"] = 100 * (r["step_ms"] / ref_ms - 1)

    params = state.params
    module, mcfg = s.module, s.model_config
    probe = jnp.zeros((1, 32 if quick else 128), jnp.int32)
    reps = dict(warmup=1, repeats=3 if quick else 5)
    solvers = ("eigh", "svd") + (("jacobi",) if jax.default_backend() == "gpu" else ())
    plan = plan_slices(params, rot_k)
    per_call = [("spectral_metrics (device full, all matrices)", jax.jit(spectral_metrics))]
    per_call += [(f"σ of all {len(plan.units)} matrices, solver={sv}",
                  jax.jit(lambda p, sv=sv: _all_spectra(p, sv))) for sv in solvers]
    per_call += [(f"one rotating slice ({len(plan.slices[0])} matrices)",
                  jitted_slice_spectra(plan, 0))]
    others = os.environ.get("JAXSPECTRA_BENCH_MONITORS_OTHERS") == "1"
    per_call += [] if not others else [
        ("heavy_tail_metrics (all matrices)", jax.jit(heavy_tail_metrics)),
        ("attention monitor (probe 4×T)", jax.jit(
            lambda p: AttentionMonitor(module, probe.repeat(4, 0))(p, None, ())[0])),
        ("jacobian monitor (probe 1×T, 20 iters)", jax.jit(
            lambda p: JacobianMonitor(module, probe, mcfg.n_layers, iters=20)(p, None, ())[0])),
    ]
    for name, fn in per_call:
        try:
            ms: Any = time_fn(fn, params, **reps) * 1e3
        except Exception as e:  # e.g. a solver this backend lacks: say so, keep the other rows
            ms, name = float("nan"), f"{name} (failed: {type(e).__name__}: {str(e)[:80]})"
        _add(rows, {"variant": name, "every": "per call", "step_ms": ms,
                     "overhead_%": "", "backlog_s": "", "skipped": ""})
    size = ("quick: gpt-tiny, B=8, T=32" if quick else
            f"gpt2-small, B=16, T=1024, {s.model_config.dtype}")
    notes = (f"{size}; {n_steps} steps per variant; step_ms = loop wall time / steps (compile "
             "excluded); overhead against the faster of the two bare-jitted-step runs of the same process. Goals "
             "(issue 24): ≤ 5 % every 50 steps, ≤ 20 % every 10; host backlog bounded. Rotating: "
             f"k = {rot_k} matrices per measurement, Σ̂ and ΔΣ of the same matrices at u and "
             "u + 1. Host: HostMonitors' on-device copy + async transfer, NumPy in 2 threads, at "
             "most 2 measurements in flight (skipped = dropped while full).")
    return BenchResult(rows=rows, notes=notes, title="monitors")
