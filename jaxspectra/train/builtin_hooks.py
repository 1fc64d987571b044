"""The trainer's own host hooks (:class:`~jaxspectra.train.hooks.Hook`), one job each.

=====================  ===========================================================================
hook                   job
=====================  ===========================================================================
:class:`Throughput`    adds ``tokens_per_s`` (and ``mfu`` when the peak is known) to train records,
                       timing fetch to fetch with eval / checkpoint time left out
:class:`MetricsLog`    writes records to ``metrics.jsonl`` (+ TensorBoard, ``arrays/*.npz``), one
                       writer per sweep member; train records every ``log_every`` steps, the last
                       and any non-finite one; every other record as it comes
:class:`History`       keeps the curves the summary and verdict read (resumed runs: from the file)
:class:`Progress`      a start-up header, then a tqdm bar (interactive) or one plain line every
                       ~10% / 60 s (a log file); loss, tok/s, MFU and an ETA that leaves the
                       compilation of the first step out
:class:`Evaluate`      ``eval/loss`` every ``train.eval_every`` steps and at the end
:class:`Checkpoint`    orbax checkpoint every ``checkpoint.every`` steps and at the end, only of
                       finite params
:class:`StopOnNonFinite`  stops at the first non-finite loss or gradient norm (a sweep: once every
                       member has one)
:class:`StopOnSignal`  SIGTERM (preemption) and SIGINT (Ctrl-C): finish the step, let the hooks
                       close (checkpoint, summary), return; a second Ctrl-C aborts at once
=====================  ===========================================================================
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxspectra.train.hooks import Hook, Record, StepInfo
from jaxspectra.train.metrics import MetricsWriter, read_jsonl


def _per_member(values: dict[str, Any], i: int | None) -> dict[str, Any]:
    if i is None:
        return values
    return {k: (v[i] if np.ndim(v) >= 1 else v) for k, v in values.items()}


def _finite_mask(v: Any) -> np.ndarray:
    return np.isfinite(np.asarray(v, np.float64))


class Throughput(Hook):
    """``tokens_per_s`` / ``mfu`` on each train record; ``steady()`` for the summary.

    ``peak_flops`` is ``None`` when the device's peak is unknown (a CPU:
    :func:`jaxspectra.train.peak.peak_flops`); the records then carry no ``mfu`` at all.
    """

    every = 1

    def __init__(self, tokens_per_step: int, flops_per_token: float, peak_flops: float | None,
                 slow_hooks: list[Hook]):
        self.tokens, self.flops, self.peak = tokens_per_step, flops_per_token, peak_flops
        self.slow_hooks = slow_hooks
        self.times: list[float] = []
        self._mark: float | None = None

    def on_record(self, rec: Record) -> None:
        if rec.kind != "train":
            return
        now = time.perf_counter()
        if self._mark is not None:
            dt = max(now - self._mark, 1e-9)
            self.times.append(dt)
            rec.values["tokens_per_s"] = self.tokens / dt
            if self.peak:
                rec.values["mfu"] = self.tokens / dt * self.flops / self.peak
        self._mark = now

    def __call__(self, info: StepInfo) -> None:
        if any(h.due(info.step, info.end) for h in self.slow_hooks):
            self._mark = time.perf_counter()  # keep eval/save time out of tokens/s

    def steady(self) -> float:
        """Tokens/s over the steps after the first two (compilation and warm-up left out)."""
        t = self.times[2:] if len(self.times) > 4 else self.times
        return self.tokens * len(t) / sum(t) if t else float("nan")


class MetricsLog(Hook):
    """Records → ``metrics.jsonl`` (one writer per member for a sweep)."""

    def __init__(self, run_dir: Path, log_every: int, end: int, members: int | None = None,
                 enabled: bool = True, initial: dict[str, Any] | None = None):
        self.members, self.log_every, self.end = members, log_every, end
        self.initial = initial  # written at step 0 on start (parameter counts of a new run)
        dirs = [run_dir] if members is None else [run_dir / f"member_{i}" for i in range(members)]
        self.writers = [MetricsWriter(d, enabled=enabled, tensorboard=members is None)
                        for d in dirs]

    def start(self, info: StepInfo) -> None:
        if self.initial:
            for w in self.writers:
                w.write(0, self.initial)

    def on_record(self, rec: Record) -> None:
        for i, w in enumerate(self.writers):
            vals = _per_member(rec.values, None if self.members is None else i)
            if rec.kind == "train":
                due = rec.step % self.log_every == 0 or rec.step == self.end - 1
                if not (due or not all(_finite_mask(vals.get("loss", 0.0)).flat)):
                    continue
            w.write(rec.step, vals)

    def close(self, info: StepInfo) -> None:
        for w in self.writers:
            w.close()


class History(Hook):
    """The train / eval curves and gradient norms of the run (arrays per member for a sweep)."""

    def __init__(self, resumed_file: Path | None = None):
        self.train: list[tuple[int, Any]] = []
        self.grad_norm: list[tuple[int, Any]] = []
        self.evals: list[tuple[int, Any]] = []
        if resumed_file is not None and resumed_file.exists():  # what ran before the resume
            for r in read_jsonl(resumed_file):
                if "loss" in r:
                    self.train.append((r["step"], float(r["loss"])))
                    if "grad_norm" in r:
                        self.grad_norm.append((r["step"], float(r["grad_norm"])))
                if "eval/loss" in r:
                    self.evals.append((r["step"], float(r["eval/loss"])))

    def on_record(self, rec: Record) -> None:
        if rec.kind == "train":
            self.train.append((rec.step, rec.values["loss"]))
            self.grad_norm.append((rec.step, rec.values["grad_norm"]))
        elif rec.kind == "eval":
            self.evals.append((rec.step, rec.values["eval/loss"]))


def _fmt_time(s: float) -> str:
    s = int(max(s, 0))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Progress(Hook):
    """Start-up header, then a bar (a terminal) or plain lines (a log file)."""

    def __init__(self, header: str, total: int, *, interactive: bool | None = None,
                 desc: str = "train", stream: Any = None):
        self.header, self.total, self.desc = header, total, desc
        self.stream = stream or sys.stderr
        self.interactive = (self.stream.isatty() if interactive is None else interactive)
        self._bar = None
        self._t0: float | None = None
        self._first: int | None = None
        self._last_line = 0.0
        self._post: dict[str, str] = {}

    def start(self, info: StepInfo) -> None:
        print(self.header, file=self.stream, flush=True)
        self._start = info.step

    def on_record(self, rec: Record) -> None:
        if rec.kind != "train":
            return
        loss = np.asarray(rec.values["loss"], np.float64)
        post = {"loss": f"{float(loss):.4f}" if loss.ndim == 0 else
                f"{np.nanmin(loss):.3f}..{np.nanmax(loss):.3f}" if np.isfinite(loss).any()
                else "nan"}
        if "tokens_per_s" in rec.values:
            post["tok/s"] = f"{rec.values['tokens_per_s']:.3g}"
        if "mfu" in rec.values:
            post["mfu"] = f"{rec.values['mfu']:.1%}"
        self._post = post
        done = rec.step + 1
        if self._t0 is None:  # the first step's record: compilation is over, time from here
            self._t0, self._first = time.perf_counter(), done
            if self.interactive:
                from tqdm.auto import tqdm

                self._bar = tqdm(total=self.total, initial=done, desc=self.desc,
                                 dynamic_ncols=True, file=self.stream)
            return
        if self._bar is not None:
            self._bar.update(done - self._bar.n)
            self._bar.set_postfix(post, refresh=False)
            return
        now = time.perf_counter()
        if now - self._last_line >= 60 or done % max(1, self.total // 10) == 0 \
                or done == self.total:
            self._last_line = now
            rate = (done - self._first) / max(now - self._t0, 1e-9)
            eta = (self.total - done) / rate if rate > 0 else float("inf")
            items = " ".join(f"{k} {v}" for k, v in post.items())
            print(f"{self.desc} step {done}/{self.total} {items} eta "
                  f"{_fmt_time(eta) if math.isfinite(eta) else '?'}", file=self.stream,
                  flush=True)

    def close(self, info: StepInfo) -> None:
        if self._bar is not None:
            self._bar.close()


class Evaluate(Hook):
    """``eval/loss`` every ``every`` steps and after the last one (emitted as an eval record)."""

    flush = True

    def __init__(self, evaluate: Callable[[Any], Any], every: int, history: History):
        self.evaluate, self.every, self.history = evaluate, every, history

    def __call__(self, info: StepInfo) -> None:
        if info.step < info.end:  # the end-of-run evaluation happens in close
            info.control.emit(info.step, {"eval/loss": self.evaluate(info.state.params)},
                              "eval")

    def close(self, info: StepInfo) -> None:
        if info.control.stop_reason in ("nonfinite", "preempted", "interrupted"):
            return
        if not self.history.evals or self.history.evals[-1][0] != info.step:
            info.control.emit(info.step, {"eval/loss": self.evaluate(info.state.params)},
                              "eval")


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
              if jnp.issubdtype(x.dtype, jnp.floating)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


class Checkpoint(Hook):
    """Saves finite states every ``every`` steps and at the end (not after a non-finite stop)."""

    flush = True

    def __init__(self, checkpointer: Any, every: int, meta: Callable[[int], dict],
                 final: bool, last_saved: int | None = None):
        self.ckpt, self.every, self.meta, self.final = checkpointer, every, meta, final
        self.last_saved = last_saved

    def save(self, state: Any, step: int) -> None:
        if self.last_saved == step or not bool(_all_finite(state.params)):
            return
        self.ckpt.save(step, state, self.meta(step))
        self.last_saved = step

    def __call__(self, info: StepInfo) -> None:
        self.save(info.state, info.step)

    def close(self, info: StepInfo) -> None:
        reason = info.control.stop_reason
        if reason != "nonfinite" and (self.final or reason in ("preempted", "interrupted")):
            self.save(info.state, info.step)
        self.ckpt.close()


class StopOnNonFinite(Hook):
    """Stop at the first non-finite loss or gradient norm (every member's, for a sweep)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.first: Any = None  # step (or per-member list of steps | None)

    def on_record(self, rec: Record) -> None:
        if rec.kind != "train":
            return
        ok = _finite_mask(rec.values["loss"]) & _finite_mask(rec.values["grad_norm"])
        if ok.ndim == 0:
            if not ok and self.first is None:
                self.first = rec.step
            bad_all = self.first is not None
        else:
            if self.first is None:
                self.first = [None] * ok.size
            self.first = [f if f is not None or o else rec.step for f, o in zip(self.first, ok)]
            bad_all = all(f is not None for f in self.first)
        if bad_all and self.enabled:
            self._stop = rec.step

    def __call__(self, info: StepInfo) -> None:
        if getattr(self, "_stop", None) is not None:
            info.control.stop("nonfinite", self._stop)

    every = 1


class StopOnSignal(Hook):
    """SIGTERM → ``preempted``, SIGINT → ``interrupted``: the loop ends after the current step
    and the hooks close normally (checkpoint, summary); a second SIGINT aborts at once."""

    every = 1

    def __init__(self):
        self.reason: str | None = None
        self._old: dict[int, Any] = {}

    def _handler(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.reason is not None:
            raise KeyboardInterrupt  # a second Ctrl-C: the user means it
        self.reason = self.reason or ("preempted" if signum == signal.SIGTERM else "interrupted")
        print(f"\njaxspectra: {signal.Signals(signum).name} received: finishing the step and "
              "checkpointing (Ctrl-C again to abort)", file=sys.stderr, flush=True)

    def start(self, info: StepInfo) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handler)

    def __call__(self, info: StepInfo) -> None:
        if self.reason is not None:
            info.control.stop(self.reason, info.step)

    def close(self, info: StepInfo) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}
