"""The training loop: :func:`run_loop` (steps + hooks) and :func:`train` (``jaxspectra train``).

:func:`run_loop` dispatches step ``t`` (compiled with the in-step hooks due at ``t``, or the plain
step), pushes its metrics to be fetched one step late, hands fetched records to every host hook,
then calls the host hooks due after ``t + 1`` updates. Everything else — eval, checkpoints, metric
files, progress, host monitors, signals, the non-finite stop — is a hook
(:mod:`jaxspectra.train.builtin_hooks`, :mod:`jaxspectra.train.monitor_hooks`). A sweep runs the
same loop over a vmapped engine (:mod:`jaxspectra.train.sweep`).

:func:`train` assembles a single run: :func:`~jaxspectra.train.setup.setup` (everything validated
before compute), the :class:`~jaxspectra.train.engine.Engine`, exact resume from the latest
readable checkpoint (:mod:`jaxspectra.train.resume`), the hooks, the loop, and ``summary.json``
with the instability verdict (:mod:`jaxspectra.train.summary`). Step labels: a train record at
step ``t`` is the loss of the params after ``t`` updates (the batch of update ``t``); an eval
record at ``s`` is after ``s`` updates.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax

from jaxspectra.monitors import registry
from jaxspectra.train.builtin_hooks import (
    Checkpoint,
    Evaluate,
    History,
    MetricsLog,
    Progress,
    StopOnNonFinite,
    StopOnSignal,
    Throughput,
)
from jaxspectra.train.config import Config
from jaxspectra.train.engine import Engine
from jaxspectra.train.hooks import Hook, LoopControl, StepInfo
from jaxspectra.train.metrics import LaggedFetcher
from jaxspectra.train.monitor_hooks import (
    HostMonitors,
    OptaxSpectralHook,
    RotatingSpectralHook,
    as_step_hook,
    check_names,
)
from jaxspectra.train.resume import open_run
from jaxspectra.train.setup import setup
from jaxspectra.train.state import TrainState
from jaxspectra.train.summary import header, run_summary, write_json


@dataclasses.dataclass
class RunResult:
    state: TrainState
    summary: dict[str, Any]
    losses: list[tuple[int, float]]
    run_dir: Path


def run_loop(engine: Engine, state: Any, start: int, end: int, batches: Callable[[int], Any],
             hooks: Sequence[Hook], step_hooks: Sequence[Any] = ()) -> tuple[Any, LoopControl]:
    """Run updates ``start .. end-1``; returns the final state and the loop's control (why it
    stopped: ``control.stop_reason`` is ``None`` when it ran to ``end``)."""
    hooks = list(hooks)
    control = LoopControl(hooks)
    fetcher = LaggedFetcher()
    hook_states = engine.init_hook_states(step_hooks, state)

    def deliver(item: tuple[int, Any] | None) -> None:
        if item is not None:
            (step, (metrics, hook_metrics)) = item
            control.emit(step, metrics, "train")
            if hook_metrics:
                control.emit(step, hook_metrics, "monitor")

    for h in hooks:
        h.start(StepInfo(start, state, end, control))
    for t in range(start, end):
        due = tuple(h for h in step_hooks if h.due(t))
        sub = tuple(hook_states[h.name] for h in due)
        state, metrics, hook_metrics, sub = engine.step(due)(state, batches(t), sub)
        hook_states.update(zip((h.name for h in due), sub))
        deliver(fetcher.push(t, (metrics, hook_metrics)))
        now = [h for h in hooks if h.due(t + 1, end)]
        if any(h.flush for h in now):
            deliver(fetcher.flush())
        info = StepInfo(t + 1, state, end, control)
        for h in now:
            h(info)
        if control.stop_reason is not None:
            break
    deliver(fetcher.flush())
    final = StepInfo(int(state.step) if not hasattr(state.step, "shape") or
                     state.step.ndim == 0 else int(state.step[0]), state, end, control)
    for h in hooks:
        h.close(final)
    return state, control


def train(cfg: Config, *, model: tuple[Any, Any] | None = None, dataset: Any = None,
          eval_dataset: Any = None, monitors: Sequence[Any] = (),
          host_monitors: Sequence[Any] = (), hooks: Sequence[Hook] = (),
          stop_after: int | None = None) -> RunResult:
    """Train from ``cfg``, resuming from the latest readable checkpoint when there is one.

    Args:
      cfg: the run config.
      model, dataset, eval_dataset: optional objects replacing what the config names.
      monitors: device monitors or in-step hooks (:class:`~jaxspectra.train.step.StepHook`),
        besides those ``cfg.monitors`` turns on.
      host_monitors: :class:`~jaxspectra.monitors.base.HostMonitor` s, besides the config's.
      hooks: extra host hooks (:class:`~jaxspectra.train.hooks.Hook`), run after the built-in
        ones.
      stop_after: stop (with a checkpoint) once this many updates are done — a preemption
        stand-in; the schedule still spans ``train.steps``.
    """
    s = setup(cfg, model=model, dataset=dataset, eval_dataset=eval_dataset)
    step_hooks = [as_step_hook(m) for m in [*s.device_monitors, *monitors]]
    host = [*s.host_monitors, *host_monitors]
    check_names(step_hooks, host)
    eng = Engine(s)
    run = open_run(s, eng)  # resume (or init), config history, checkpointer
    end = cfg.train.steps if stop_after is None else min(stop_after, cfg.train.steps)
    main = jax.process_index() == 0
    history = History(s.run_dir / "metrics.jsonl" if run.start > 0 else None)
    evaluate = Evaluate(lambda p: eng.evaluate(p, s.data_seed), cfg.train.eval_every, history)
    slow: list[Hook] = [evaluate] if cfg.data.eval_batches > 0 else []
    ckpt = None
    if run.checkpointer is not None:
        ckpt = Checkpoint(run.checkpointer, cfg.checkpoint.every, run.meta,
                          final=cfg.checkpoint.keep > 0 or cfg.checkpoint.every > 0,
                          last_saved=run.resumed_from)
        slow.append(ckpt)
    tput = Throughput(cfg.data.batch_size * cfg.data.seq_len, run.flops_per_token,
                      run.peak_flops, slow)
    nonfinite = StopOnNonFinite(cfg.train.stop_on_nonfinite)
    hosts = HostMonitors(host, eng.state_sh.params)
    log = MetricsLog(s.run_dir, cfg.train.log_every, end, enabled=main,
                     initial=run.initial_records)
    # order = close order: the hooks that emit while closing (eval, host monitors) before the log
    rot = registry.rotating_options(cfg.monitors.enabled())
    rotating = [] if rot is None else [RotatingSpectralHook(
        rot["every"], rot["k"], split_qkv=rot["split_qkv"], arrays=rot["arrays"],
        solver=rot["solver"])]
    all_hooks: list[Hook] = [tput, history, nonfinite, *slow, hosts, *rotating]
    if cfg.monitors.spectral_every > 0:
        all_hooks.append(OptaxSpectralHook(cfg.monitors.spectral_every, eng.state_sh.opt_state))
    all_hooks.append(log)
    if cfg.train.progress and main:
        all_hooks.append(Progress(header(s, run), end, desc="train"))
    all_hooks += [*hooks, StopOnSignal()]
    state, control = run_loop(eng, run.state, run.start, end,
                              lambda t: eng.batch(s.dataset, s.data_seed, t), all_hooks,
                              step_hooks)
    run.last_saved = ckpt.last_saved if ckpt is not None else None
    old = s.run_dir / "summary.json"
    if run.start >= end and old.exists():  # nothing ran: keep what the finished run recorded
        print(f"jaxspectra train: the run in {s.run_dir} is already at step {run.start}; "
              "nothing to do (raise train.steps, with checkpoint.allow_changes=['train.steps'], "
              "to continue)", flush=True)
        summary = json.loads(old.read_text())
        return RunResult(state, summary, [(st, float(x)) for st, x in history.train], s.run_dir)
    summary = run_summary(s, run, state, control, history, nonfinite, tput, hosts, end)
    if main:
        write_json(s.run_dir / "summary.json", summary)
    losses = [(st, float(x)) for st, x in history.train if st >= run.start]  # this call's
    return RunResult(state, summary, losses, s.run_dir)
