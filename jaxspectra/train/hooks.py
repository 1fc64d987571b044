"""The trainer's side of the monitors (:mod:`jaxspectra.monitors`): build them from ``[monitors]``,
decide when a device monitor runs, copy params out for the host monitors without a stall, and
read the optax spectral monitor's records out of the optimiser state.

* :func:`config_monitors` — ``(device, host)`` monitors of ``cfg.monitors`` through
  :func:`jaxspectra.monitors.build_monitors`; the attention / Jacobian probe is the first
  ``probe_batch`` rows of the run's step-0 inputs (fixed for the run, resumed runs included).
* :func:`is_active` — a device monitor runs at ``t`` when its ``active(t)`` says so (a monitor
  may want ``t`` and ``t + 1``), else when ``every > 0 and t % every == 0``.
* :class:`HostCopier` — on a step a host monitor wants: a jitted, **non-donated** on-device copy
  of the params (the state's own buffers are donated to the next step), its device→host
  transfers started at once (``copy_to_host_async``); the NumPy tree is handed to ``submit`` one
  step later, after the next step has been dispatched, so the device never waits on the host.
* :func:`optax_spectral_metrics` — the last record of the chain's
  :func:`~jaxspectra.monitors.spectral_monitor` (``monitors.spectral_every``) as metrics
  ``<matrix>/sigma_max``, ``/stable_rank``, ``/delta_sigma`` (keys as the other spectral
  monitors').
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxspectra.train.config import Config, ConfigError


def config_monitors(cfg: Config, *, module: Any, n_layers: int | None, loss_fn: Callable,
                    probe_inputs: Callable[[], Any]) -> tuple[list[Any], list[Any]]:
    """Device and host monitors that ``cfg.monitors`` turns on (module docstring).

    ``probe_inputs()`` returns the ``[B, T]`` step-0 inputs (called only when a monitor needs a
    probe). Every problem (a bad option value, a probe larger than the batch) is a
    :class:`ConfigError` raised before any compute.
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
        return build_monitors(spec, module=module, n_layers=n_layers, loss_fn=loss_fn,
                              probe_tokens=probe)
    except ValueError as e:
        raise ConfigError(f"[monitors]: {e}") from e


def check_names(device: Sequence[Any], host: Sequence[Any]) -> None:
    """Monitor names key their states and compiled steps: they must be unique."""
    for kind, mons in (("device", device), ("host", host)):
        names = [m.name for m in mons]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"two {kind} monitors share the name(s) {dup}; give each a distinct "
                             "name (e.g. SpectralMonitor(..., name='spectral_10'))")


def is_active(monitor: Any, step: int) -> bool:
    """Whether a device monitor runs at ``step`` (``active(t)`` if it has one, else its cadence)."""
    active = getattr(monitor, "active", None)
    if active is not None:
        return bool(active(step))
    return monitor.every > 0 and step % monitor.every == 0


def _copy_tree(tree: Any) -> Any:
    return jax.tree.map(jnp.copy, tree)


class HostCopier:
    """Params → host monitors, one step late, without blocking the step being run.

    ``start(t, params, monitors)`` dispatches the on-device copy (a separate buffer: the caller
    may donate ``params`` to the next step right after) and starts its device→host transfer;
    ``deliver()`` — called once the next step is dispatched — hands the NumPy tree to each
    monitor's ``submit(t, ·)``. ``shardings`` (the params' shardings) keep the copy where the
    params are.
    """

    def __init__(self, shardings: Any = None):
        self._copy = jax.jit(_copy_tree, out_shardings=shardings)
        self._pending: list[tuple[int, list[Any], Any]] = []

    def start(self, step: int, params: Any, monitors: Sequence[Any]) -> None:
        snap = self._copy(params)
        for leaf in jax.tree.leaves(snap):
            leaf.copy_to_host_async()
        self._pending.append((step, list(monitors), snap))

    def deliver(self) -> None:
        pending, self._pending = self._pending, []
        for step, mons, snap in pending:
            host = jax.device_get(snap)  # the transfer started a step ago: no device wait
            for m in mons:
                m.submit(step, host)


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
