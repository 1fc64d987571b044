"""Learning-rate schedules built from optax pieces (``optax.join_schedules`` and friends).

Every schedule here maps an integer step ``t`` to a learning rate and starts with a linear warm-up
from 0 to ``peak`` over ``warmup_steps`` steps (``lr(t) = peak·t/warmup_steps`` for
``t < warmup_steps``; no warm-up when ``warmup_steps == 0``). ``total_steps`` is the step at which
the decay ends (the schedule is held at its final value after it).

==============  ============================================================================
name            after the warm-up
==============  ============================================================================
``constant``    ``peak``
``cosine``      cosine from ``peak`` to ``floor`` at ``total_steps`` (paper 004, nanoGPT:
                ``floor + ½(peak − floor)(1 + cos(π·(t − w)/(T − w)))``)
``linear``      linear from ``peak`` to ``final_fraction·peak`` at ``total_steps`` (paper 003,
                App. A.2: 2000 warm-up steps, then linear decay to 1/10)
``step``        ``peak``, multiplied by ``factor`` (0.1) at each of ``milestones`` (fractions of
                ``total_steps``, default 50 % and 75 %)
``wsd``         warm-up–stable–decay: ``peak`` until the last ``decay_fraction·T`` steps, then
                linear to ``floor`` at ``total_steps``
==============  ============================================================================

Note: nanoGPT's warm-up is ``peak·(t + 1)/(w + 1)``; optax's (used here) is ``peak·t/w``, so the
learning rate is exactly 0 at step 0.

Example:
  >>> sched = build_schedule("cosine", peak=6e-4, total_steps=50_000, warmup_steps=1000,
  ...                        floor=6e-5)
  >>> round(float(sched(500)), 10), round(float(sched(1000)), 10), round(float(sched(50_000)), 10)
  (0.0003, 0.0006, 6e-05)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import optax

Schedule = Callable[[Any], Any]

SCHEDULES = ("constant", "cosine", "linear", "step", "wsd")


def _check_common(peak: float, total_steps: int, warmup_steps: int) -> None:
    if isinstance(peak, bool) or not isinstance(peak, (int, float)) or not math.isfinite(peak):
        raise ValueError(f"schedule: peak must be a finite number, got {peak!r}")
    if peak <= 0:
        raise ValueError(f"schedule: peak must be > 0, got {peak!r}")
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps <= 0:
        raise ValueError(f"schedule: total_steps must be a positive int, got {total_steps!r}")
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(
            f"schedule: warmup_steps must be a non-negative int, got {warmup_steps!r}"
        )
    if warmup_steps >= total_steps:
        raise ValueError(
            f"schedule: warmup_steps ({warmup_steps}) must be < total_steps ({total_steps})"
        )


def _check_fraction(name: str, value: float, *, allow_zero: bool, allow_one: bool = True) -> None:
    lo_ok = value >= 0 if allow_zero else value > 0
    hi_ok = value <= 1 if allow_one else value < 1
    if not (isinstance(value, (int, float)) and math.isfinite(value) and lo_ok and hi_ok):
        lo, hi = ("[0" if allow_zero else "(0"), ("1]" if allow_one else "1)")
        raise ValueError(f"schedule: {name} must be in {lo}, {hi}, got {value!r}")


def _with_warmup(peak: float, warmup_steps: int, after: Schedule) -> Schedule:
    """Linear warm-up 0 → peak over ``warmup_steps``, then ``after(t − warmup_steps)``."""
    if warmup_steps == 0:
        return after
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak, warmup_steps), after], [warmup_steps]
    )


def constant(peak: float, total_steps: int, warmup_steps: int = 0) -> Schedule:
    """Linear warm-up, then ``peak`` forever."""
    _check_common(peak, total_steps, warmup_steps)
    return _with_warmup(peak, warmup_steps, optax.constant_schedule(peak))


def warmup_cosine(
    peak: float, total_steps: int, warmup_steps: int = 0, floor: float = 0.0
) -> Schedule:
    """Linear warm-up, then cosine decay from ``peak`` to ``floor`` at ``total_steps``.

    This is paper 004's (nanoGPT's) schedule: peak 6e-4, ``floor`` 6e-5, 1000 warm-up steps,
    ``total_steps`` 50 000 (``optax.warmup_cosine_decay_schedule`` with ``decay_steps =
    total_steps``).
    """
    _check_common(peak, total_steps, warmup_steps)
    if not (math.isfinite(floor) and 0 <= floor <= peak):
        raise ValueError(f"schedule 'cosine': floor must be in [0, peak={peak}], got {floor!r}")
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=peak,
        warmup_steps=warmup_steps,
        decay_steps=total_steps,
        end_value=floor,
    )


def warmup_linear(
    peak: float, total_steps: int, warmup_steps: int = 0, final_fraction: float = 0.1
) -> Schedule:
    """Linear warm-up, then linear decay to ``final_fraction·peak`` at ``total_steps``.

    Paper 003, App. A.2: "we warm up for 2000 steps and linearly decay to 1/10 learning rate".
    """
    _check_common(peak, total_steps, warmup_steps)
    _check_fraction("final_fraction", final_fraction, allow_zero=True)
    decay = optax.linear_schedule(peak, final_fraction * peak, total_steps - warmup_steps)
    return _with_warmup(peak, warmup_steps, decay)


def step_decay(
    peak: float,
    total_steps: int,
    warmup_steps: int = 0,
    factor: float = 0.1,
    milestones: Sequence[float] = (0.5, 0.75),
) -> Schedule:
    """Linear warm-up, then ``peak`` multiplied by ``factor`` at each milestone.

    Milestones are fractions of ``total_steps`` (step ``round(f·T)`` is the first one at the lower
    value); each must fall after the warm-up.
    """
    _check_common(peak, total_steps, warmup_steps)
    _check_fraction("factor", factor, allow_zero=False, allow_one=False)
    fracs = list(milestones)
    if not fracs or any(not (0 < f < 1) for f in fracs) or sorted(fracs) != fracs:
        raise ValueError(
            f"schedule 'step': milestones must be increasing fractions in (0, 1), got {milestones!r}"
        )
    bounds = [round(f * total_steps) for f in fracs]
    if bounds[0] <= warmup_steps or len(set(bounds)) != len(bounds):
        raise ValueError(
            f"schedule 'step': milestones {fracs} give steps {bounds}; they must be distinct and "
            f"after the warm-up ({warmup_steps} steps)"
        )
    after = optax.piecewise_constant_schedule(
        peak, {b - warmup_steps: factor for b in bounds}
    )
    return _with_warmup(peak, warmup_steps, after)


def wsd(
    peak: float,
    total_steps: int,
    warmup_steps: int = 0,
    decay_fraction: float = 0.1,
    floor: float = 0.0,
) -> Schedule:
    """Warm-up–stable–decay: warm-up, ``peak``, then linear decay to ``floor`` over the last
    ``decay_fraction·total_steps`` steps (``round``-ed; at least one step)."""
    _check_common(peak, total_steps, warmup_steps)
    _check_fraction("decay_fraction", decay_fraction, allow_zero=False)
    if not (math.isfinite(floor) and 0 <= floor <= peak):
        raise ValueError(f"schedule 'wsd': floor must be in [0, peak={peak}], got {floor!r}")
    decay_steps = max(1, round(decay_fraction * total_steps))
    stable_end = total_steps - decay_steps
    if stable_end < warmup_steps:
        raise ValueError(
            f"schedule 'wsd': warm-up ({warmup_steps}) and decay ({decay_steps}) steps overlap "
            f"within total_steps={total_steps}"
        )
    stable_and_decay = optax.join_schedules(
        [optax.constant_schedule(peak), optax.linear_schedule(peak, floor, decay_steps)],
        [stable_end - warmup_steps],
    )
    return _with_warmup(peak, warmup_steps, stable_and_decay)


_BUILDERS: dict[str, Callable[..., Schedule]] = {
    "constant": constant,
    "cosine": warmup_cosine,
    "linear": warmup_linear,
    "step": step_decay,
    "wsd": wsd,
}
_OPTIONS: dict[str, tuple[str, ...]] = {
    "constant": (),
    "cosine": ("floor",),
    "linear": ("final_fraction",),
    "step": ("factor", "milestones"),
    "wsd": ("decay_fraction", "floor"),
}


def build_schedule(
    name: str, peak: float, total_steps: int, warmup_steps: int = 0, **kw: Any
) -> Schedule:
    """The schedule ``name`` (one of :data:`SCHEDULES`) with its options ``kw``.

    Raises:
      ValueError: unknown ``name``, an option the schedule does not take, or a bad value.
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown schedule {name!r}; known: {list(SCHEDULES)}")
    unknown = set(kw) - set(_OPTIONS[name])
    if unknown:
        raise ValueError(
            f"schedule {name!r} got unknown option(s) {sorted(unknown)}; "
            f"it takes {list(_OPTIONS[name]) or 'none'}"
        )
    return _BUILDERS[name](peak, total_steps, warmup_steps, **kw)
