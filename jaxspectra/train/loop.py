"""The training loop: ``train(config) -> RunResult`` (what ``jaxspectra train`` runs).

Order of work:

1. :func:`setup` validates everything that can be checked without compute — config keys and
   types, run/checkpoint directories writable, device count vs batch and gradient accumulation,
   model preset shapes, data source and path, optimiser name and options (built on abstract
   params), the ``[monitors]`` (built: :func:`jaxspectra.train.hooks.config_monitors`) — and
   writes ``config.toml`` into the run directory.
2. Init (or exact resume from the latest orbax checkpoint): params on their shardings,
   ``prepare_params``, optimiser state.
3. Steps: batch ``t`` is ``dataset.batch(seed, t, B, T)``, sharded on the ``data`` axis; the
   plain step (or, on monitor steps only, the hooked one) is dispatched; the *previous* step's
   metrics are then read (one step late) and logged: ``metrics.jsonl`` (train records at step
   ``t`` = loss of the params after ``t`` updates; eval records ``eval/loss`` at step ``s`` = after
   ``s`` updates), TensorBoard when installed, tqdm bar with loss, tokens/s and MFU.
   Device monitors run inside the hooked step (compiled separately, once per set of monitors
   due together) only on their steps (:func:`~jaxspectra.train.hooks.is_active`): they see the
   params *before* update ``t`` and the step's batch. Their metrics — and the optax spectral
   monitor's record (``monitors.spectral_every``) — are fetched one step late like the loss
   and written on every step they are computed, whatever ``train.log_every`` (scalars to
   ``metrics.jsonl``, arrays to ``arrays/step_<t>.npz``). On the steps a host monitor wants,
   a jitted, non-donated device copy of the params after update ``t`` is made and its host
   transfer starts at once; the NumPy tree is handed to ``submit(t, ·)`` after step ``t + 1``
   is dispatched (:class:`~jaxspectra.train.hooks.HostCopier`); finished host results are
   written under their step as they come (``poll``, and ``close`` at the end).
4. Eval every ``train.eval_every`` steps and at the end; checkpoints every ``checkpoint.every``
   steps and at the end (only of finite states: the loop flushes the pending metrics and checks
   the params before each save).
5. SIGTERM (a preemption notice) finishes the current step, checkpoints it and returns with
   ``stopped = "preempted"``; the next ``train`` resumes exactly.
6. A non-finite loss or gradient norm stops the run at once (no further saves: the last good
   checkpoint stays the latest); ``summary.json`` carries the instability verdict
   (:mod:`jaxspectra.train.instability`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import threading
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxspectra.train import sharding as shd
from jaxspectra.train.checkpoint import Checkpointer
from jaxspectra.train.config import Config, ConfigError, dump_toml, to_dict
from jaxspectra.train.hooks import (
    HostCopier,
    check_names,
    config_monitors,
    is_active,
    optax_spectral_metrics,
)
from jaxspectra.train.instability import assess
from jaxspectra.train.metrics import (
    LaggedFetcher,
    MetricsWriter,
    flops_per_token,
    matmul_params,
    mfu,
    param_counts,
    read_jsonl,
)
from jaxspectra.train.state import (
    TrainState,
    base_hparams,
    build_model,
    hp_arrays,
    init_params,
    lr_multiplier_tree,
    make_tx_factory,
    model_dims,
    validate_optimizer,
)
from jaxspectra.train.step import lm_loss, make_eval_step, make_train_step


@dataclasses.dataclass
class Setup:
    """Everything validated before compute."""

    cfg: Config
    mesh: Any
    module: Any
    model_config: Any
    dataset: Any
    eval_dataset: Any
    run_dir: Path
    ckpt_dir: Path | None
    abstract_params: Any
    data_seed: int
    device_monitors: list = dataclasses.field(default_factory=list)  # from cfg.monitors
    host_monitors: list = dataclasses.field(default_factory=list)

    @property
    def n_devices(self) -> int:
        return int(self.mesh.devices.size)


@dataclasses.dataclass
class RunResult:
    state: TrainState
    summary: dict[str, Any]
    losses: list[tuple[int, float]]
    run_dir: Path


def _check_writable(path: Path, what: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write_probe_{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise ConfigError(
            f"{what} {str(path)!r} is not writable ({e.strerror or e}); choose another directory"
        ) from e


def _build_dataset(cfg: Config, split: str, vocab_size: int | None):
    from jaxspectra import data as data_mod

    if cfg.data.data_dir and not Path(cfg.data.data_dir).exists():
        raise ConfigError(
            f"data.data_dir {cfg.data.data_dir!r} does not exist; point it at a prepared data "
            "directory or use data.source='default' (embedded corpus) / 'synthetic'"
        )
    try:
        return data_mod.build_lm_dataset(
            cfg.data.source, data_dir=cfg.data.data_dir or None, tokenizer=cfg.data.tokenizer,
            split=split, **({"vocab_size": vocab_size} if cfg.data.source == "synthetic" and
                            vocab_size else {}),
        )
    except (FileNotFoundError, KeyError, ValueError) as e:
        raise ConfigError(f"[data] source={cfg.data.source!r} split={split!r}: {e}") from e


def setup(
    cfg: Config, *, model: tuple[Any, Any] | None = None, dataset: Any = None,
    eval_dataset: Any = None, write_config: bool = True,
) -> Setup:
    """Validate ``cfg`` and build model/data objects; nothing is computed on the devices.

    ``model=(module, model_config)`` and ``dataset``/``eval_dataset`` (objects with
    ``batch(seed, step, batch_size, seq_len)``) replace what the config names (Python API).
    """
    t, d = cfg.train, cfg.data
    for key, val in (("train.steps", t.steps), ("data.batch_size", d.batch_size),
                     ("data.seq_len", d.seq_len), ("train.grad_accum", t.grad_accum),
                     ("train.log_every", t.log_every)):
        if val <= 0:
            raise ConfigError(f"{key} must be positive, got {val}")
    if t.sharding not in ("replicated", "fsdp"):
        raise ConfigError(f"train.sharding must be 'replicated' or 'fsdp', got {t.sharding!r}")
    shd.maybe_initialize_distributed(cfg.run.distributed)
    try:
        mesh = shd.make_mesh(cfg.run.num_devices)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    n = mesh.devices.size
    if d.batch_size % (n * t.grad_accum):
        raise ConfigError(
            f"data.batch_size={d.batch_size} must be divisible by device count × grad_accum = "
            f"{n} × {t.grad_accum}; use a multiple of {n * t.grad_accum} or set run.num_devices"
        )
    run_dir = Path(cfg.run.dir)
    _check_writable(run_dir, "run.dir")
    ckpt_dir = None
    if cfg.checkpoint.every > 0 or cfg.checkpoint.keep > 0:
        ckpt_dir = Path(cfg.checkpoint.dir) if cfg.checkpoint.dir else run_dir / "checkpoints"
        _check_writable(ckpt_dir, "checkpoint.dir")
    module, mcfg = model if model is not None else build_model(cfg.model, d.seq_len)
    vocab = getattr(mcfg, "vocab_size", None)
    if dataset is None:
        dataset = _build_dataset(cfg, "train", vocab)
    if eval_dataset is None:
        eval_dataset = (_build_dataset(cfg, d.eval_split, vocab) if d.eval_batches > 0
                        else dataset)
    dvocab = getattr(dataset, "vocab_size", None)
    if isinstance(vocab, int) and isinstance(dvocab, int) and dvocab > vocab:
        raise ConfigError(
            f"the data's vocabulary ({dvocab}) is larger than model vocab_size={vocab}; "
            "set model.options.vocab_size"
        )
    abstract_params = jax.eval_shape(partial(init_params, module, seq_len=d.seq_len),
                                     jax.random.PRNGKey(0))
    validate_optimizer(cfg.optim, t.steps, abstract_params,
                       lr_multiplier_tree(mcfg, abstract_params))
    data_seed = cfg.data.seed if cfg.data.seed >= 0 else cfg.run.seed
    device_mons, host_mons = config_monitors(
        cfg, module=module, n_layers=model_dims(mcfg).get("n_layers"),
        loss_fn=partial(lm_loss, module.apply),
        probe_inputs=lambda: dataset.batch(data_seed, 0, d.batch_size, d.seq_len)[0])
    if write_config:
        (run_dir / "config.toml").write_text(dump_toml(cfg))
    if cfg.run.compile_cache_dir:
        cache = Path(cfg.run.compile_cache_dir).expanduser()
        _check_writable(cache, "run.compile_cache_dir")
        if jax.config.jax_compilation_cache_dir != str(cache):
            from jax.experimental.compilation_cache import compilation_cache

            jax.config.update("jax_compilation_cache_dir", str(cache))
            compilation_cache.reset_cache()  # re-open at the new directory
    return Setup(cfg, mesh, module, mcfg, dataset, eval_dataset, run_dir, ckpt_dir,
                 abstract_params, data_seed, device_mons, host_mons)


def put_batch(batch: Any, sharding: Any) -> Any:
    """Host arrays (the global batch) → sharded device arrays (multi-process aware)."""
    def one(x):
        x = np.asarray(x)
        if x.dtype.kind in "iu":
            x = x.astype(np.int32)
        if jax.process_count() == 1:
            return jax.device_put(x, sharding)
        p, np_ = jax.process_index(), jax.process_count()
        rows = x.shape[0] // np_
        return jax.make_array_from_process_local_data(sharding, x[p * rows:(p + 1) * rows],
                                                      x.shape)
    return jax.tree.map(one, batch)


def model_flops_per_token(model_config: Any, abstract_params: Any, seq_len: int) -> float:
    """The models package's formula for GPT configs, else :func:`metrics.flops_per_token`."""
    try:
        from jaxspectra.models import GPTConfig
        from jaxspectra.models import flops_per_token as gpt_flops

        if isinstance(model_config, GPTConfig):
            return float(gpt_flops(model_config, seq_len))
    except ImportError:  # pragma: no cover
        pass
    dims = model_dims(model_config)
    return flops_per_token(matmul_params(abstract_params), dims["n_layers"], dims["d_model"],
                           seq_len)


def _all_finite(tree: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
              if jnp.issubdtype(x.dtype, jnp.floating)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


class _Engine:
    """Compiled pieces of one run (shared by :func:`train` and the benchmark)."""

    def __init__(self, s: Setup, monitors: Sequence[Any] = ()):
        cfg = s.cfg
        self.s = s
        self.apply_fn = s.module.apply
        self.loss_fn = partial(lm_loss, self.apply_fn)
        mults = lr_multiplier_tree(s.model_config, s.abstract_params)
        self.spectral_every = cfg.monitors.spectral_every
        self.make_tx, self.lr_fn = make_tx_factory(cfg.optim, cfg.train.steps, s.abstract_params,
                                                   mults, spectral_every=self.spectral_every)
        self.hp = hp_arrays(base_hparams(cfg.optim))
        tx0 = self.make_tx(self.hp)
        abstract_state = jax.eval_shape(
            lambda p: TrainState(jnp.zeros((), jnp.int32), p, tx0.init(p),
                                 jax.random.PRNGKey(0)), s.abstract_params)
        self.state_sh = shd.state_shardings(abstract_state, s.mesh, cfg.train.sharding,
                                             cfg.train.fsdp_min_size)
        self.abstract_state = jax.tree.map(
            lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh),
            abstract_state, self.state_sh)
        self.rep = shd.replicated(s.mesh)
        self.batch_sh = shd.batch_sharding(s.mesh)
        self.monitors = list(monitors)
        step = make_train_step(self.loss_fn, self.make_tx, self.lr_fn, cfg.train.grad_accum)
        self.step = jax.jit(step, in_shardings=(self.state_sh, self.batch_sh, self.rep),
                            out_shardings=(self.state_sh, self.rep), donate_argnums=0)
        self._hooked: dict[tuple[str, ...], Any] = {}
        # the optax spectral monitor's last record, copied out of the (donated) optimiser state
        self.spectral_record = jax.jit(
            lambda st: jax.tree.map(jnp.copy, optax_spectral_metrics(st)),
            in_shardings=(self.state_sh.opt_state,), out_shardings=self.rep)
        self._init = None
        self.eval_step = jax.jit(make_eval_step(self.loss_fn),
                                 in_shardings=(self.state_sh.params, self.batch_sh),
                                 out_shardings=self.rep)

    def hooked(self, active: Sequence[Any]):
        key = tuple(m.name for m in active)
        if key not in self._hooked:
            step = make_train_step(self.loss_fn, self.make_tx, self.lr_fn,
                                   self.s.cfg.train.grad_accum, monitors=active)
            self._hooked[key] = jax.jit(
                step, in_shardings=(self.state_sh, self.batch_sh, self.rep, self.rep),
                out_shardings=(self.state_sh, self.rep, self.rep, self.rep), donate_argnums=0)
        return self._hooked[key]

    def init_state(self, seed: int) -> TrainState:
        if self._init is None:
            self._init = self._make_init()
        return self._init(jax.random.PRNGKey(seed))

    def _make_init(self):
        s = self.s
        from jaxspectra.optim.registry import prepare_params

        def init(key):
            k_init, k_train = jax.random.split(key)
            params = init_params(s.module, k_init, s.cfg.data.seq_len)
            params = prepare_params(s.cfg.optim.name, params, **s.cfg.optim.options)
            return TrainState(jnp.zeros((), jnp.int32), params,
                              self.make_tx(self.hp).init(params), k_train)

        return jax.jit(init, out_shardings=self.state_sh)

    def batch(self, dataset: Any, seed: int, step: int, batch_size: int | None = None):
        d = self.s.cfg.data
        return put_batch(dataset.batch(seed, step, batch_size or d.batch_size, d.seq_len),
                         self.batch_sh)


def _evaluate(eng: _Engine, params: Any) -> float:
    s = eng.s
    n = max(s.cfg.data.eval_batches, 1)
    ds = s.eval_dataset if s.cfg.data.eval_batches > 0 else s.dataset
    tot = 0.0
    for i in range(n):
        tot += float(eng.eval_step(params, eng.batch(ds, s.data_seed + 10_007, i)))
    return tot / n


def _truncate_metrics(path: Path, start: int) -> None:
    """On resume: drop records a crashed continuation wrote past the checkpoint."""
    if not path.exists():
        return
    keep = [r for r in read_jsonl(path)
            if r["step"] < start or ("eval/loss" in r and r["step"] == start)]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in keep))
    tmp.replace(path)


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    tmp.replace(path)


def train(
    cfg: Config,
    *,
    model: tuple[Any, Any] | None = None,
    dataset: Any = None,
    eval_dataset: Any = None,
    monitors: Sequence[Any] = (),
    host_monitors: Sequence[Any] = (),
    stop_after: int | None = None,
) -> RunResult:
    """Train from ``cfg`` (resuming from the latest checkpoint when one exists).

    Args:
      cfg: the run config.
      model, dataset, eval_dataset: optional objects replacing what the config names.
      monitors: :class:`~jaxspectra.monitors.base.DeviceMonitor` s (hooked step on their steps),
        run besides those ``cfg.monitors`` turns on.
      host_monitors: :class:`~jaxspectra.monitors.base.HostMonitor` s (async host copies),
        besides the config's.
      stop_after: stop (with a checkpoint) once this many updates are done — a preemption
        stand-in; the schedule still spans ``train.steps``.
    """
    s = setup(cfg, model=model, dataset=dataset, eval_dataset=eval_dataset)
    monitors = [*s.device_monitors, *monitors]
    host_monitors = [*s.host_monitors, *host_monitors]
    check_names(monitors, host_monitors)
    eng = _Engine(s, monitors)
    t_cfg = cfg.train
    B, T = cfg.data.batch_size, cfg.data.seq_len
    ckpt = (Checkpointer(s.ckpt_dir, cfg.checkpoint.keep, cfg.checkpoint.async_save)
            if s.ckpt_dir is not None else None)
    start = 0
    state = None
    resumed_from = None
    if ckpt is not None and cfg.checkpoint.resume and ckpt.latest_step() is not None:
        state, meta = ckpt.restore(None, eng.abstract_state)
        start = int(meta["data_position"])
        resumed_from = int(meta["step"])
        _truncate_metrics(s.run_dir / "metrics.jsonl", start)
    if state is None:
        state = eng.init_state(cfg.run.seed)
    main = jax.process_index() == 0  # only the first process writes logs
    writer = MetricsWriter(s.run_dir, enabled=main)  # after the resume truncation
    counts = param_counts(state.params)
    if start == 0:
        writer.write(0, {f"params/{k}": v for k, v in counts.items()})
    flops_tok = model_flops_per_token(s.model_config, s.abstract_params, T)
    if t_cfg.progress and main:
        groups = ", ".join(f"{k} {v:,}" for k, v in counts.items() if k != "total")
        print(f"jaxspectra train: {counts['total']:,} parameters ({groups}); "
              f"{flops_tok / 1e6:.3g} MFLOP/token; {s.n_devices} device(s); "
              + (f"resumed at step {start}" if start else "from scratch"), flush=True)
    mon_states = {m.name: jax.device_put(m.init(state.params), eng.rep) for m in monitors}
    end = t_cfg.steps if stop_after is None else min(stop_after, t_cfg.steps)
    fetcher = LaggedFetcher()
    losses: list[tuple[int, float]] = []
    evals: list[tuple[int, float]] = []
    if start > 0:
        evals = [(r["step"], float(r["eval/loss"])) for r in read_jsonl(
            s.run_dir / "metrics.jsonl") if "eval/loss" in r]
    nonfinite_step: int | None = None
    last_time: float | None = None
    times: list[float] = []
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    bar = (tqdm(total=end, initial=start, disable=not (t_cfg.progress and main),
                dynamic_ncols=True)
           if tqdm else None)
    last_saved = resumed_from

    def handle(item) -> bool:
        """Log one fetched step; False when it was non-finite."""
        nonlocal last_time, nonfinite_step
        step_i, m = item
        now = time.perf_counter()
        rec = {k: (float(v) if np.ndim(v) == 0 else v) for k, v in m["train"].items()}
        mon = {k: (float(v) if np.ndim(v) == 0 else v) for k, v in m["monitors"].items()}
        if last_time is not None:
            times.append(now - last_time)
            tok_s = B * T / max(now - last_time, 1e-9)
            rec["tokens_per_s"] = tok_s
            rec["mfu"] = mfu(tok_s, flops_tok, t_cfg.peak_tflops, s.n_devices)
        last_time = now
        loss = rec["loss"]
        losses.append((step_i, loss))
        if step_i % t_cfg.log_every == 0 or step_i == end - 1 or not math.isfinite(loss):
            writer.write(step_i, {**rec, **mon})
        elif mon:  # monitor metrics land on every step they were computed
            writer.write(step_i, mon)
        if bar is not None:
            bar.update(1)
            if step_i % t_cfg.log_every == 0:
                post = {"loss": f"{loss:.4f}"}
                if "tokens_per_s" in rec:
                    post["tok/s"] = f"{rec['tokens_per_s']:.3g}"
                    post["mfu"] = f"{rec['mfu']:.1%}"
                bar.set_postfix(post)
        finite = math.isfinite(loss) and math.isfinite(rec["grad_norm"])
        if not finite and nonfinite_step is None:
            nonfinite_step = step_i
        return finite

    def save(step_done: int) -> None:
        nonlocal last_saved
        if ckpt is None or last_saved == step_done:
            return
        if not bool(jax.jit(_all_finite)(state.params)):
            return
        ckpt.save(step_done, state, {"step": step_done, "data_position": step_done,
                                     "seed": cfg.run.seed, "config": to_dict(cfg)})
        last_saved = step_done

    stopped = False
    signalled = []  # SIGTERM (preemption): finish the step, checkpoint, exit cleanly
    old_handler = None
    if threading.current_thread() is threading.main_thread():
        old_handler = signal.signal(signal.SIGTERM, lambda *_: signalled.append(True))
    copier = HostCopier(eng.state_sh.params)
    try:
        for t in range(start, end):
            batch = eng.batch(s.dataset, s.data_seed, t)
            active = [m for m in monitors if is_active(m, t)]
            mmet: dict[str, Any] = {}
            if active:
                sub = tuple(mon_states[m.name] for m in active)
                state, metrics, mmet, sub = eng.hooked(active)(state, batch, eng.hp, sub)
                for m, ms in zip(active, sub):
                    mon_states[m.name] = ms
            else:
                state, metrics = eng.step(state, batch, eng.hp)
            if eng.spectral_every > 0 and t % eng.spectral_every == 0:
                mmet = {**mmet, **eng.spectral_record(state.opt_state)}
            prev = fetcher.push(t, {"train": metrics, "monitors": mmet})
            copier.deliver()  # copies started last step have landed while this one was queued
            wanted = [hm for hm in host_monitors if hm.wants(t)]
            if wanted:  # copy (the state is donated to the next step), start the host transfer
                copier.start(t, state.params, wanted)
            if prev is not None and not handle(prev) and t_cfg.stop_on_nonfinite:
                stopped = True
                break
            done = t + 1
            need_eval = t_cfg.eval_every > 0 and done % t_cfg.eval_every == 0 and done < end
            need_ckpt = cfg.checkpoint.every > 0 and done % cfg.checkpoint.every == 0
            if need_eval or need_ckpt or done == end:
                last = fetcher.flush()
                if last is not None and not handle(last) and t_cfg.stop_on_nonfinite:
                    stopped = True
                    break
            if need_eval and cfg.data.eval_batches > 0:
                ev = _evaluate(eng, state.params)
                evals.append((done, ev))
                writer.write(done, {"eval/loss": ev})
            if need_ckpt:
                save(done)
            if need_eval or need_ckpt:
                last_time = time.perf_counter()  # keep eval/save time out of tokens/s
            for hm in host_monitors:
                for st, mm in hm.poll():
                    writer.write(st, mm)
            if signalled:
                break
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)
    last = fetcher.flush()
    if last is not None:
        ok = handle(last)
        stopped = stopped or (not ok and t_cfg.stop_on_nonfinite)
    copier.deliver()
    final_step = int(state.step) if not stopped else (nonfinite_step or 0)
    if not stopped and nonfinite_step is None:
        done = int(state.step)
        if cfg.data.eval_batches > 0 and not signalled and (not evals or evals[-1][0] != done):
            ev = _evaluate(eng, state.params)
            evals.append((done, ev))
            writer.write(done, {"eval/loss": ev})
        if cfg.checkpoint.keep > 0 or cfg.checkpoint.every > 0 or signalled:
            save(done)
    for hm in host_monitors:
        for st, mm in hm.close():
            writer.write(st, mm)
    if ckpt is not None:
        ckpt.close()
    if bar is not None:
        bar.close()
    writer.close()
    curve = evals
    if not curve:  # no evaluations: judge the train curve averaged over 20 windows
        all_losses = [(r["step"], float(r["loss"])) for r in read_jsonl(
            s.run_dir / "metrics.jsonl") if "loss" in r]
        w = max(1, len(all_losses) // 20)
        curve = [(all_losses[i + w - 1][0], float(np.mean([x for _, x in all_losses[i:i + w]])))
                 for i in range(0, len(all_losses) - w + 1, w)]
    verdict = assess([c[0] for c in curve], [c[1] for c in curve], t_cfg.steps,
                     cfg.instability, nonfinite_step)
    steady = times[2:] if len(times) > 4 else times
    tok_s = B * T * len(steady) / sum(steady) if steady else float("nan")
    summary = {
        "steps_done": final_step,
        "planned_steps": t_cfg.steps,
        "stopped": "nonfinite" if stopped else (
            "preempted" if (signalled or int(state.step) < t_cfg.steps) else "completed"),
        "resumed_from": resumed_from,
        "last_checkpoint": last_saved,
        "final_loss": losses[-1][1] if losses else None,
        "final_eval_loss": evals[-1][1] if evals else None,
        "param_counts": counts,
        "flops_per_token": flops_tok,
        "tokens_per_s": tok_s,
        "mfu": mfu(tok_s, flops_tok, t_cfg.peak_tflops, s.n_devices),
        "devices": s.n_devices,
        "verdict": verdict,
    }
    if main:
        _write_json(s.run_dir / "summary.json", summary)
    return RunResult(state, summary, losses, s.run_dir)
