"""Optimisers by name: what the trainer calls.

=======================  =====================================================================
name                     optimiser (options, defaults)
=======================  =====================================================================
``adamw``                ``optax.adamw`` (``b1`` 0.9, ``b2`` 0.999, ``eps`` 1e-8,
                         ``weight_decay`` 1e-4 on ≥ 2-D leaves; ``decay_1d=True`` decays all)
``adam_l2``              ``torch.optim.Adam`` with coupled L2 (``b1``, ``b2``, ``eps``,
                         ``weight_decay`` 0) — paper 001's WikiText-2 baseline
``sgd``                  ``torch.optim.SGD`` (``momentum`` 0.9, ``nesterov`` False,
                         ``weight_decay`` 0)
``muon``                 ``optax.contrib.muon`` on the attention and MLP projections (its
                         options: ``ns_coeffs``, ``ns_steps``, ``beta``, ``weight_decay``, ...),
                         AdamW on the rest (``adam_learning_rate`` = ``learning_rate``,
                         ``adam_b1`` 0.9, ``adam_b2`` 0.999, ``adam_weight_decay`` 0; optax's
                         defaults)
``paper_muon``           paper 004's Muon (:func:`jaxspectra.optim.muon.paper_muon`:
                         ``momentum`` 0.95, ``weight_decay`` 0.1, ``sign_method``) on attention
                         and MLP, AdamW on the rest (``adam_learning_rate`` = ``learning_rate``,
                         ``adam_b1`` 0.9, ``adam_b2`` 0.95, ``adam_weight_decay`` 0.1)
``unconstrained_muon``,  paper 004's assignments (:func:`jaxspectra.optim.module_wise.paper004`;
``all_stiefel``,         ``learning_rate`` is the AdamW peak, ``None`` for the paper's 6e-4;
``all_dgram``,           ``total_steps`` required; its options: ``warmup_steps``, ``muon_peak``,
``hetero``,              ``clip_norm``, ``sign_method``, manifold-Muon overrides, ...)
``hetero_inv``
=======================  =====================================================================

``msign={"period": 100, "targets": "all_2d", "method": ..., "adaptive": ...}`` appends
:func:`jaxspectra.optim.msign.msign` as the LAST element of the chain (it needs the final update
to restore ``W + u``). :func:`prepare_params` puts the weights managed by a manifold preset on
their manifolds (identity for the others): call it once on freshly initialised params.

Example:
  >>> import jax.numpy as jnp
  >>> tx = build_optimizer("sgd", 0.1, momentum=0.0)
  >>> params = {"w": jnp.ones(2)}
  >>> u, _ = tx.update({"w": jnp.ones(2)}, tx.init(params), params)
  >>> [round(float(x), 6) for x in u["w"]]
  [-0.1, -0.1]
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import optax

from jaxspectra.optim import classic, module_wise
from jaxspectra.optim import msign as msign_mod
from jaxspectra.optim.muon import optax_muon, paper_muon

PAPER004 = tuple(module_wise.ASSIGNMENTS)
OPTIMIZERS = ("adamw", "adam_l2", "sgd", "muon", "paper_muon", *PAPER004)
MANIFOLD_PRESETS = tuple(
    name for name, (a, m) in module_wise.ASSIGNMENTS.items() if a is not None or m is not None
)

_ADAM_REST = ("adam_learning_rate", "adam_b1", "adam_b2", "adam_weight_decay")
MSIGN_KEYS = ("period", "targets", "method", "adaptive")


def _check_name(name: str) -> None:
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; known: {list(OPTIMIZERS)}")


def _check_options(name: str, options: dict[str, Any], known: set[str]) -> None:
    unknown = set(options) - known
    if unknown:
        raise ValueError(
            f"optimizer {name!r} got unknown option(s) {sorted(unknown)}; "
            f"known: {sorted(known) or 'none'}"
        )


def _kwarg_names(fn: Callable[..., Any], drop: tuple[str, ...] = ()) -> set[str]:
    params = inspect.signature(fn).parameters.values()
    return {
        p.name
        for p in params
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in drop
    }


def _check_lr(name: str, learning_rate: Any) -> None:
    if learning_rate is None:
        raise ValueError(f"optimizer {name!r} needs a learning_rate (a float or a schedule)")


def _adamw(lr: Any, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-4, decay_1d=False):
    if decay_1d:
        return optax.adamw(lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
    return classic.adamw_2d(lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)


def _rest(learning_rate: Any, options: dict[str, Any], b2: float, wd: float):
    return classic.adamw_2d(
        options.pop("adam_learning_rate", learning_rate),
        b1=options.pop("adam_b1", 0.9),
        b2=options.pop("adam_b2", b2),
        weight_decay=options.pop("adam_weight_decay", wd),
    )


def _build_base(name: str, learning_rate: Any, total_steps: int | None, options: dict) -> Any:
    if name == "adamw":
        _check_options(name, options, _kwarg_names(_adamw, ("lr",)))
        _check_lr(name, learning_rate)
        return _adamw(learning_rate, **options)
    if name == "adam_l2":
        _check_options(name, options, _kwarg_names(classic.adam_l2, ("learning_rate", "mask")))
        _check_lr(name, learning_rate)
        return classic.adam_l2(learning_rate, **options)
    if name == "sgd":
        known = _kwarg_names(classic.sgd_momentum, ("learning_rate", "mask"))
        _check_options(name, options, known)
        _check_lr(name, learning_rate)
        return classic.sgd_momentum(learning_rate, **options)
    if name == "muon":
        known = _kwarg_names(
            optax.contrib.muon,
            ("learning_rate", "muon_weight_dimension_numbers", "adam_learning_rate")
            + tuple(k for k in _kwarg_names(optax.contrib.muon) if k.startswith("adam_")),
        )
        _check_options(name, options, known | set(_ADAM_REST))
        _check_lr(name, learning_rate)
        rest = _rest(learning_rate, options, b2=0.999, wd=0.0)
        return module_wise.module_wise(
            attention=optax_muon(learning_rate, **options),
            mlp=optax_muon(learning_rate, **options),
            rest=rest,
        )
    if name == "paper_muon":
        known = {"momentum", "weight_decay", "sign_method", "weight_decay_mask"}
        _check_options(name, options, known | set(_ADAM_REST))
        _check_lr(name, learning_rate)
        rest = _rest(learning_rate, options, b2=0.95, wd=0.1)
        return module_wise.module_wise(
            attention=paper_muon(learning_rate, **options),
            mlp=paper_muon(learning_rate, **options),
            rest=rest,
        )
    # Paper 004's assignments.
    if total_steps is None:
        raise ValueError(
            f"optimizer {name!r} (paper 004's schedule) needs total_steps (the paper: 50_000)"
        )
    if learning_rate is not None and (
        callable(learning_rate) or not isinstance(learning_rate, (int, float))
    ):
        raise ValueError(
            f"optimizer {name!r} builds paper 004's own schedules; pass learning_rate as the "
            f"AdamW peak (a float; None for 6e-4), not {type(learning_rate).__name__}"
        )
    if learning_rate is not None:
        options.setdefault("adamw_peak", float(learning_rate))
    known = _kwarg_names(module_wise.paper004, ("assignment", "total_steps"))
    if name != "unconstrained_muon":
        from jaxspectra.optim import manifold_muon as mm

        known |= _kwarg_names(mm.manifold_muon, ("learning_rate", "manifold"))
    _check_options(name, options, known)
    return module_wise.paper004(name, total_steps, **options)


def _build_msign(msign: dict[str, Any], params: Any = None) -> optax.GradientTransformation:
    if not isinstance(msign, dict):
        raise ValueError(
            f"msign must be a dict of msign options (e.g. {{'period': 100}}), got {msign!r}"
        )

    known = _kwarg_names(msign_mod.msign) | set(MSIGN_KEYS)
    unknown = set(msign) - known
    if unknown:
        raise ValueError(f"unknown msign option(s) {sorted(unknown)}; known: {sorted(known)}")
    if params is not None and hasattr(msign_mod, "msign_targets"):
        # Surface a target matching no parameter (or a 1-D target) now, naming the paths.
        msign_mod.msign_targets(params, msign.get("targets", "all_2d"))
    return msign_mod.msign(**msign)


def build_optimizer(
    name: str,
    learning_rate: optax.ScalarOrSchedule | None,
    *,
    params: Any = None,
    total_steps: int | None = None,
    msign: dict[str, Any] | None = None,
    **options: Any,
) -> optax.GradientTransformation:
    """The optimiser ``name`` (one of :data:`OPTIMIZERS`) as an ``optax.GradientTransformation``.

    Args:
      name: optimiser name (see the module docstring for each one's options and defaults).
      learning_rate: a float or an optax schedule; for paper 004's assignments the AdamW peak
        (a float, ``None`` for 6e-4) since they build their own schedules.
      params: optional params (arrays or ``jax.ShapeDtypeStruct``): if given, checked now
        (module-wise optimisers need attention/MLP parameters named as in
        :mod:`jaxspectra.groups`; MSign's targets must match ≥ 2-D parameters) instead of at
        ``init``.
      total_steps: length of training (paper 004's assignments need it for their schedule).
      msign: optional options of :func:`jaxspectra.optim.msign.msign` (``period``, ``targets``,
        ``method``, ``adaptive``, ...); the MSign transformation is chained LAST.
      **options: the optimiser's options.

    Raises:
      ValueError: an unknown name or option (listing the known ones), a missing learning rate or
        ``total_steps``, or (with ``params``) no parameter in a module group.
    """
    _check_name(name)
    tx = _build_base(name, learning_rate, total_steps, dict(options))
    if params is not None and name in ("muon", "paper_muon", *PAPER004):
        module_wise.check_groups_present(params, module_wise.MODULE_GROUPS)
    if msign is not None:
        tx = optax.chain(tx, _build_msign(msign, params))
    return tx


def prepare_params(name: str, params: Any, **options: Any) -> Any:
    """Put the weights managed by a manifold preset on their manifolds (paper 004: once, at init).

    Identity (the same object) for every other optimiser. ``options`` are the ones given to
    :func:`build_optimizer` (``sign_method``, ``retraction``, ``qkv`` are used; others ignored).
    """
    _check_name(name)
    if name not in MANIFOLD_PRESETS:
        return params
    return module_wise.paper004_init(name, params, **options)

