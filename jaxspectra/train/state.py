"""Train state, the model named by ``[model]`` and the optimiser built once from ``[optim]``.

**One owner for every hyper-parameter.** The optimiser is built once, as
``optax.inject_hyperparams`` over the chain::

    clip_by_global_norm(clip_norm) → build_optimizer(name, peak_lr · lr_unit) → μP multipliers
      → MSign (the one place it joins) → spectral_monitor (optional, last)

``lr_unit`` is the schedule at peak 1 (``build_schedule(optim.schedule, 1.0, …)``), evaluated by
optax on the state's own count; ``peak_lr``, ``weight_decay``, ``clip_norm`` and swept
``optim.options.<name>`` are numeric hyper-parameters stored **in the optimiser state**, so a
single run and each member of a vmapped sweep run the same program with different state values,
and the learning rate logged is read back from the state: what the update applied.

Paper 004's presets build their own pair of schedules (AdamW and Muon-family LRs in proportion,
warm-up then cosine): the trainer hands them ``optim.warmup_steps`` and the cosine floor
(``optim.schedule_options.floor`` × peak) and rejects any other ``optim.schedule`` with a clear
error instead of ignoring it; the logged ``lr`` is their AdamW learning rate at the step.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxspectra import groups, models
from jaxspectra.optim import registry
from jaxspectra.optim.module_wise import paper004_schedules
from jaxspectra.optim.msign import msign as msign_tx
from jaxspectra.optim.schedules import build_schedule
from jaxspectra.train.config import ConfigError, ModelSection, OptimSection


class TrainState(NamedTuple):
    """Everything a step reads and writes (checkpointed as is).

    ``rng`` is the run's base key (raw ``uint32[2]``); step ``t`` uses ``fold_in(rng, t)``.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array


def model_from_section(cfg: ModelSection, seq_len: int | None = None) -> tuple[Any, Any]:
    """``models.get_model(name, dtype=…, param_dtype=…, **options)`` with clear errors."""
    kwargs = dict(cfg.options)
    kwargs.setdefault("dtype", cfg.dtype)
    kwargs.setdefault("param_dtype", cfg.param_dtype)
    try:
        module, mcfg = models.get_model(cfg.name, **kwargs)
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"[model] name={cfg.name!r} options={cfg.options}: {e}") from e
    if isinstance(mcfg, models.TransformerConfig) and mcfg.d_model % mcfg.n_heads:
        raise ConfigError(
            f"[model] {cfg.name!r}: d_model={mcfg.d_model} is not divisible by n_heads="
            f"{mcfg.n_heads}; change model.options.d_model or model.options.n_heads")
    max_len = getattr(mcfg, "max_seq_len", None) if isinstance(
        mcfg, models.GPTConfig | models.EncoderConfig) else None
    if seq_len is not None and max_len is not None and seq_len > max_len:
        raise ConfigError(
            f"data.seq_len={seq_len} exceeds the model's maximum sequence length {max_len}; "
            "lower data.seq_len or raise model.options.max_seq_len")
    return module, mcfg


def init_model_params(module: Any, rng: jax.Array, seq_len: int) -> Any:
    """``module.init`` on a dummy token batch; returns the full variables dict."""
    return module.init(rng, jnp.zeros((1, seq_len), jnp.int32))


def lr_multiplier_tree(mcfg: Any, params: Any) -> Any | None:
    """The model's per-leaf LR multipliers (μP), or ``None`` when all are 1."""
    mults = models.lr_multipliers(mcfg, params)
    if all(float(m) == 1.0 for m in jax.tree.leaves(mults)):
        return None
    return mults


def group_lr_tree(lr_groups: Mapping[str, float], params: Any) -> Any | None:
    """Per-leaf LR factors from ``optim.lr_groups`` ({group: factor}; a leaf's group is
    :func:`jaxspectra.groups.path_group`), 1.0 for groups not named; ``None`` when empty.

    Paper 002 (App. D) trains the embeddings/head at ``LR_head`` and the body at ``LR_body``;
    ``{embedding = r, head = r}`` with the body at the base LR is that split.

    Raises:
      ConfigError: an unknown group, or a factor that is not a finite number > 0.
    """
    if not lr_groups:
        return None
    unknown = sorted(set(lr_groups) - set(groups.GROUPS))
    if unknown:
        raise ConfigError(f"optim.lr_groups: unknown group(s) {unknown}; the groups are "
                          f"{list(groups.GROUPS)}")
    for g, f in lr_groups.items():
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not math.isfinite(f) \
                or f <= 0:
            raise ConfigError(f"optim.lr_groups.{g} = {f!r}: a factor must be a finite number "
                              "> 0 (leave the group out for 1.0)")
    return jax.tree.map(lambda g: float(lr_groups.get(g, 1.0)), groups.tree_groups(params))


def scale_by_tree(mults: Any) -> optax.GradientTransformation:
    """Multiply each update leaf by a fixed per-leaf factor (μP learning-rate multipliers)."""

    def update(updates, state, params=None):
        del params
        return jax.tree.map(lambda u, m: u * jnp.asarray(m, u.dtype), updates, mults), state

    return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


# hyper-parameters a sweep may vary (besides seeds, optim.options.<name> and model init fields)
SWEEPABLE_OPTIM = ("optim.learning_rate", "optim.weight_decay", "optim.clip_norm")


def is_paper004(name: str) -> bool:
    """Paper 004's presets build their own schedules from a float AdamW peak."""
    return name in registry.PAPER004


def hyperparams(cfg: OptimSection, swept: dict[str, float] | None = None) -> dict[str, float]:
    """The numeric hyper-parameters kept in the optimiser state (dotted config names)."""
    hp: dict[str, float] = {}
    if not is_paper004(cfg.name):
        hp["optim.learning_rate"] = cfg.learning_rate
    if cfg.weight_decay >= 0:
        hp["optim.weight_decay"] = cfg.weight_decay
    if cfg.clip_norm > 0:
        hp["optim.clip_norm"] = cfg.clip_norm
    hp.update(swept or {})
    return hp


def _hp_name(key: str) -> str:  # optax hyper-parameter names must be identifiers
    return key.replace(".", "__")


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """The run's optimiser: ``tx`` (built once) and ``lr(opt_state, step)``, the LR it applied."""

    tx: optax.GradientTransformation
    lr: Callable[[Any, Any], jax.Array]
    hp_keys: tuple[str, ...]

    def set_hyperparams(self, opt_state: Any, values: dict[str, Any]) -> Any:
        """``opt_state`` with the stored hyper-parameters replaced (a resume with a new LR)."""
        if not self.hp_keys:
            return opt_state
        hp = dict(opt_state.hyperparams)
        for k, v in values.items():
            if k in self.hp_keys:
                hp[_hp_name(k)] = jnp.asarray(v, hp[_hp_name(k)].dtype)
        return opt_state._replace(hyperparams=hp)


def optimizer_from_section(
    cfg: OptimSection, total_steps: int, params: Any, mults: Any | None = None,
    spectral_every: int = 0, swept: dict[str, float] | None = None,
) -> Optimizer:
    """The chain of the module docstring; ``swept`` adds numeric ``optim.options.<name>``."""
    manifold = cfg.name in registry.MANIFOLD_PRESETS
    mults = mults if cfg.lr_multipliers else None
    split = group_lr_tree(cfg.lr_groups, params)
    if split is not None:
        mults = split if mults is None else jax.tree.map(lambda a, b: float(a) * float(b),
                                                          mults, split)
    if mults is not None and manifold:
        raise ConfigError(
            f"optimizer {cfg.name!r} keeps weights on a manifold; per-leaf LR multipliers would "
            "push them off it. Set optim.lr_multipliers=false (or use a non-μP model) and leave "
            "optim.lr_groups empty.")
    hp = hyperparams(cfg, swept)
    if is_paper004(cfg.name):
        base_lr, lr_of, extra = _paper004_lr(cfg, total_steps)
    else:
        extra = {}
        unit = build_schedule(cfg.schedule, 1.0, total_steps, cfg.warmup_steps,
                              **cfg.schedule_options)
        base_lr = None

    def chain(**h: Any) -> optax.GradientTransformation:
        h = {k.replace("__", "."): v for k, v in h.items()}
        opts = {**cfg.options, **extra}
        opts.update({k[len("optim.options."):]: v for k, v in h.items()
                     if k.startswith("optim.options.")})
        if "optim.weight_decay" in h:
            opts["weight_decay"] = h["optim.weight_decay"]
        lr = base_lr if base_lr is not None else h["optim.learning_rate"] * h["lr_unit"]
        parts = [optax.clip_by_global_norm(h["optim.clip_norm"])] if "optim.clip_norm" in h \
            else []
        parts.append(registry.build_optimizer(cfg.name, lr, params=params,
                                              total_steps=total_steps, **opts))
        if mults is not None:
            parts.append(scale_by_tree(mults))
        if cfg.msign:
            parts.append(msign_tx(**cfg.msign))
        if spectral_every > 0:
            from jaxspectra.monitors.spectral import spectral_monitor

            parts.append(spectral_monitor(spectral_every))
        return optax.chain(*parts)

    inject = {_hp_name(k): float(v) for k, v in hp.items()}
    if base_lr is None:
        inject["lr_unit"] = unit
    # optax binds the factory's signature: name each hyper-parameter in it
    chain.__signature__ = inspect.Signature(
        [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY) for k in inject])
    tx = optax.inject_hyperparams(chain, hyperparam_dtype=jnp.float32)(**inject)
    if base_lr is None:
        def lr_of(opt_state, step):
            del step
            h = opt_state.hyperparams
            return h[_hp_name("optim.learning_rate")] * h["lr_unit"]
    return Optimizer(tx, lr_of, tuple(hp))


def _paper004_lr(cfg: OptimSection, total_steps: int) -> tuple[float, Callable, dict]:
    if cfg.schedule != "cosine":
        raise ConfigError(
            f"optimizer {cfg.name!r} follows paper 004's schedule (linear warm-up, then cosine "
            f"to a floor; the Muon-family LR in proportion), not optim.schedule="
            f"{cfg.schedule!r}: set optim.schedule='cosine', optim.warmup_steps and "
            "optim.schedule_options.floor (the paper: 0.1)")
    for k in ("warmup_steps", "adamw_peak", "adamw_floor"):
        if k in cfg.options:
            raise ConfigError(
                f"optim.options.{k} duplicates the trainer's own setting; use optim.warmup_steps,"
                " optim.learning_rate and optim.schedule_options.floor")
    bad = set(cfg.schedule_options) - {"floor"}
    if bad:
        raise ConfigError(f"optimizer {cfg.name!r} takes only schedule_options.floor, got "
                          f"{sorted(bad)}")
    floor = float(cfg.schedule_options.get("floor", 0.1))
    peak = float(cfg.learning_rate)
    kw = {"warmup_steps": cfg.warmup_steps, "adamw_peak": peak, "adamw_floor": floor * peak}
    lr_adamw, _ = paper004_schedules(total_steps, **kw,
                                     muon_peak=float(cfg.options.get("muon_peak", 0.02)))
    # the registry passes learning_rate on as adamw_peak; the rest rides in the options
    extra = {"warmup_steps": cfg.warmup_steps, "adamw_floor": floor * peak}
    return peak, (lambda opt_state, step: lr_adamw(step)), extra


def validate_optimizer(cfg: OptimSection, total_steps: int, abstract_params: Any,
                       mults: Any | None = None) -> None:
    """Build the optimiser on abstract params (no compute) to surface bad names/options early."""
    try:
        opt = optimizer_from_section(cfg, total_steps, abstract_params, mults)
        jax.eval_shape(opt.tx.init, abstract_params)
    except ConfigError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"[optim] name={cfg.name!r} options={cfg.options}: {e}") from e
