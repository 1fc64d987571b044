"""Schedules against hand-computed closed forms at their key steps."""

import doctest
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspectra.optim import schedules
from jaxspectra.optim.schedules import build_schedule


def _val(s, t):
    return float(s(jnp.asarray(t)))


def test_cosine_closed_form_paper004():
    peak, floor, w, T = 6e-4, 6e-5, 1000, 50_000
    s = build_schedule("cosine", peak, T, w, floor=floor)

    def ref(t):
        if t < w:
            return peak * t / w
        r = min(1.0, (t - w) / (T - w))
        return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * r))

    for t in (0, 1, 500, 999, 1000, 1001, 10_000, 25_500, 49_999, 50_000, 60_000):
        assert _val(s, t) == pytest.approx(ref(t), rel=1e-5, abs=1e-12), t
    # Midpoint of the decay is the mean of peak and floor.
    assert _val(s, (w + T) // 2) == pytest.approx((peak + floor) / 2, rel=1e-5)


def test_linear_paper003():
    # Paper 003 App. A.2: warm up 2000 steps, decay linearly to 1/10.
    peak, w, T = 1e-3, 2000, 10_000
    s = build_schedule("linear", peak, T, w)
    assert _val(s, 0) == 0.0
    assert _val(s, 1000) == pytest.approx(peak / 2)
    assert _val(s, 2000) == pytest.approx(peak)
    assert _val(s, 6000) == pytest.approx(peak * (1 - 0.9 * 0.5))
    assert _val(s, 10_000) == pytest.approx(0.1 * peak)
    assert _val(s, 20_000) == pytest.approx(0.1 * peak)


def test_step_decay_boundaries():
    peak, T = 0.1, 1000
    s = build_schedule("step", peak, T, 100)
    assert _val(s, 50) == pytest.approx(0.05)
    assert _val(s, 100) == pytest.approx(peak)
    assert _val(s, 499) == pytest.approx(peak)
    assert _val(s, 500) == pytest.approx(peak * 0.1)
    assert _val(s, 749) == pytest.approx(peak * 0.1)
    assert _val(s, 750) == pytest.approx(peak * 0.01)
    assert _val(s, 999) == pytest.approx(peak * 0.01)
    # No warm-up.
    s0 = build_schedule("step", peak, T)
    assert _val(s0, 0) == pytest.approx(peak)
    assert _val(s0, 500) == pytest.approx(peak * 0.1)


def test_wsd():
    peak, T, w = 1.0, 1000, 100
    s = build_schedule("wsd", peak, T, w, decay_fraction=0.2, floor=0.1)
    assert _val(s, 50) == pytest.approx(0.5)
    assert _val(s, 100) == pytest.approx(1.0)
    assert _val(s, 800) == pytest.approx(1.0)
    assert _val(s, 900) == pytest.approx(1.0 - 0.9 * 0.5)
    assert _val(s, 1000) == pytest.approx(0.1)
    assert _val(s, 1200) == pytest.approx(0.1)


def test_constant_and_jit_vectorised():
    s = build_schedule("constant", 0.3, 100, 10)
    ts = jnp.arange(0, 30)
    got = np.asarray(jax.jit(jax.vmap(s))(ts))
    ref = np.where(np.arange(30) < 10, 0.3 * np.arange(30) / 10, 0.3)
    np.testing.assert_allclose(got, ref, rtol=1e-6)


@pytest.mark.parametrize(
    "args,kw,match",
    [
        (("nope", 1.0, 10), {}, "unknown schedule 'nope'; known"),
        (("cosine", 1.0, 10), {"final_fraction": 0.1}, "unknown option"),
        (("cosine", -1.0, 10), {}, "peak must be > 0"),
        (("cosine", float("nan"), 10), {}, "finite"),
        (("cosine", 1.0, 0), {}, "total_steps"),
        (("cosine", 1.0, 10, 10), {}, "warmup_steps"),
        (("cosine", 1.0, 10, -1), {}, "warmup_steps"),
        (("cosine", 1.0, 10), {"floor": 2.0}, "floor"),
        (("linear", 1.0, 10), {"final_fraction": 1.5}, "final_fraction"),
        (("step", 1.0, 10), {"milestones": (0.8, 0.5)}, "milestones"),
        (("step", 1.0, 10, 6), {}, "after the warm-up"),
        (("step", 1.0, 10), {"factor": 0.0}, "factor"),
        (("wsd", 1.0, 10, 8), {"decay_fraction": 0.5}, "overlap"),
    ],
)
def test_bad_input(args, kw, match):
    with pytest.raises(ValueError, match=match):
        build_schedule(*args, **kw)


def test_docstring_examples():
    assert doctest.testmod(schedules, raise_on_error=True).failed == 0
