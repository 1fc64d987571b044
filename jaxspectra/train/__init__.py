"""jaxspectra.train: the trainer (config → sharded jit step → hooks → metrics, checkpoints, verdict).

Python API::

    from jaxspectra.train import load_config, train
    from jaxspectra.train.sweep import sweep   # (the module name, so not re-exported here)
    cfg = load_config("configs/smoke.toml", {"train.steps": "100"})
    result = train(cfg)            # RunResult(state, summary, losses, run_dir)
    swept = sweep(cfg)             # SweepResult(members, summary, losses[steps, members], ...)

Modules, one job each: :mod:`~jaxspectra.train.config` (frozen dataclasses, TOML, ``--set``),
:mod:`~jaxspectra.train.setup` (validation before compute), :mod:`~jaxspectra.train.state`
(train state, model, the optimiser built once, owner of every hyper-parameter),
:mod:`~jaxspectra.train.step` (train/eval steps, grad accumulation, in-step hooks),
:mod:`~jaxspectra.train.engine` (compiled step with and without hooks; vmapped for sweeps),
:mod:`~jaxspectra.train.hooks` (the host-hook protocol), :mod:`~jaxspectra.train.builtin_hooks`
(eval, checkpoint, metrics, progress, signals, non-finite stop),
:mod:`~jaxspectra.train.monitor_hooks` (monitors as hooks, async host copies),
:mod:`~jaxspectra.train.loop` (``run_loop`` and ``train``), :mod:`~jaxspectra.train.resume`
(exact resume, config compatibility, damaged checkpoints), :mod:`~jaxspectra.train.sweep`
(vmapped sweeps), :mod:`~jaxspectra.train.summary` (``summary.json``, verdict),
:mod:`~jaxspectra.train.sharding`, :mod:`~jaxspectra.train.checkpoint` (orbax),
:mod:`~jaxspectra.train.metrics` (JSONL, TensorBoard, FLOPs), :mod:`~jaxspectra.train.instability`
(paper 004's criteria and the training-curve ones), :mod:`~jaxspectra.train.cli`.
"""

from jaxspectra.train.config import Config, ConfigError, load_config
from jaxspectra.train.hooks import Hook, StepInfo
from jaxspectra.train.instability import assess
from jaxspectra.train.loop import RunResult, run_loop, train
from jaxspectra.train.sweep import SweepResult

__all__ = ["Config", "ConfigError", "Hook", "RunResult", "StepInfo", "SweepResult", "assess",
           "load_config", "run_loop", "train"]
