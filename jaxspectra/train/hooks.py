"""Host hooks: what the training loop does between steps, as small named objects.

The loop (:func:`jaxspectra.train.loop.run_loop`) knows nothing but hooks. After each step it
hands every hook the records fetched so far (``on_record``: the previous step's metrics, one
step late; evaluations; host-monitor results) and calls the hooks that are ``due`` with a
:class:`StepInfo`. Eval, checkpoints, metric files, the progress bar, host monitors, signals and
the non-finite stop are all hooks (:mod:`jaxspectra.train.builtin_hooks`); a research loop adds
its own without touching the loop. In-step (jit) hooks are :class:`jaxspectra.train.step.StepHook`.

A custom hook — log the norm of the embedding every 100 steps::

    import jax.numpy as jnp
    from jaxspectra.train.hooks import Hook

    class EmbedNorm(Hook):
        every = 100

        def __call__(self, info):
            w = info.state.params["params"]["embed"]["embedding"]
            info.control.emit(info.step, {"embed_norm": float(jnp.linalg.norm(w))})

    train(cfg, hooks=[EmbedNorm()])   # "embed_norm" lands in metrics.jsonl at steps 100, 200, …

Hooks run in list order; the state handed to a hook is donated to the next step, so a hook that
keeps arrays copies them (``jnp.copy``) or reads them to the host at once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple


class Record(NamedTuple):
    """A host-side record: ``kind`` is ``"train"`` (a step's metrics, fetched one step late),
    ``"eval"``, ``"monitor"`` (device or host monitor results) or any name a hook emits."""

    step: int
    kind: str
    values: dict[str, Any]


class LoopControl:
    """Shared by the hooks of one run: ``emit`` a record to every hook, ``stop`` the loop."""

    def __init__(self, hooks: list[Hook]):
        self.hooks = hooks
        self.stop_reason: str | None = None
        self.stop_step: int | None = None

    def emit(self, step: int, values: dict[str, Any], kind: str = "monitor") -> None:
        rec = Record(int(step), kind, values)
        for h in self.hooks:
            h.on_record(rec)

    def stop(self, reason: str, step: int | None = None) -> None:
        """Stop after the current step (the first reason given wins)."""
        if self.stop_reason is None:
            self.stop_reason, self.stop_step = reason, step


@dataclasses.dataclass
class StepInfo:
    """What a host hook sees after a step: ``step`` updates are done, ``state`` is the state
    after them (donated to the next step), ``end`` the last step of this call, and the run's
    :class:`LoopControl`."""

    step: int
    state: Any
    end: int
    control: LoopControl


class Hook:
    """Base class of host hooks (every method optional).

    Attributes:
      every: run ``__call__`` after every ``every``-th update (``0``: never periodically), or a
        predicate ``every(step) -> bool``.
      at_end: also run ``__call__`` after the last update of the call.
      flush: fetch the pending step's metrics before ``__call__`` (eval and checkpoint hooks:
        what they do is then ordered after that step's records).
    """

    every: int | Callable[[int], bool] = 0
    at_end: bool = False
    flush: bool = False

    def due(self, step: int, end: int) -> bool:
        if callable(self.every):
            periodic = bool(self.every(step))
        else:
            periodic = self.every > 0 and step % self.every == 0
        return periodic or (self.at_end and step == end)

    def start(self, info: StepInfo) -> None:
        """Before the first step (``info.step`` = the step resumed from)."""

    def on_record(self, record: Record) -> None:
        """Every record of the run, as it is fetched or emitted."""

    def __call__(self, info: StepInfo) -> None:
        """After a step on which the hook is ``due``."""

    def close(self, info: StepInfo) -> None:
        """After the loop (finished, stopped or interrupted); ``info.control`` says which."""


__all__ = ["Hook", "LoopControl", "Record", "StepInfo"]
