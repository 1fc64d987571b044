"""Vectorised sweeps: a stack of small models trained by one jit-compiled, ``vmap``-ped step.

Members are the grid ``sweep.seeds × sweep.axes`` (every combination). A member differs from the
base config in its seed (init, data order and dropout keys, exactly as a single run with that
``run.seed``) and/or in *shape-preserving* hyper-parameters:

* ``optim.learning_rate``, ``optim.weight_decay``, ``optim.clip_norm`` and numeric
  ``optim.options.<name>`` — passed to the step as per-member arrays (the optimiser is built
  inside the vmapped step, so it must not branch in Python on them: that is reported clearly);
* ``model.options.<field>`` whose name mentions ``init``/``std``/``sigma`` (initialisation only:
  each member is initialised on its own, then the params are stacked).

Rejected before any compute: an axis that changes shapes (``data.batch_size``, ``d_model``, …),
and a hyper-parameter that drives a ``lax.cond`` (``optim.msign.*``, e.g. the MSign period: under
``vmap`` a ``cond`` on a batched predicate becomes a ``select`` that runs both branches every
step, so the sweep would pay the MSign cost on every step) — run one sweep per value instead.

Each member gets ``<run.dir>/member_<i>/metrics.jsonl`` and its own verdict; ``summary.json`` in
``run.dir`` lists the members. A member whose loss turns non-finite is reported as such while
the others continue (members are independent under ``vmap``). Sweeps write no checkpoints and
run no monitors: a ``[monitors]`` section (e.g. of a shared config) is ignored, with a note.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import time
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxspectra.train import sharding as shd
from jaxspectra.train.config import (
    Config,
    ConfigError,
    MonitorsSection,
    apply_overrides,
    to_dict,
)
from jaxspectra.train.instability import assess
from jaxspectra.train.loop import Setup, _Engine, _write_json, model_flops_per_token, setup
from jaxspectra.train.metrics import LaggedFetcher, MetricsWriter, mfu
from jaxspectra.train.state import (
    SWEEPABLE_OPTIM,
    TrainState,
    _own_schedule,
    base_hparams,
    build_model,
)
from jaxspectra.train.step import make_eval_step, make_train_step

_INIT_WORDS = ("init", "std", "sigma")
_SHAPE_KEYS = ("data.batch_size", "data.seq_len", "train.grad_accum")


@dataclasses.dataclass
class SweepResult:
    members: list[dict[str, Any]]
    summary: dict[str, Any]
    losses: np.ndarray  # [steps, members]
    state: TrainState  # stacked on a leading member axis
    run_dir: Path


def members_of(cfg: Config) -> list[dict[str, Any]]:
    """The member list: ``[{"seed": s, "<axis>": v, ...}, ...]`` (seeds outermost)."""
    seeds = list(cfg.sweep.seeds) or [cfg.run.seed]
    keys = list(cfg.sweep.axes)
    for k in keys:
        if not isinstance(cfg.sweep.axes[k], list) or not cfg.sweep.axes[k]:
            raise ConfigError(f"sweep.axes[{k!r}] must be a non-empty list of values")
    out = []
    for seed in seeds:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ConfigError(f"sweep.seeds must be integers, got {seed!r}")
        for combo in itertools.product(*(cfg.sweep.axes[k] for k in keys)):
            out.append({"seed": seed, **dict(zip(keys, combo))})
    return out


def member_config(cfg: Config, member: dict[str, Any]) -> Config:
    """The single-run config equivalent to ``member`` (what a one-by-one run would use)."""
    over = {k: v for k, v in member.items() if k != "seed"}
    over["run.seed"] = member["seed"]
    out = apply_overrides(cfg, {k: (json.dumps(v) if isinstance(v, str) else repr(v)
                                     if not isinstance(v, bool) else str(v).lower())
                                for k, v in over.items()})
    return dataclasses.replace(out, sweep=dataclasses.replace(out.sweep, seeds=[], axes={}))


def _abstract_params(cfg: Config, module) -> Any:
    from jaxspectra.train.state import init_params

    return jax.eval_shape(partial(init_params, module, seq_len=cfg.data.seq_len),
                          jax.random.PRNGKey(0))


def validate_axes(cfg: Config, module=None) -> None:
    """Reject shape-changing, cond-driving and unknown sweep axes (no compute)."""
    base_shapes = None
    for key, values in cfg.sweep.axes.items():
        if key.startswith("optim.msign"):
            raise ConfigError(
                f"sweep axis {key!r} drives a lax.cond (MSign's every-P-steps branch); under vmap "
                "both branches would run on every step. Run one sweep per value instead "
                f"(e.g. --set {key}=<value>)."
            )
        if key in _SHAPE_KEYS:
            raise ConfigError(
                f"sweep axis {key!r} changes array shapes; members of a vmapped sweep must share "
                "shapes. Run separate sweeps for each value."
            )
        if key == "optim.learning_rate" and _own_schedule(cfg.optim.name):
            raise ConfigError(
                f"optimizer {cfg.optim.name!r} builds its own schedule from a Python float "
                "learning rate, which cannot be vmapped; run one sweep per learning rate"
            )
        if key in SWEEPABLE_OPTIM or key.startswith("optim.options."):
            for v in values:
                if isinstance(v, bool) or not isinstance(v, int | float):
                    raise ConfigError(f"sweep axis {key!r} needs numbers, got {v!r}")
            continue
        if key.startswith("model.options."):
            field = key[len("model.options."):]
            if base_shapes is None:
                m0, _ = build_model(cfg.model, cfg.data.seq_len)
                base_shapes = jax.tree.map(lambda x: (x.shape, x.dtype),
                                           _abstract_params(cfg, m0))
            for v in values:
                mc = dataclasses.replace(cfg.model, options={**cfg.model.options, field: v})
                m, _ = build_model(mc, cfg.data.seq_len)
                shapes = jax.tree.map(lambda x: (x.shape, x.dtype), _abstract_params(cfg, m))
                if shapes != base_shapes:
                    raise ConfigError(
                        f"sweep axis {key!r} changes parameter shapes (value {v!r}); members of "
                        "a vmapped sweep must share shapes. Run separate sweeps."
                    )
            if not any(w in field.lower() for w in _INIT_WORDS):
                raise ConfigError(
                    f"sweep axis {key!r} changes the model's computation, not just its init; "
                    f"only init fields (names with {_INIT_WORDS}) can share one vmapped step"
                )
            continue
        raise ConfigError(
            f"sweep axis {key!r} is not sweepable; use sweep.seeds, {list(SWEEPABLE_OPTIM)}, "
            "optim.options.<name> or model.options.<init field>"
        )


def sweep(cfg: Config, *, model: tuple[Any, Any] | None = None, dataset: Any = None,
          eval_dataset: Any = None) -> SweepResult:
    """Train every member of ``cfg.sweep`` in one vmapped step (module docstring)."""
    if cfg.monitors != MonitorsSection():
        # monitors (a lax.cond under vmap runs both branches) are for single runs
        print("jaxspectra sweep: note: [monitors] is ignored by sweeps", flush=True)
        cfg = dataclasses.replace(cfg, monitors=MonitorsSection())
    members = members_of(cfg)
    validate_axes(cfg)
    s = setup(cfg, model=model, dataset=dataset, eval_dataset=eval_dataset)
    s = dataclasses.replace(s, ckpt_dir=None)
    eng = _Engine(s)
    M = len(members)
    B, T, steps = cfg.data.batch_size, cfg.data.seq_len, cfg.train.steps

    rep = shd.replicated(s.mesh)
    state = init_members(s, eng, members)
    base = base_hparams(cfg.optim)
    hp_keys = sorted(set(base) | {k for k in members[0] if k in SWEEPABLE_OPTIM
                                  or k.startswith("optim.options.")})
    hp = {k: jnp.asarray([float(m[k] if k in m else base[k] if k in base else _default(cfg, k))
                          for m in members], jnp.float32) for k in hp_keys}
    data_seeds = [cfg.data.seed if cfg.data.seed >= 0 else m["seed"] for m in members]

    step = make_train_step(eng.loss_fn, eng.make_tx, eng.lr_fn, cfg.train.grad_accum)
    bsh = shd.batch_sharding(s.mesh, leading=1)
    vstep = jax.vmap(step, in_axes=(0, 0, 0))
    try:
        jax.eval_shape(vstep, state, (jax.ShapeDtypeStruct((M, B, T), jnp.int32),) * 2, hp)
    except jax.errors.ConcretizationTypeError as e:
        raise ConfigError(
            f"a swept hyper-parameter ({[k for k in hp if k in members[0]]}) is used in Python "
            f"control flow by optimizer {cfg.optim.name!r}, so it cannot be vmapped: {e}"
        ) from e
    vstep = jax.jit(vstep, in_shardings=(rep, bsh, rep), out_shardings=(rep, rep),
                    donate_argnums=0)
    veval = jax.jit(jax.vmap(make_eval_step(eng.loss_fn)), in_shardings=(rep, bsh),
                    out_shardings=rep)

    def batches(ds, seeds, t):
        xs = [ds.batch(sd, t, B, T) for sd in seeds]
        return jax.device_put((np.stack([x for x, _ in xs]).astype(np.int32),
                               np.stack([y for _, y in xs]).astype(np.int32)), bsh)

    def evaluate(params):
        n = max(cfg.data.eval_batches, 1)
        ds = s.eval_dataset if cfg.data.eval_batches > 0 else s.dataset
        tot = np.zeros(M)
        for i in range(n):
            tot += np.asarray(veval(params, batches(ds, [d + 10_007 for d in data_seeds], i)))
        return tot / n

    writers = [MetricsWriter(s.run_dir / f"member_{i}", tensorboard=False) for i in range(M)]
    flops_tok = model_flops_per_token(s.model_config, s.abstract_params, T)
    losses = np.full((steps, M), np.nan)
    evals: list[tuple[int, np.ndarray]] = []
    nonfinite: list[int | None] = [None] * M
    fetcher = LaggedFetcher()
    times: list[float] = []
    last = [None]

    def handle(item):
        t, m = item
        now = time.perf_counter()
        if last[0] is not None:
            times.append(now - last[0])
        last[0] = now
        losses[t] = m["loss"]
        for i in range(M):
            loss_i, gn = float(m["loss"][i]), float(m["grad_norm"][i])
            if (not math.isfinite(loss_i) or not math.isfinite(gn)) and nonfinite[i] is None:
                nonfinite[i] = t
            if t % cfg.train.log_every == 0 or t == steps - 1:
                writers[i].write(t, {k: float(v[i]) for k, v in m.items()})

    from tqdm.auto import tqdm

    bar = tqdm(total=steps, disable=not cfg.train.progress, desc=f"sweep x{M}")
    for t in range(steps):
        state, metrics = vstep(state, batches(s.dataset, data_seeds, t), hp)
        prev = fetcher.push(t, metrics)
        if prev is not None:
            handle(prev)
            bar.update(1)
        done = t + 1
        if cfg.train.eval_every > 0 and done % cfg.train.eval_every == 0 or done == steps:
            if (last_item := fetcher.flush()) is not None:
                handle(last_item)
                bar.update(1)
            if cfg.data.eval_batches > 0:
                ev = evaluate(state.params)
                evals.append((done, ev))
                for i in range(M):
                    writers[i].write(done, {"eval/loss": float(ev[i])})
        if all(n is not None for n in nonfinite):
            break
    if (last_item := fetcher.flush()) is not None:
        handle(last_item)
    bar.close()
    for w in writers:
        w.close()
    steady = times[2:] if len(times) > 4 else times
    tok_s = M * B * T * len(steady) / sum(steady) if steady else float("nan")
    out_members = []
    for i, mem in enumerate(members):
        curve = [(st, float(ev[i])) for st, ev in evals]
        verdict = assess([c[0] for c in curve], [c[1] for c in curve], steps, cfg.instability,
                         nonfinite[i])
        rec = {"member": i, **mem, "final_loss": float(losses[-1, i]),
               "final_eval_loss": curve[-1][1] if curve else None,
               "nonfinite_step": nonfinite[i], "verdict": verdict}
        _write_json(s.run_dir / f"member_{i}" / "summary.json", rec)
        out_members.append(rec)
    summary = {"members": out_members, "n_members": M, "steps": steps,
               "tokens_per_s_all_members": tok_s,
               "mfu": mfu(tok_s, flops_tok, cfg.train.peak_tflops, s.n_devices),
               "config": to_dict(cfg)}
    _write_json(s.run_dir / "summary.json", summary)
    return SweepResult(out_members, summary, losses, state, s.run_dir)


def init_members(s: Setup, eng: _Engine, members: list[dict[str, Any]]) -> TrainState:
    """Each member initialised exactly as its single run would be, stacked on axis 0."""
    states = []
    T = s.cfg.data.seq_len
    for mem in members:
        mo = {k[len("model.options."):]: v for k, v in mem.items() if k.startswith("model.")}
        if mo:
            mc = dataclasses.replace(s.cfg.model, options={**s.cfg.model.options, **mo})
            sub = dataclasses.replace(s, module=build_model(mc, T)[0])
            states.append(_Engine(sub).init_state(mem["seed"]))
        else:
            states.append(eng.init_state(mem["seed"]))
    return jax.device_put(
        jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *states),
        shd.replicated(s.mesh))


def _default(cfg: Config, key: str) -> float:
    if key == "optim.clip_norm":
        return cfg.optim.clip_norm
    if key.startswith("optim.options."):
        name = key[len("optim.options."):]
        if name in cfg.optim.options:
            return cfg.optim.options[name]
    raise ConfigError(
        f"sweep axis {key!r} has no base value; give every member a value or set it in [optim]"
    )


__all__ = ["SweepResult", "member_config", "members_of", "sweep", "validate_axes", "Setup"]
