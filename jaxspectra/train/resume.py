"""Open a run: resume exactly from the newest readable checkpoint, or start afresh.

* A resume compares the checkpoint's config with the one given and **refuses** any difference,
  naming the keys, unless ``checkpoint.allow_changes`` lists them (``"train.steps"`` for a longer
  schedule, ``"optim.learning_rate"``, or a whole section such as ``"optim"``). Keys that cannot
  change what is computed (where outputs go, logging, progress, monitors other than the optax one,
  thresholds) may always change. An allowed learning-rate / weight-decay / clip change is written
  into the restored optimiser state, which owns those values.
* A damaged newest checkpoint is reported in one line and the previous readable one restored
  (:meth:`~jaxspectra.train.checkpoint.Checkpointer.restore_readable`).
* Each launch appends its config to ``<run.dir>/config_history/`` (``config.toml`` is the latest),
  and metric records a crashed continuation wrote past the restored step are dropped.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from jaxspectra import models
from jaxspectra.train.checkpoint import Checkpointer
from jaxspectra.train.config import Config, ConfigError, dump_toml, to_dict
from jaxspectra.train.metrics import dense_flops_per_token, matmul_params, param_counts, read_jsonl
from jaxspectra.train.peak import peak_flops
from jaxspectra.train.setup import Setup
from jaxspectra.train.state import hyperparams

# changes that cannot alter what is computed: always allowed on resume
ALWAYS_ALLOWED = ("run.dir", "run.compile_cache_dir", "run.distributed", "train.log_every",
                  "train.progress", "train.peak_tflops", "checkpoint", "instability", "sweep",
                  "monitors.spectral", "monitors.heavy_tail", "monitors.attention",
                  "monitors.jacobian", "monitors.grad_norms", "data.data_dir")


@dataclasses.dataclass
class Run:
    """A run opened for training: its state, where it starts, and what the hooks need."""

    state: Any
    start: int
    resumed_from: int | None
    checkpointer: Checkpointer | None
    meta: Callable[[int], dict]
    param_counts: dict[str, int]
    flops_per_token: float
    peak_flops: float | None
    initial_records: dict[str, Any] | None
    last_saved: int | None = None  # set by the trainer after the loop


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_changes(saved: dict[str, Any], new: dict[str, Any],
                   allowed: list[str] | tuple[str, ...] = ()) -> list[str]:
    """``"key: old → new"`` for every difference not allowed (module docstring)."""
    a, b = _flatten(saved), _flatten(new)
    ok = (*ALWAYS_ALLOWED, *allowed)
    out = []
    for k in sorted(set(a) | set(b)):
        if a.get(k, "<unset>") == b.get(k, "<unset>"):
            continue
        if any(k == p or k.startswith(p + ".") for p in ok):
            continue
        out.append(f"{k}: {a.get(k, '<unset>')!r} → {b.get(k, '<unset>')!r}")
    return out


def _check_compatible(cfg: Config) -> Callable[[dict], None]:
    def check(meta: dict) -> None:
        diff = config_changes(meta.get("config", {}), to_dict(cfg), cfg.checkpoint.allow_changes)
        if diff:
            keys = json.dumps([d.split(":")[0] for d in diff])
            raise ConfigError(
                f"the checkpoint at step {meta.get('step')} in {cfg.run.dir!r} was made with a "
                f"different config ({'; '.join(diff)}). To resume with these changes add "
                f"--set checkpoint.allow_changes='{keys}'; to start afresh use another run.dir "
                "or --set checkpoint.resume=false")
    return check


def run_flops_per_token(s: Setup) -> float:
    """The models package's formula for GPT configs, else ``6·N + 12·L·T·d``."""
    mc, T = s.model_config, s.cfg.data.seq_len
    if isinstance(mc, models.GPTConfig):
        return float(models.flops_per_token(mc, T))
    dims = (mc.n_layers, mc.d_model) if isinstance(mc, models.TransformerConfig) else (None, None)
    return dense_flops_per_token(matmul_params(s.abstract_params), *dims, T)


def _truncate_metrics(path, start: int) -> None:
    """On resume: drop records a crashed continuation wrote past the checkpoint."""
    if not path.exists():
        return
    keep = [r for r in read_jsonl(path)
            if r["step"] < start or ("eval/loss" in r and r["step"] == start)]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in keep))
    tmp.replace(path)


def _write_config(s: Setup, start: int) -> None:
    text = dump_toml(s.cfg)
    hist = s.run_dir / "config_history"
    hist.mkdir(exist_ok=True)
    n = len(list(hist.glob("*.toml")))
    stamp = time.strftime("%Y%m%dT%H%M%S")
    (hist / f"{n:03d}_{stamp}_from_step_{start}.toml").write_text(text)
    tmp = s.run_dir / "config.toml.tmp"
    tmp.write_text(text)
    tmp.replace(s.run_dir / "config.toml")


def open_run(s: Setup, engine: Any) -> Run:
    """Resume from the newest readable compatible checkpoint, or initialise."""
    cfg = s.cfg
    ckpt = (Checkpointer(s.ckpt_dir, cfg.checkpoint.keep, cfg.checkpoint.async_save)
            if s.ckpt_dir is not None else None)
    state, start, resumed = None, 0, None
    if ckpt is not None and cfg.checkpoint.resume:
        got = ckpt.restore_readable(engine.abstract_state, _check_compatible(cfg),
                                    report=lambda m: print(m, file=sys.stderr, flush=True))
        if got is not None:
            state, meta = got
            start, resumed = int(meta["data_position"]), int(meta["step"])
            state = state._replace(opt_state=engine.opt.set_hyperparams(
                state.opt_state, hyperparams(cfg.optim)))
            _truncate_metrics(s.run_dir / "metrics.jsonl", start)
    if state is None:
        state = engine.init_state(cfg.run.seed)
    _write_config(s, start)
    counts = param_counts(state.params)
    # train.peak_tflops > 0 as given, else looked up from the device kind; None (a CPU): no MFU
    peak = peak_flops(cfg.train.peak_tflops, s.mesh.devices.flat[0], s.n_devices)

    def meta(step: int) -> dict:
        return {"step": step, "data_position": step, "seed": cfg.run.seed, "config": to_dict(cfg)}

    initial = {f"params/{k}": v for k, v in counts.items()} if start == 0 else None
    return Run(state, start, resumed, ckpt, meta, counts, run_flops_per_token(s), peak, initial)
