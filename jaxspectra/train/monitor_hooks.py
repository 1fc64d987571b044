"""The monitors (:mod:`jaxspectra.monitors`) as trainer hooks.

* :func:`config_monitors` — ``(device, host)`` monitors that ``[monitors]`` turns on (through
  :func:`jaxspectra.monitors.build_monitors`); the attention / Jacobian probe is the first
  ``probe_batch`` rows of the run's step-0 inputs (fixed for the run, resumed runs included).
* :func:`as_step_hook` — a device monitor as an in-step hook
  (:class:`~jaxspectra.train.step.StepHook`): due when its ``active(t)`` says so, else when
  ``every > 0 and t % every == 0``. A monitor that already is a step hook (it has ``due``; e.g.
  the gradient-norm monitor, which reads the step's own gradients) is used as it is.
* :class:`OptaxSpectralHook` — a host hook copying the record of the chain's
  ``spectral_monitor`` out of the optimiser state on its steps (keys ``<matrix>/sigma_max``,
  ``/stable_rank``, ``/delta_sigma``), fetched one step late.
* :class:`HostMonitors` — a host hook: on a step a host monitor wants, a jitted,
  **non-donated** on-device copy of the params with its device→host transfer started at once;
  the NumPy tree is handed to ``submit`` one step later, after the next step is dispatched, so
  the device never waits on the host. A monitor that raises (e.g. LAPACK on non-finite weights)
  is reported in one line, recorded under ``monitor_errors`` and switched off; the run goes on
  and ends with the trainer's own verdict. A host monitor with a bounded queue
  (:class:`~jaxspectra.monitors.spectral.HostSpectralMonitor`, ``max_pending``) answers
  ``wants`` False while full, so a skipped measurement costs no copy; ``HostMonitors.skipped``
  has the counts.
* :class:`RotatingSpectralHook` — the rotating-slice spectral monitor
  (:mod:`jaxspectra.monitors.rotating`): Σ̂ and the one-step ΔΣ of k of the N matrices per
  measurement, in small jitted programs queued on the device between two steps.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxspectra.monitors import rotating
from jaxspectra.monitors.spectral import DEFAULT_GROUPS
from jaxspectra.train.config import Config, ConfigError
from jaxspectra.train.hooks import Hook, StepInfo


def config_monitors(cfg: Config, *, module: Any, n_layers: int | None,
                    probe_inputs: Callable[[], Any]) -> tuple[list[Any], list[Any]]:
    """Device and host monitors that ``cfg.monitors`` turns on (module docstring).

    ``probe_inputs()`` returns the ``[B, T]`` step-0 inputs (called only when a monitor needs a
    probe). Every problem is a :class:`ConfigError` raised before any compute.
    """
    from jaxspectra.monitors.registry import build_monitors

    spec = cfg.monitors.enabled()
    for name in ("attention", "jacobian"):
        pb = spec.get(name, {}).get("probe_batch")
        if pb is not None and not 1 <= pb <= cfg.data.batch_size:
            raise ConfigError(f"monitors.{name}.probe_batch={pb} must be in 1..data.batch_size="
                              f"{cfg.data.batch_size}")
    probe = None
    if "attention" in spec or "jacobian" in spec:
        probe = np.asarray(probe_inputs()).astype(np.int32)
    try:
        return build_monitors(spec, module=module, n_layers=n_layers, probe_tokens=probe)
    except ValueError as e:
        raise ConfigError(f"[monitors]: {e}") from e


def check_names(*groups: Sequence[Any]) -> None:
    """Hook and monitor names key their states and compiled steps: they must be unique."""
    for mons in groups:
        names = [m.name for m in mons]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"two monitors share the name(s) {dup}; give each a distinct name "
                             "(e.g. SpectralMonitor(..., name='spectral_10'))")


class _MonitorStepHook:
    """A :class:`~jaxspectra.monitors.base.DeviceMonitor` ``(params, batch, state)`` as a step hook."""

    def __init__(self, monitor: Any):
        self.monitor, self.name = monitor, monitor.name

    def due(self, step: int) -> bool:
        active = getattr(self.monitor, "active", None)
        if active is not None:
            return bool(active(step))
        return self.monitor.every > 0 and step % self.monitor.every == 0

    def init(self, params: Any) -> Any:
        return self.monitor.init(params)

    def __call__(self, ctx: Any, state: Any):
        return self.monitor(ctx.params, ctx.batch, state)


def as_step_hook(monitor: Any) -> Any:
    """A step hook for ``monitor`` (module docstring)."""
    return monitor if hasattr(monitor, "due") else _MonitorStepHook(monitor)


def optax_spectral_metrics(opt_state: Any) -> dict[str, jax.Array]:
    """Metrics of the last record of the chain's ``spectral_monitor`` (jit-compatible).

    Includes ``spectral_optax/step``, the update count the record was taken at (−1 before the
    first record), so a reader can check which step the values belong to.
    """
    from jaxspectra.monitors.spectral import SpectralMonitorState

    found = [x for x in jax.tree.leaves(opt_state,
                                        is_leaf=lambda x: isinstance(x, SpectralMonitorState))
             if isinstance(x, SpectralMonitorState)]
    if len(found) != 1:
        raise ValueError(f"expected one spectral_monitor state in the optimiser state, found "
                         f"{len(found)}")
    st = found[0]
    out: dict[str, jax.Array] = {"spectral_optax/step": st.step}
    for stat in ("sigma_max", "stable_rank", "delta_sigma"):
        for k, v in getattr(st, stat).items():
            out[f"{k}/{stat}"] = v
    return out


class OptaxSpectralHook(Hook):
    """Host hook: the optax spectral monitor's record, copied (jitted, not donated) out of the
    optimiser state after each step it records (``every``), its host transfer started at once
    and emitted one step later — no stall, and no extra compiled variant of the step."""

    flush = False

    def __init__(self, every: int, shardings: Any = None):
        self.every = every
        self._copy = jax.jit(lambda st: jax.tree.map(jnp.copy, optax_spectral_metrics(st)),
                             in_shardings=(shardings,) if shardings is not None else None)
        self._pending: tuple[int, Any] | None = None

    def due(self, step: int, end: int) -> bool:  # after update t = step - 1 was recorded
        return (step - 1) % self.every == 0 or self._pending is not None

    def _emit_pending(self, info: StepInfo) -> None:
        if self._pending is not None:
            t, rec = self._pending
            self._pending = None
            info.control.emit(t, jax.device_get(rec), "monitor")

    def __call__(self, info: StepInfo) -> None:
        self._emit_pending(info)
        t = info.step - 1
        if t % self.every == 0:
            rec = self._copy(info.state.opt_state)
            for leaf in jax.tree.leaves(rec):
                leaf.copy_to_host_async()
            self._pending = (t, rec)

    def close(self, info: StepInfo) -> None:
        self._emit_pending(info)


class HostMonitors(Hook):
    """Params → host monitors one step late, without blocking the step being run."""

    every = 1

    def __init__(self, monitors: Sequence[Any], shardings: Any = None):
        self.monitors = list(monitors)
        self.errors: dict[str, str] = {}
        self._copy = jax.jit(lambda tree: jax.tree.map(jnp.copy, tree), out_shardings=shardings)
        self._pending: list[tuple[int, list[Any], Any]] = []
        self._control = None
        self.close_seconds = 0.0

    def start(self, info: StepInfo) -> None:
        self._control = info.control

    def _guard(self, monitor: Any, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as e:  # a monitor must never end the run
            msg = f"{type(e).__name__}: {e}".splitlines()[0]
            self.errors[monitor.name] = msg
            self.monitors = [m for m in self.monitors if m is not monitor]
            print(f"jaxspectra train: host monitor {monitor.name!r} failed and is switched off "
                  f"({msg})", file=sys.stderr, flush=True)
            return None

    def _deliver(self) -> None:
        pending, self._pending = self._pending, []
        for step, mons, snap in pending:
            host = jax.device_get(snap)  # the transfer started a step ago: no device wait
            for m in mons:
                if m in self.monitors:
                    self._guard(m, lambda m=m, s=step, h=host: m.submit(s, h))

    def _emit(self, results: Any) -> None:
        for st, mm in results or ():
            self._control.emit(st, mm, "monitor")

    def __call__(self, info: StepInfo) -> None:
        self._deliver()  # copies started last step have landed while this one was queued
        t = info.step - 1  # the update just dispatched
        wanted = [m for m in self.monitors if m.wants(t)]
        if wanted:  # copy (the state is donated to the next step), start the host transfer
            snap = self._copy(info.state.params)
            for leaf in jax.tree.leaves(snap):
                leaf.copy_to_host_async()
            self._pending.append((t, wanted, snap))
        for m in list(self.monitors):
            self._emit(self._guard(m, m.poll))

    @property
    def skipped(self) -> dict[str, int]:
        """Measurements each bounded-queue host monitor skipped (queue full), by name — what a
        run summary reports beside ``monitor_errors``."""
        return {m.name: int(m.skipped) for m in self.monitors if hasattr(m, "skipped")}

    def close(self, info: StepInfo) -> None:
        t0 = time.perf_counter()
        self._deliver()
        for m in list(self.monitors):
            self._emit(self._guard(m, m.close))
        self.close_seconds = time.perf_counter() - t0  # the host backlog at the end


class RotatingSpectralHook(Hook):
    """Host hook driving the rotating-slice spectral monitor (:mod:`jaxspectra.monitors.rotating`,
    whose docstring says what each number means and when it was measured).

    On a measurement step u (``u % every == 0``, u = updates done; u = the first step is taken in
    :meth:`start`) it dispatches the jitted spectra of slice ``s(u)`` of W_u; after the next
    update, the same slice's spectra of W_{u+1}. Both are small programs of their own (one per
    slice, compiled on first use) queued on the device between two steps: the train step is not
    recompiled and the host never waits — the singular values (k × short side floats) are copied
    to the host asynchronously and emitted under step u at the first call after they have
    landed (``is_ready``; at the last update, whatever is left), with ΔΣ formed in float64 from
    the pair. Works with any optimiser (it reads only the params).

    Args:
      every: measure every ``every`` updates (≥ 1); each matrix then every ``every · S``.
      k: matrices per slice (S = ceil(N / k) slices).
      groups, split_qkv, arrays: as :class:`~jaxspectra.monitors.spectral.SpectralMonitor`.
      precision, solver: :func:`jaxspectra.monitors.rotating.gram_spectrum`.
    """

    flush = False
    at_end = True

    def __init__(self, every: int = 10, k: int = 12, groups: Sequence[str] | None = None,
                 split_qkv: bool = True, arrays: bool = True, precision: str = "auto",
                 solver: str = "eigh", name: str = "spectral_rot"):
        if every < 1 or k < 1:
            raise ValueError(f"every and k must be ≥ 1, got every={every}, k={k}")
        if precision not in rotating.PRECISIONS or solver not in rotating.SOLVERS:
            raise ValueError(f"precision must be one of {list(rotating.PRECISIONS)} and solver "
                             f"one of {list(rotating.SOLVERS)}; got {precision!r}, {solver!r}")
        self.every, self.k, self.arrays, self.name = every, k, arrays, name
        self.groups = tuple(groups) if groups is not None else DEFAULT_GROUPS
        self.split_qkv, self.precision, self.solver = split_qkv, precision, solver
        self.plan: Any = None
        self._first: tuple[int, int, Any] | None = None  # (u, slice, device sv of W_u)
        self._ready: list[tuple[int, int, Any, Any]] = []  # (u, slice, sv_u, sv_{u+1})
        self.measured = 0

    def due(self, step: int, end: int) -> bool:
        return step % self.every in (0, 1 % self.every) or bool(self._ready) or step == end

    def _fn(self, s: int) -> Callable:
        return rotating.jitted_slice_spectra(self.plan, s, self.precision, self.solver)

    def _measure(self, u: int, params: Any) -> None:
        if self._first is not None and self._first[0] == u - 1:
            t, s, sv_t = self._first
            sv_next = self._fn(s)(params)  # the same slice, one update later
            for leaf in jax.tree.leaves((sv_t, sv_next)):
                leaf.copy_to_host_async()
            self._ready.append((t, s, sv_t, sv_next))
            self._first = None
        s = rotating.slice_of(self.plan, self.every, u)
        if s is not None:
            self._first = (u, s, self._fn(s)(params))

    def _emit(self, control: Any, final: bool = False) -> None:
        if final:
            ready, self._ready = self._ready, []
            if self._first is not None:  # the run ended before u + 1: Σ̂ only, no ΔΣ
                ready.append((*self._first, None))
                self._first = None
        else:  # only what has landed: the host never waits on the device
            landed = [all(x.is_ready() for x in jax.tree.leaves(r[2:])) for r in self._ready]
            ready = [r for r, ok in zip(self._ready, landed) if ok]
            self._ready = [r for r, ok in zip(self._ready, landed) if not ok]
        for u, s, sv_u, sv_next in ready:
            host_u, host_next = jax.device_get((sv_u, sv_next))  # computed; host copy under way
            control.emit(u, rotating.record(host_u, host_next, s, self.plan.n_slices,
                                            self.arrays), "monitor")
            self.measured += 1

    def start(self, info: StepInfo) -> None:
        self.plan = rotating.plan_slices(info.state.params, self.k, self.groups, self.split_qkv)
        self._measure(info.step, info.state.params)

    def __call__(self, info: StepInfo) -> None:
        self._emit(info.control)
        self._measure(info.step, info.state.params)
        if info.step == info.end:  # the last update: emit now, before the metric files close
            self._emit(info.control, final=True)

    def close(self, info: StepInfo) -> None:  # only after an early stop is anything left
        self._emit(info.control, final=True)
