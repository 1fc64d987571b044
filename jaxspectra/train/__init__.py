"""jaxspectra.train: the trainer (config → sharded jit step → metrics, checkpoints, verdict).

Python API::

    from jaxspectra.train import load_config, train
    from jaxspectra.train.sweep import sweep   # (the module name, so not re-exported here)
    cfg = load_config("configs/smoke.toml", {"train.steps": "100"})
    result = train(cfg)            # RunResult(state, summary, losses, run_dir)
    swept = sweep(cfg)             # SweepResult(members, summary, losses[steps, members], ...)

Modules: :mod:`~jaxspectra.train.config` (frozen dataclasses, TOML, ``--set``),
:mod:`~jaxspectra.train.state` (train state, model and optimiser chain),
:mod:`~jaxspectra.train.step` (train/eval steps, grad accumulation, monitor hook),
:mod:`~jaxspectra.train.hooks` (``[monitors]`` → monitors, cadence, async host copies),
:mod:`~jaxspectra.train.sharding` (mesh, data-parallel / FSDP shardings, multi-host init),
:mod:`~jaxspectra.train.checkpoint` (orbax), :mod:`~jaxspectra.train.metrics` (JSONL,
TensorBoard, MFU), :mod:`~jaxspectra.train.instability` (paper 004's criteria),
:mod:`~jaxspectra.train.loop` (``train``), :mod:`~jaxspectra.train.sweep` (vmapped sweeps),
:mod:`~jaxspectra.train.cli` (``jaxspectra train`` / ``sweep``).
"""

from jaxspectra.train.config import Config, ConfigError, load_config
from jaxspectra.train.instability import assess
from jaxspectra.train.loop import RunResult, train
from jaxspectra.train.sweep import SweepResult

__all__ = ["Config", "ConfigError", "RunResult", "SweepResult", "assess", "load_config", "train"]
