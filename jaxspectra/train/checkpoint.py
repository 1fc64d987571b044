"""Checkpoints through ``orbax.checkpoint.CheckpointManager`` (async, keep ``n``, atomic).

A checkpoint at step ``t`` holds two items:

* ``state`` — the :class:`~jaxspectra.train.state.TrainState` after ``t`` updates (params,
  optimiser state, step, base RNG key), saved with ``StandardSave`` and restored onto the
  run's shardings;
* ``meta`` — JSON: ``step``, ``data_position`` (the next batch index; batches are a pure function
  of (seed, step)), ``seed`` and the full config.

Crash safety is orbax's: a step is written into a temporary directory and renamed into place
only when complete, so a process killed mid-save leaves the previous checkpoints untouched and
the half-written one invisible to :meth:`Checkpointer.latest_step` (the next manager cleans it up).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from jaxspectra.train.state import TrainState


def _to_tree(state: TrainState) -> dict[str, Any]:
    return {"step": state.step, "params": state.params, "opt_state": state.opt_state,
            "rng": state.rng}


class Checkpointer:
    """Thin wrapper: ``save(step, state, meta)``, ``restore(step, abstract_state)``, ``close()``."""

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
        return list(self.manager.all_steps())

    def save(self, step: int, state: TrainState, meta: dict[str, Any]) -> bool:
        return self.manager.save(
            int(step),
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(_to_tree(state)), meta=ocp.args.JsonSave(meta)
            ),
        )

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

    def wait_until_finished(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
