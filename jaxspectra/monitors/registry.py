"""Monitors by name, for configs: ``build_monitors(spec, ...) -> (device, host)``.

``spec`` maps a monitor name to its options (a TOML table ``[monitors.<name>]``)::

    [monitors.spectral]     every = 50, where = "host"   # or "device" (no ΔΣ on the device),
                                                         # or "rotating" (k matrices per step)
    [monitors.heavy_tail]   every = 500, min_tail = 10
    [monitors.attention]    every = 100, probe_batch = 4, rows = -1
    [monitors.jacobian]     every = 500, iters = 20, probe_batch = 1
    [monitors.grad_norms]   every = 10

The probe batch of the attention / Jacobian monitors is the first ``probe_batch`` rows of the
batch the caller passes as ``probe_tokens`` (the trainer: its step-0 batch, fixed for the run).
Unknown names or options raise a ``ValueError`` that lists the known ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jaxspectra.monitors.attention import AttentionMonitor
from jaxspectra.monitors.grad_norms import GradNormMonitor
from jaxspectra.monitors.heavy_tail import HeavyTailMonitor
from jaxspectra.monitors.jacobian import JacobianMonitor
from jaxspectra.monitors.spectral import HostSpectralMonitor, SpectralMonitor

OPTIONS: dict[str, dict[str, Any]] = {
    "spectral": {"every": 50, "where": "host", "arrays": True, "split_qkv": True, "workers": 1,
                 "k": 12, "solver": "eigh"},  # k, solver: where = "rotating" only
    "heavy_tail": {"every": 500, "min_tail": 10},
    "attention": {"every": 100, "probe_batch": 4, "rows": None},
    "jacobian": {"every": 500, "iters": 20, "probe_batch": 1, "early_layers": None},
    "grad_norms": {"every": 10},
}


def rotating_options(spec: Mapping[str, Mapping[str, Any]]) -> dict[str, Any] | None:
    """The spectral monitor's options when it is ``where = "rotating"`` (a host hook of the
    trainer, :class:`jaxspectra.train.monitor_hooks.RotatingSpectralHook`), else ``None``."""
    opts = spec.get("spectral")
    if not opts or opts.get("where") != "rotating":
        return None
    return {**OPTIONS["spectral"], **opts}


def build_monitors(spec: Mapping[str, Mapping[str, Any]], *, module: Any = None,
                   n_layers: int | None = None,
                   probe_tokens: Any = None) -> tuple[list[Any], list[Any]]:
    """Device and host monitors from ``spec`` (module docstring).

    Args:
      module: the Flax model (attention, Jacobian monitors).
      n_layers: its number of blocks (Jacobian monitor).
      probe_tokens: ``[B, T]`` int tokens for the attention / Jacobian probes.
    """
    device: list[Any] = []
    host: list[Any] = []
    for name, opts in spec.items():
        if name not in OPTIONS:
            raise ValueError(f"unknown monitor {name!r}; known: {sorted(OPTIONS)}")
        bad = set(opts) - set(OPTIONS[name])
        if bad:
            raise ValueError(f"monitors.{name}: unknown option(s) {sorted(bad)}; known: "
                             f"{sorted(OPTIONS[name])}")
        o = {**OPTIONS[name], **opts}
        needs = {"attention": ("module", "probe_tokens"), "jacobian": ("module", "probe_tokens",
                                                                        "n_layers"),
                 }.get(name, ())
        given = {"module": module, "probe_tokens": probe_tokens, "n_layers": n_layers,
                 }
        missing = [k for k in needs if given[k] is None]
        if missing:
            raise ValueError(f"monitors.{name} needs {missing} (pass them to build_monitors)")
        if name == "spectral":
            if o["where"] == "host":
                host.append(HostSpectralMonitor(o["every"], split_qkv=o["split_qkv"],
                                                arrays=o["arrays"], workers=o["workers"]))
            elif o["where"] == "device":
                device.append(SpectralMonitor(o["every"], split_qkv=o["split_qkv"],
                                              arrays=o["arrays"]))
            elif o["where"] != "rotating":  # rotating: the trainer's RotatingSpectralHook
                raise ValueError(f"monitors.spectral.where must be 'host', 'device' or "
                                 f"'rotating', got {o['where']!r}")
        elif name == "heavy_tail":
            device.append(HeavyTailMonitor(o["every"], o["min_tail"]))
        elif name == "attention":
            device.append(AttentionMonitor(module, probe_tokens[: o["probe_batch"]], o["every"],
                                           o["rows"]))
        elif name == "jacobian":
            device.append(JacobianMonitor(module, probe_tokens[: o["probe_batch"]], n_layers,
                                          o["every"], o["iters"], o["early_layers"]))
        else:
            device.append(GradNormMonitor(o["every"]))
    return device, host
