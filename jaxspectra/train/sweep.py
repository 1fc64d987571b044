"""Vectorised sweeps: a stack of small models trained by one jit-compiled, ``vmap``-ped step.

Members are the grid ``sweep.seeds × sweep.axes`` (every combination). A member differs from the
base config in its seed (init, data order and dropout keys, exactly as a single run with that
``run.seed``) and/or in *shape-preserving* hyper-parameters:

* ``optim.learning_rate``, ``optim.weight_decay``, ``optim.clip_norm`` and numeric
  ``optim.options.<name>`` — hyper-parameters stored in each member's optimiser state
  (``optax.inject_hyperparams``, :mod:`jaxspectra.train.state`), so the optimiser must not branch
  in Python on them: that is reported clearly;
* ``model.options.<field>`` whose name mentions ``init``/``std``/``sigma`` (initialisation only:
  each member is initialised on its own, then the params are stacked).

Rejected before any compute: an axis that changes shapes (``data.batch_size``, ``d_model``, …),
and a hyper-parameter that drives a ``lax.cond`` (``optim.msign.*``, e.g. the MSign period: under
``vmap`` a ``cond`` on a batched predicate becomes a ``select`` that runs both branches every
step, so the sweep would pay the MSign cost on every step) — run one sweep per value instead.

A sweep is the training loop (:func:`jaxspectra.train.loop.run_loop`) over a vmapped
:class:`~jaxspectra.train.engine.Engine`, with the same hooks (metrics, eval, progress, signals,
non-finite stop). Each member gets ``<run.dir>/member_<i>/metrics.jsonl`` and
``member_<i>/summary.json`` with its own verdict; ``sweep_summary.json`` and ``sweep_config.toml``
in ``run.dir`` list the members (a single run's ``summary.json`` / ``config.toml`` in the same
directory are left alone). A member whose loss turns non-finite is reported as such while
the others continue (members are independent under ``vmap``). Sweeps write no checkpoints and
run no monitors: a ``[monitors]`` section (e.g. of a shared config) is ignored, with a note.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxspectra.train.builtin_hooks import (
    Evaluate,
    History,
    MetricsLog,
    Progress,
    StopOnNonFinite,
    StopOnSignal,
    Throughput,
)
from jaxspectra.train.config import (
    Config,
    ConfigError,
    MonitorsSection,
    apply_overrides,
    dump_toml,
    to_dict,
)
from jaxspectra.train.engine import Engine
from jaxspectra.train.hooks import Hook
from jaxspectra.train.loop import run_loop
from jaxspectra.train.resume import run_flops_per_token
from jaxspectra.train.setup import Setup, setup
from jaxspectra.train.state import (
    SWEEPABLE_OPTIM,
    TrainState,
    hyperparams,
    init_model_params,
    is_paper004,
    model_from_section,
)
from jaxspectra.train.summary import verdict, write_json

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
    return jax.eval_shape(partial(init_model_params, module, seq_len=cfg.data.seq_len),
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
        if key == "optim.learning_rate" and is_paper004(cfg.optim.name):
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
                m0, _ = model_from_section(cfg.model, cfg.data.seq_len)
                base_shapes = jax.tree.map(lambda x: (x.shape, x.dtype),
                                           _abstract_params(cfg, m0))
            for v in values:
                mc = dataclasses.replace(cfg.model, options={**cfg.model.options, field: v})
                m, _ = model_from_section(mc, cfg.data.seq_len)
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


def _swept_hparams(cfg: Config, members: list[dict[str, Any]]) -> dict[str, float]:
    """Base values of the swept optimiser hyper-parameters (kept in the optimiser state)."""
    return {k: _default(cfg, k) for k in members[0]
            if k in SWEEPABLE_OPTIM or k.startswith("optim.options.")}


def sweep(cfg: Config, *, model: tuple[Any, Any] | None = None, dataset: Any = None,
          eval_dataset: Any = None, hooks: Sequence[Hook] = ()) -> SweepResult:
    """Train every member of ``cfg.sweep`` in one vmapped step (module docstring).

    ``hooks``: extra host hooks (:class:`~jaxspectra.train.hooks.Hook`) run by the same loop,
    after the built-in ones; the ``StepInfo.state`` they receive is the stacked state, every leaf
    with a leading member axis (member ``i`` is ``jax.tree.map(lambda x: x[i], info.state)``), so
    a research loop measures all members from one step, as in a single run.
    """
    if cfg.monitors != MonitorsSection():
        # monitors (a lax.cond under vmap runs both branches) are for single runs
        print("jaxspectra sweep: note: [monitors] is ignored by sweeps", flush=True)
        cfg = dataclasses.replace(cfg, monitors=MonitorsSection())
    members = members_of(cfg)
    validate_axes(cfg)
    s = setup(cfg, model=model, dataset=dataset, eval_dataset=eval_dataset, monitors=False)
    s = dataclasses.replace(s, ckpt_dir=None)
    M = len(members)
    eng = Engine(s, members=M, swept_hparams=_swept_hparams(cfg, members))
    try:
        state = init_members(s, eng, members)
    except jax.errors.ConcretizationTypeError as e:
        raise ConfigError(
            f"a swept hyper-parameter ({sorted(_swept_hparams(cfg, members))}) is used in Python "
            f"control flow by optimizer {cfg.optim.name!r}, so it cannot be vmapped: {e}") from e
    (s.run_dir / "sweep_config.toml").write_text(dump_toml(cfg))
    seeds = [cfg.data.seed if cfg.data.seed >= 0 else m["seed"] for m in members]
    B, T, steps = cfg.data.batch_size, cfg.data.seq_len, cfg.train.steps
    history = History()
    evaluate = Evaluate(lambda p: eng.evaluate(p, seeds), cfg.train.eval_every, history)
    slow: list[Hook] = [evaluate] if cfg.data.eval_batches > 0 else []
    tput = Throughput(M * B * T, run_flops_per_token(s), None, slow)
    nonfinite = StopOnNonFinite(True)
    extra = list(hooks)
    hooks: list[Hook] = [tput, history, nonfinite, *slow,
                         MetricsLog(s.run_dir, cfg.train.log_every, steps, members=M)]
    if cfg.train.progress:
        hooks.append(Progress(f"jaxspectra sweep: {M} members x {steps} steps of "
                              f"{cfg.model.name!r} in one vmapped step; {s.n_devices} device(s); "
                              f"outputs in {s.run_dir}", steps, desc=f"sweep x{M}"))
    hooks += [*extra, StopOnSignal()]
    state, control = run_loop(eng, state, 0, steps,
                              lambda t: eng.batch(s.dataset, seeds, t), hooks)
    losses = np.full((steps, M), np.nan)
    for st, v in history.train:
        losses[st] = np.asarray(v)
    first = nonfinite.first or [None] * M
    out_members = []
    for i, mem in enumerate(members):
        evals = [float(np.asarray(v)[i]) for _, v in history.evals]
        rec = {"member": i, **mem, "final_loss": float(losses[-1, i]),
               "final_eval_loss": evals[-1] if evals else None,
               "nonfinite_step": first[i], "verdict": verdict(cfg, history, first[i], i)}
        write_json(s.run_dir / f"member_{i}" / "summary.json", rec)
        out_members.append(rec)
    summary = {"members": out_members, "n_members": M, "steps": steps,
               "stopped": control.stop_reason or "completed",
               "tokens_per_s_all_members": tput.steady(), "config": to_dict(cfg)}
    write_json(s.run_dir / "sweep_summary.json", summary)
    return SweepResult(out_members, summary, losses, state, s.run_dir)


def init_members(s: Setup, eng: Engine, members: list[dict[str, Any]]) -> TrainState:
    """Each member initialised exactly as its single run would be (its own hyper-parameters in
    its optimiser state), stacked on axis 0."""
    states = []
    T = s.cfg.data.seq_len
    for mem in members:
        mo = {k[len("model.options."):]: v for k, v in mem.items() if k.startswith("model.")}
        one = eng
        if mo:
            mc = dataclasses.replace(s.cfg.model, options={**s.cfg.model.options, **mo})
            sub = dataclasses.replace(s, module=model_from_section(mc, T)[0])
            one = Engine(sub, members=eng.members, swept_hparams=eng.swept)
        st = one.init_state(mem["seed"])
        hp = {**hyperparams(s.cfg.optim), **{k: v for k, v in mem.items() if k != "seed"}}
        states.append(st._replace(opt_state=eng.opt.set_hyperparams(st.opt_state, hp)))
    return eng.stack(states)


def _default(cfg: Config, key: str) -> float:
    if key == "optim.learning_rate":
        return cfg.optim.learning_rate
    if key == "optim.weight_decay" and cfg.optim.weight_decay >= 0:
        return cfg.optim.weight_decay
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
