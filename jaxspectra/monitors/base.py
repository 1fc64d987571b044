"""The two kinds of training monitor and what the trainer does with their outputs.

* :class:`DeviceMonitor` — a pure, jit-compiled function of ``(params, batch, state)``. The trainer
  compiles its step twice, with and without the hook, and runs the hooked step only on the steps
  where ``every`` divides the step (so a monitor costs nothing on the steps it skips).
* :class:`HostMonitor` — works off the critical path: on the steps it ``wants`` the trainer starts
  an asynchronous device→host copy of the params and hands the NumPy tree to ``submit``; the
  monitor computes in a background thread while the device keeps training, and ``poll`` returns
  finished ``(step, metrics)`` pairs. (A spectral monitor wants both t and t+1 to form the
  one-step SD variation of paper 002 §3.3.)

Metric values: a Python/NumPy/JAX scalar goes to the run's ``metrics.jsonl``; an array (e.g. a
spectrum) goes to ``arrays/step_<t>.npz`` under its key. Keys are ``/``-joined, e.g.
``spectral/attention/block_3/q/stable_rank``.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

Metrics = dict[str, Any]


@runtime_checkable
class DeviceMonitor(Protocol):
    name: str
    every: int

    def init(self, params: Any) -> Any:
        """Initial monitor state (a pytree; may be ``()``)."""

    def __call__(self, params: Any, batch: Any, state: Any) -> tuple[Metrics, Any]:
        """Pure and jit-compatible: metrics (arrays) and the new state."""


@runtime_checkable
class HostMonitor(Protocol):
    name: str

    def wants(self, step: int) -> bool:
        """Whether the params *after* ``step`` should be copied out and submitted."""

    def submit(self, step: int, params: Any) -> None:
        """Hand over a host (NumPy) copy of the params; must not block on the computation."""

    def poll(self) -> list[tuple[int, Metrics]]:
        """Finished results so far (each returned once)."""

    def close(self) -> list[tuple[int, Metrics]]:
        """Wait for outstanding work; return what was not yet polled."""
