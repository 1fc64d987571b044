"""Checkpoints through ``orbax.checkpoint.CheckpointManager`` (async, keep ``n``, atomic).

A checkpoint at step ``t`` holds two items:

* ``state`` — the :class:`~jaxspectra.train.state.TrainState` after ``t`` updates (params,
  optimiser state with its hyper-parameters, step, base RNG key), restored onto the run's
  shardings;
* ``meta`` — JSON: ``step``, ``data_position`` (the next batch index; batches are a pure function
  of (seed, step)), ``seed`` and the full config.

Crash safety is orbax's: a step is written into a temporary directory and renamed into place
only when complete, so a process killed mid-save leaves the previous checkpoints untouched and
the half-written one invisible to :meth:`Checkpointer.latest_step`. A checkpoint damaged after
it was written (a truncated file, deleted metadata) is caught by
:meth:`Checkpointer.restore_readable`: it reports the damaged step in one line and restores the
newest readable one before it.
"""

from __future__ import annotations

import io
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from jaxspectra.train.config import ConfigError
from jaxspectra.train.state import TrainState


def _to_tree(state: TrainState) -> dict[str, Any]:
    return {"step": state.step, "params": state.params, "opt_state": state.opt_state,
            "rng": state.rng}


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200] if text else ''}"


class UnreadableCheckpoint(ConfigError):
    """No checkpoint of a directory could be read (reported like a config problem: one line)."""


class Checkpointer:
    """``save(step, state, meta)``, ``restore(step, abstract_state)``, ``restore_readable``."""

    def __init__(self, directory: str | Path, keep: int = 2, async_save: bool = True):
        self.directory = Path(directory).absolute()
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep if keep > 0 else None,
                enable_async_checkpointing=async_save,
                create=True,
                cleanup_tmp_directories=True,
            ),
            item_names=("state", "meta"),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: TrainState, meta: dict[str, Any]) -> bool:
        return self.manager.save(
            int(step),
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(_to_tree(state)), meta=ocp.args.JsonSave(meta)
            ),
        )

    def read_meta(self, step: int) -> dict[str, Any]:
        """The ``meta`` item of ``step`` alone."""
        out = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(out["meta"])

    def restore(self, step: int | None, abstract_state: TrainState) -> tuple[TrainState, dict]:
        """Restore ``step`` (latest when ``None``) onto ``abstract_state``'s shapes/shardings."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        target = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
            _to_tree(abstract_state),
        )
        out = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()
            ),
        )
        t = out["state"]
        state = TrainState(t["step"], t["params"], t["opt_state"], t["rng"])
        return state, dict(out["meta"])

    def restore_readable(
        self, abstract_state: TrainState, check_meta: Callable[[dict], None] | None = None,
        report: Callable[[str], None] = print,
    ) -> tuple[TrainState, dict] | None:
        """The newest checkpoint that reads back whole (``None`` when there is none at all).

        ``check_meta(meta)`` runs on each candidate's metadata before its arrays are read (the
        trainer's config comparison); what it raises propagates. A damaged checkpoint is reported
        through ``report`` in one line and the previous one is tried.

        Raises:
          UnreadableCheckpoint: checkpoints exist but none reads back.
        """
        steps = self.all_steps()
        problems = []
        for step in reversed(steps):
            try:
                with _quiet_orbax():
                    meta = self.read_meta(step)
            except Exception as e:  # noqa: BLE001 - any damage means "try the previous one"
                problems.append(f"step {step}: {_short(e)}")
                report(f"jaxspectra: checkpoint step {step} in {self.directory} is unreadable "
                       f"({_short(e)}); trying the previous one")
                continue
            if check_meta is not None:
                check_meta(meta)
            try:
                with _quiet_orbax():
                    state, meta = self.restore(step, abstract_state)
                jax.block_until_ready(state)
                return state, meta
            except Exception as e:  # noqa: BLE001
                problems.append(f"step {step}: {_short(e)}")
                report(f"jaxspectra: checkpoint step {step} in {self.directory} is unreadable "
                       f"({_short(e)}); trying the previous one")
        if steps:
            raise UnreadableCheckpoint(
                f"no readable checkpoint in {self.directory} ({'; '.join(problems)}); move the "
                "directory away to start afresh, or set checkpoint.resume=false")
        return None

    def wait_until_finished(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


class _quiet_orbax:
    """Silence orbax / absl error logs while a damaged checkpoint is tried (we report it in one
    line). When the read fails, TensorStore's outstanding reads still call back into orbax's
    closed event loop for a moment, each printing an "Event loop is closed" traceback: those are
    swallowed too, by holding ``sys.stderr`` a little longer."""

    settle_s = 0.5

    def __enter__(self):
        self._levels = {n: logging.getLogger(n).level for n in ("absl", "orbax")}
        for n in self._levels:
            logging.getLogger(n).setLevel(logging.CRITICAL)
        self._stderr, sys.stderr = sys.stderr, io.StringIO()

    def __exit__(self, exc_type, *exc):
        if exc_type is not None:
            time.sleep(self.settle_s)  # let the failed read's callbacks land in the void
        sys.stderr = self._stderr
        for n, lvl in self._levels.items():
            logging.getLogger(n).setLevel(lvl)
        return False
