"""Module-wise optimiser assignment (paper 004, Table 1 and App. A, Tables 4–5).

:func:`module_wise` routes each parameter by its group (:mod:`jaxspectra.groups`) through
``optax.partition``: attention projections (``q``/``k``/``v``/``o``/``qkv``) to ``attention``, MLP
projections (``fc``/``proj``/``gate``/``up``/``down``) to ``mlp``, everything else (embeddings, head,
norms, biases and other 1-D leaves) to ``rest`` — AdamW with decay on ≥ 2-D leaves by default.

:func:`paper004` builds the five assignments of paper 004's Table 1 with the shared configuration
of its runs (``../shared/papers/README.md``):

=====================  ==================  ==================
assignment             attention           MLP
=====================  ==================  ==================
``unconstrained_muon`` Muon (wd 0.1)       Muon (wd 0.1)
``all_stiefel``        Stiefel             Stiefel
``all_dgram``          DGram               DGram
``hetero``             Stiefel             DGram
``hetero_inv``         DGram               Stiefel
=====================  ==================  ==================

* AdamW on the rest: peak 6e-4, linear warm-up over 1000 steps, cosine to 6e-5 at
  ``total_steps`` (50 000 in the paper), β = (0.9, 0.95), weight decay 0.1 on 2-D leaves and 0 on
  1-D leaves.
* Muon family on attention and MLP: lr_muon(t) = 0.02 · lr_adamw(t) / 6e-4, momentum 0.95
  (sum-form Nesterov); unconstrained Muon decays (wd 0.1, :func:`jaxspectra.optim.muon.paper_muon`),
  manifold-managed weights are not decayed
  (:func:`jaxspectra.optim.manifold_muon.paper004_manifold_muon`: K = 20, α = 0.1, early stop
  at 1e-6, Polar-Express sign, the authors' sorted DGram retraction).
* The paper's runs also clip the global gradient norm at 1.0 (``clip_norm=1.0`` here; off by
  default because the trainer usually owns clipping).

Weights managed by a manifold must start on it: :func:`paper004_init` (the authors replace each
managed weight by its retraction once before training).

Example:
  >>> import jax, jax.numpy as jnp, optax
  >>> params = {"block_0": {"attn": {"q": {"kernel": jnp.ones((4, 4))}}},
  ...           "ln_f": {"scale": jnp.ones(4)}}
  >>> tx = module_wise(attention=optax.sgd(1.0), rest=optax.sgd(0.5))
  >>> u, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
  >>> float(u["block_0"]["attn"]["q"]["kernel"][0, 0]), float(u["ln_f"]["scale"][0])
  (-1.0, -0.5)
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxspectra import groups
from jaxspectra.optim import manifold_muon as mm
from jaxspectra.optim import schedules
from jaxspectra.optim.classic import adamw_2d
from jaxspectra.optim.muon import paper_muon

MODULE_GROUPS = ("attention", "mlp")

# assignment -> (attention manifold, MLP manifold); None = unconstrained Muon.
ASSIGNMENTS: dict[str, tuple[str | None, str | None]] = {
    "unconstrained_muon": (None, None),
    "all_stiefel": ("stiefel", "stiefel"),
    "all_dgram": ("dgram", "dgram"),
    "hetero": ("stiefel", "dgram"),
    "hetero_inv": ("dgram", "stiefel"),
}

PAPER004_DEFAULTS: dict[str, Any] = dict(
    warmup_steps=1000,
    adamw_peak=6e-4,
    adamw_floor=6e-5,
    adamw_betas=(0.9, 0.95),
    adamw_weight_decay=0.1,
    muon_peak=0.02,
    momentum=0.95,
    muon_weight_decay=0.1,
)


def module_labels(params: Any, routed: tuple[str, ...] = MODULE_GROUPS) -> Any:
    """Label each leaf ``"attention"``, ``"mlp"`` (if in ``routed``) or ``"rest"``."""

    def one(path, x):
        g = groups.path_group(path, jnp.ndim(x))
        return g if g in routed else "rest"

    return jax.tree_util.tree_map_with_path(one, params)


def module_wise(
    attention: optax.GradientTransformation | None = None,
    mlp: optax.GradientTransformation | None = None,
    rest: optax.GradientTransformation | None = None,
    *,
    rest_learning_rate: optax.ScalarOrSchedule | None = None,
    strict: bool = True,
) -> optax.GradientTransformation:
    """``optax.partition`` of the parameters by module group.

    Args:
      attention: transformation for the attention projections (``None``: they go to ``rest``).
      mlp: transformation for the MLP projections (``None``: they go to ``rest``).
      rest: transformation for every other leaf; default
        :func:`jaxspectra.optim.classic.adamw_2d` at ``rest_learning_rate``.
      rest_learning_rate: learning rate (or schedule) of the default AdamW.
      strict: at ``init``, raise if ``attention``/``mlp`` is given but no parameter belongs to its
        group (a naming mismatch would otherwise silently train everything with ``rest``).

    Returns:
      An ``optax.GradientTransformation``; transformations that need ``params`` (manifold Muon,
      weight decay) receive the masked params of their group.
    """
    if rest is None:
        if rest_learning_rate is None:
            raise ValueError(
                "module_wise: pass rest=<transformation> or rest_learning_rate=<lr> for the "
                "default AdamW on embeddings, head and 1-D parameters"
            )
        rest = adamw_2d(rest_learning_rate)
    transforms = {"rest": rest}
    if attention is not None:
        transforms["attention"] = attention
    if mlp is not None:
        transforms["mlp"] = mlp
    routed = tuple(g for g in MODULE_GROUPS if g in transforms)
    inner = optax.partition(transforms, lambda p: module_labels(p, routed))

    def init_fn(params: Any) -> Any:
        if strict:
            check_groups_present(params, routed)
        return inner.init(params)

    return optax.GradientTransformation(init_fn, inner.update)


def check_groups_present(params: Any, wanted: tuple[str, ...]) -> None:
    """Raise if a group in ``wanted`` has no leaf in ``params`` (listing the paths seen)."""
    found = set(jax.tree.leaves(module_labels(params)))
    missing = [g for g in wanted if g not in found]
    if missing:
        paths = [
            groups.path_to_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]
        ]
        raise ValueError(
            f"module_wise: no parameter belongs to group(s) {missing}; parameter paths are "
            f"{paths[:12]}{' ...' if len(paths) > 12 else ''}. Name modules as in "
            "jaxspectra.groups (attention q/k/v/o/qkv, MLP fc/proj/gate/up/down), or pass "
            "strict=False"
        )


def _check_assignment(assignment: str) -> tuple[str | None, str | None]:
    if assignment not in ASSIGNMENTS:
        raise ValueError(
            f"unknown paper-004 assignment {assignment!r}; known: {list(ASSIGNMENTS)}"
        )
    return ASSIGNMENTS[assignment]


def paper004_schedules(
    total_steps: int,
    *,
    warmup_steps: int = 1000,
    adamw_peak: float = 6e-4,
    adamw_floor: float = 6e-5,
    muon_peak: float = 0.02,
) -> tuple[schedules.Schedule, schedules.Schedule]:
    """(lr_adamw, lr_muon): warm-up + cosine to the floor; lr_muon(t) = muon_peak·lr_adamw(t)/peak."""
    lr_adamw = schedules.warmup_cosine(adamw_peak, total_steps, warmup_steps, floor=adamw_floor)

    def lr_muon(step: Any) -> Any:
        return muon_peak * lr_adamw(step) / adamw_peak

    return lr_adamw, lr_muon


def paper004(
    assignment: str,
    total_steps: int,
    *,
    warmup_steps: int = 1000,
    adamw_peak: float = 6e-4,
    adamw_floor: float = 6e-5,
    adamw_betas: tuple[float, float] = (0.9, 0.95),
    adamw_weight_decay: float = 0.1,
    muon_peak: float = 0.02,
    momentum: float = 0.95,
    muon_weight_decay: float = 0.1,
    clip_norm: float | None = None,
    sign_method: str | None = None,
    strict: bool = True,
    weight_decay_groups: str | tuple[str, ...] | list[str] = MODULE_GROUPS,
    **manifold_overrides: Any,
) -> optax.GradientTransformation:
    """One of paper 004's five module-wise assignments (Table 1) with its shared settings.

    Args:
      assignment: one of :data:`ASSIGNMENTS`.
      total_steps: step at which the cosine reaches ``adamw_floor`` (paper: 50 000).
      warmup_steps, adamw_peak, adamw_floor, adamw_betas, adamw_weight_decay: the AdamW
        settings (1000, 6e-4, 6e-5, (0.9, 0.95), 0.1 on ≥ 2-D leaves).
      muon_peak, momentum: Muon-family peak LR (0.02, scaled by lr_adamw(t)/adamw_peak) and μ.
      muon_weight_decay: unconstrained Muon's decoupled decay (0.1); manifold weights get none.
      clip_norm: if set, ``optax.clip_by_global_norm`` first (the paper's runs: 1.0).
      sign_method: matrix-sign method for the Muon family, inner loop and retraction (``None``:
        the presets' — Polar Express, the authors', and an accurate polar factor for the sorted
        DGram retraction).
      strict: see :func:`module_wise`.
      weight_decay_groups: the module groups (``"attention"``, ``"mlp"``; a tuple, list or
        comma-separated string) whose manifold-managed weights receive a ``weight_decay``
        override (:func:`jaxspectra.optim.manifold_muon.manifold_muon`'s decoupled decay before
        the retraction); the other group keeps none. Default: both.
      **manifold_overrides: keyword arguments of
        :func:`jaxspectra.optim.manifold_muon.manifold_muon` replacing the
        ``paper004_manifold_muon`` preset's (``inner_steps``, ``alpha``, ``retraction``,
        ``safeguard``, ``warm_start``, ``qkv``, ...).
        ``retraction`` applies to the DGram-managed group only (Stiefel always uses the polar
        factor).
    """
    attn_m, mlp_m = _check_assignment(assignment)
    if isinstance(weight_decay_groups, str):
        weight_decay_groups = tuple(g.strip() for g in weight_decay_groups.split(",") if g.strip())
    bad = [g for g in weight_decay_groups if g not in MODULE_GROUPS]
    if bad:
        raise ValueError(
            f"paper004: unknown weight_decay_groups {bad}; expected a subset of "
            f"{list(MODULE_GROUPS)} (e.g. weight_decay_groups=('attention',))"
        )
    if len(adamw_betas) != 2:
        raise ValueError(f"adamw_betas must be a pair (b1, b2), got {adamw_betas!r}")
    if attn_m is None and manifold_overrides:
        raise ValueError(
            f"assignment 'unconstrained_muon' takes no manifold options, got "
            f"{sorted(manifold_overrides)}"
        )
    if isinstance(total_steps, int) and isinstance(warmup_steps, int) and warmup_steps >= total_steps:
        raise ValueError(
            f"paper004 {assignment!r}: warmup_steps ({warmup_steps}; the paper's 1000) must be < "
            f"total_steps ({total_steps}); pass a shorter warmup_steps for short runs"
        )
    lr_adamw, lr_muon = paper004_schedules(
        total_steps,
        warmup_steps=warmup_steps,
        adamw_peak=adamw_peak,
        adamw_floor=adamw_floor,
        muon_peak=muon_peak,
    )
    rest = adamw_2d(
        lr_adamw, b1=adamw_betas[0], b2=adamw_betas[1], weight_decay=adamw_weight_decay
    )

    def family(manifold: str | None, group: str) -> optax.GradientTransformation:
        if manifold is None:
            return paper_muon(
                lr_muon,
                momentum=momentum,
                weight_decay=muon_weight_decay,
                sign_method=sign_method or "polar_express",
            )

        kw = dict(manifold_overrides)
        if manifold != "dgram":
            kw.pop("retraction", None)  # a retraction override names DGram's; Stiefel: polar
        if group not in weight_decay_groups:
            kw.pop("weight_decay", None)
        kw.setdefault("momentum", momentum)
        if sign_method is not None:  # the inner loop's and the retraction's sign
            kw.setdefault("sign_method", sign_method)
            kw.setdefault("retraction_sign_method", sign_method)
        return mm.paper004_manifold_muon(lr_muon, manifold, **kw)

    tx = module_wise(
        attention=family(attn_m, "attention"), mlp=family(mlp_m, "mlp"), rest=rest, strict=strict
    )
    if clip_norm is not None:
        tx = optax.chain(optax.clip_by_global_norm(clip_norm), tx)
    return tx


def paper004_init(
    assignment: str,
    params: Any,
    *,
    sign_method: str | None = None,
    retraction: str | None = None,
    qkv: str = "whole",
    **unused: Any,
) -> Any:
    """Put the manifold-managed weights of ``assignment`` on their manifolds (once, at init).

    The retraction is the preset's (the authors' sorted one for DGram, the polar factor for
    Stiefel); ``retraction`` overrides DGram's; ``sign_method`` defaults to the preset's
    retraction sign (Polar Express for Stiefel, as the authors' ``msign``; the accurate polar
    factor for DGram). Measured (float32, N(0, 0.02²) GPT-2-small shapes): the default bf16
    Polar Express leaves max|WᵀW − I| at 3.6e-3 (768×768) and 1.2e-2 (fused qkv 768×2304);
    ``sign_method="accurate"`` gives 2e-7 and 9e-7; DGram Grams are diagonal to 5e-8 either way. ``unconstrained_muon`` returns ``params`` unchanged. Extra keyword arguments (the
    rest of :func:`paper004`'s options) are accepted and ignored so the same ``**options`` can be
    passed to both.
    """
    attn_m, mlp_m = _check_assignment(assignment)
    if attn_m is None:
        return params

    labels = module_labels(params)
    for group, manifold in (("attention", attn_m), ("mlp", mlp_m)):
        mask = jax.tree.map(lambda lab, g=group: lab == g, labels)
        ret = (retraction or "sorted") if manifold == "dgram" else "default"
        # The preset's retraction sign: Polar Express for Stiefel, accurate for sorted DGram.
        sign = sign_method or ("accurate" if manifold == "dgram" else mm.PAPER004_SIGN)
        params = mm.project_to_manifold(
            params, manifold, mask, retraction=ret, qkv=qkv, sign_method=sign
        )
    return params
