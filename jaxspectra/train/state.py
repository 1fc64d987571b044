"""Train state, model construction and the optimiser chain built from the config.

The optimiser is ``clip_by_global_norm → build_optimizer(name, …) → per-leaf LR multipliers``
with the learning rate ``peak · unit_schedule(step)`` (``unit_schedule = build_schedule(name, 1.0,
…)``). Every hyper-parameter that a sweep may vary is passed in as an array (``hp``) rather than
baked in, so a single run and one member of a vmapped sweep trace the same computation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxspectra.train.config import ConfigError, ModelSection, OptimSection


class TrainState(NamedTuple):
    """Everything a step reads and writes (checkpointed as is).

    ``rng`` is the run's base key (raw ``uint32[2]``); step ``t`` uses ``fold_in(rng, t)``.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array


def build_model(cfg: ModelSection, seq_len: int | None = None) -> tuple[Any, Any]:
    """``get_model(name, dtype=…, param_dtype=…, **options)`` with clear errors (no compute)."""
    from jaxspectra import models

    get_model = getattr(models, "get_model", None)
    if get_model is None:  # pragma: no cover - the models package always provides it
        raise ConfigError("jaxspectra.models.get_model is not available")
    kwargs = dict(cfg.options)
    kwargs.setdefault("dtype", cfg.dtype)
    kwargs.setdefault("param_dtype", cfg.param_dtype)
    try:
        module, mcfg = get_model(cfg.name, **kwargs)
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"[model] name={cfg.name!r} options={cfg.options}: {e}") from e
    d = _first_attr(mcfg, ("d_model", "n_embd", "dim", "width"))
    h = _first_attr(mcfg, ("n_heads", "n_head", "num_heads", "heads"))
    if isinstance(d, int) and isinstance(h, int) and h and d % h:
        raise ConfigError(
            f"[model] {cfg.name!r}: d_model={d} is not divisible by n_heads={h}; "
            "change model.options.d_model or model.options.n_heads"
        )
    max_len = _first_attr(mcfg, ("max_seq_len", "block_size", "max_len", "seq_len"))
    if seq_len is not None and isinstance(max_len, int) and seq_len > max_len:
        raise ConfigError(
            f"data.seq_len={seq_len} exceeds the model's maximum sequence length {max_len}; "
            "lower data.seq_len or raise the model's"
        )
    return module, mcfg


def _first_attr(obj: Any, names: tuple[str, ...]) -> Any:
    for n in names:
        v = obj.get(n) if isinstance(obj, dict) else getattr(obj, n, None)
        if v is not None:
            return v
    return None


def model_dims(mcfg: Any) -> dict[str, int | None]:
    """``n_layers``, ``d_model`` of a model config (``None`` when it does not say)."""
    return {
        "n_layers": _first_attr(mcfg, ("n_layers", "n_layer", "num_layers", "depth")),
        "d_model": _first_attr(mcfg, ("d_model", "n_embd", "dim", "width")),
    }


def init_params(module: Any, rng: jax.Array, seq_len: int) -> Any:
    """``module.init`` on a dummy token batch; returns the full variables dict."""
    return module.init(rng, jnp.zeros((1, seq_len), jnp.int32))


def lr_multiplier_tree(mcfg: Any, params: Any) -> Any | None:
    """The model's per-leaf LR multipliers (μP), or ``None`` if it defines none / all are 1."""
    from jaxspectra import models

    fn = getattr(models, "lr_multipliers", None)
    if fn is None:
        return None
    mults = fn(mcfg, params)
    if mults is None or all(float(m) == 1.0 for m in jax.tree.leaves(mults)):
        return None
    return mults


def scale_by_tree(mults: Any) -> optax.GradientTransformation:
    """Multiply each update leaf by a fixed per-leaf factor."""

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        del params
        return jax.tree.map(lambda u, m: u * jnp.asarray(m, u.dtype), updates, mults), state

    return optax.GradientTransformation(init, update)


# hyper-parameters that may be swept (besides seeds and keys under optim.options / model.options)
SWEEPABLE_OPTIM = ("optim.learning_rate", "optim.weight_decay", "optim.clip_norm")


def base_hparams(cfg: OptimSection) -> dict[str, float]:
    """The hp dict of a single run (what a sweep varies per member)."""
    hp = {"optim.learning_rate": cfg.learning_rate}
    if cfg.weight_decay >= 0:
        hp["optim.weight_decay"] = cfg.weight_decay
    return hp


def _own_schedule(name: str) -> bool:
    """Paper 004's presets build their own schedules from a float AdamW peak."""
    from jaxspectra.optim import registry

    return name in getattr(registry, "PAPER004", ())


def make_tx_factory(
    cfg: OptimSection, total_steps: int, params: Any, mults: Any | None,
    spectral_every: int = 0,
) -> tuple[Callable[[dict], optax.GradientTransformation], Callable[[dict, Any], Any]]:
    """``(make_tx(hp), lr_fn(hp, step))``; ``hp`` maps dotted names to (traced) scalars.

    Chain: ``clip_by_global_norm → build_optimizer(name) → LR multipliers → MSign
    [→ spectral_monitor(spectral_every)]``. MSign comes after the optimiser (it restores the norm
    of ``W + u``, so it must see the final update); the optional spectral monitor (an identity)
    is the very last link, so its ΔΣ is between W_t and the W_{t+1} actually applied. Paper 004's
    presets get ``learning_rate`` as a float (they build their own schedules; ``optim.schedule``
    is ignored and the logged ``lr`` is that peak).
    """
    from jaxspectra.optim import registry
    from jaxspectra.optim.schedules import build_schedule

    own = _own_schedule(cfg.name)
    manifold = cfg.name in getattr(registry, "MANIFOLD_PRESETS", ())
    use_mults = mults is not None and cfg.lr_multipliers
    if use_mults and manifold:
        raise ConfigError(
            f"optimizer {cfg.name!r} keeps weights on a manifold; per-leaf LR multipliers would "
            "push them off it. Set optim.lr_multipliers=false (or use a non-μP model)."
        )
    unit = None if own else build_schedule(cfg.schedule, 1.0, total_steps, cfg.warmup_steps,
                                           **cfg.schedule_options)

    def lr_fn(hp, step):
        if own:
            return jnp.asarray(cfg.learning_rate, jnp.float32)
        return hp["optim.learning_rate"] * unit(step)

    def make_tx(hp):
        opts = dict(cfg.options)
        for k, v in hp.items():
            if k.startswith("optim.options."):
                opts[k[len("optim.options.") :]] = v
        if "optim.weight_decay" in hp:
            opts["weight_decay"] = hp["optim.weight_decay"]
        lr = cfg.learning_rate if own else (lambda step: lr_fn(hp, step))
        msign = dict(cfg.msign) or None
        tx = registry.build_optimizer(
            cfg.name, lr, params=params, total_steps=total_steps,
            msign=None if use_mults else msign, **opts,
        )
        clip = hp.get("optim.clip_norm", cfg.clip_norm)
        parts = []
        if "optim.clip_norm" in hp or cfg.clip_norm > 0:
            parts.append(optax.clip_by_global_norm(clip))
        parts.append(tx)
        if use_mults:
            parts.append(scale_by_tree(mults))
            if msign:
                from jaxspectra.optim.msign import msign as msign_tx

                parts.append(msign_tx(**msign))
        if spectral_every > 0:
            from jaxspectra.monitors.spectral import spectral_monitor

            parts.append(spectral_monitor(spectral_every))
        return optax.chain(*parts)

    return make_tx, lr_fn


def validate_optimizer(
    cfg: OptimSection, total_steps: int, abstract_params: Any, mults: Any | None = None
) -> None:
    """Build the optimiser on abstract params (no compute) to surface bad names/options early."""
    try:
        make_tx, _ = make_tx_factory(cfg, total_steps, abstract_params, mults)
        tx = make_tx({k: jnp.float32(v) for k, v in base_hparams(cfg).items()})
        jax.eval_shape(tx.init, abstract_params)
    except ConfigError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"[optim] name={cfg.name!r} options={cfg.options}: {e}") from e


def hp_arrays(hp: dict[str, float], dtype=jnp.float32) -> dict[str, jax.Array]:
    return {k: jnp.asarray(v, dtype) for k, v in hp.items()}


def replace(obj, **kw):
    return dataclasses.replace(obj, **kw)
