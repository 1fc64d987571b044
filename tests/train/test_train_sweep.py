"""Vectorised sweeps: 4 vmapped members == the 4 runs made one by one; bad sweep axes."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from _train_standins import ToyLM, base_config

from jaxspectra.train import loop
from jaxspectra.train.config import ConfigError, from_dict
from jaxspectra.train.loop import train
from jaxspectra.train.setup import setup
from jaxspectra.train.sweep import init_members, member_config, members_of, sweep, validate_axes

STEPS = 12


def _cfg(run_dir, **axes):
    return from_dict(base_config(
        run_dir, steps=STEPS, run={"num_devices": 1},
        train={"eval_every": 6},
        sweep={"seeds": [0, 1], "axes": axes or {"optim.learning_rate": [1e-2, 3e-2]}},
    ))


EPS32 = float(np.finfo(np.float32).eps)


def _reorder_tolerance(cfg, lr_max: float) -> float:
    """How far a vmapped member may drift from its single run in float32, from the arithmetic.

    ``vmap`` may block the same reductions differently (XLA CPU builds and versions differ), so
    each gradient entry — a sum of at most ``N = B·T·d_model`` products (batch tokens × width) —
    can change by ``γ_N = N·ε`` relative to the sum of magnitudes (Higham, *Accuracy and
    Stability*, §4.2). AdamW turns a relative gradient change ρ into an update change of at most
    ``2ρ·lr`` (m and √v both move by ρ), so after ``steps`` updates the params differ by at most
    ``2·γ_N·Σ_t lr_t ≤ 2·N·ε·steps·lr_max``; the losses, 1-Lipschitz here to that order, likewise.
    """
    from jaxspectra.models import get_model

    _, mc = get_model(cfg.model.name, **cfg.model.options)
    n = cfg.data.batch_size * cfg.data.seq_len * mc.d_model
    return 2 * n * EPS32 * cfg.train.steps * lr_max


def test_sweep_equals_single_runs(tmp_path):
    cfg = _cfg(tmp_path / "sweep")
    ds, ev = ToyLM(), ToyLM(offset=10**6)
    res = sweep(cfg, dataset=ds, eval_dataset=ev)
    members = members_of(cfg)
    assert [(m["seed"], m["optim.learning_rate"]) for m in members] == [
        (0, 1e-2), (0, 3e-2), (1, 1e-2), (1, 3e-2)]
    assert res.losses.shape == (STEPS, 4)
    tol = _reorder_tolerance(cfg, max(m["optim.learning_rate"] for m in members))
    for i, m in enumerate(members):
        c = member_config(cfg, m)
        c = dataclasses.replace(c, run=dataclasses.replace(c.run, dir=str(tmp_path / f"m{i}")))
        one = train(c, dataset=ds, eval_dataset=ev)
        l1 = np.array([x for _, x in one.losses])
        np.testing.assert_allclose(res.losses[:, i], l1, rtol=0, atol=tol)
        np.testing.assert_allclose(res.members[i]["final_eval_loss"],
                                   one.summary["final_eval_loss"], atol=tol)
        for a, b in zip(jax.tree.leaves(res.state.params), jax.tree.leaves(one.state.params)):
            np.testing.assert_allclose(np.asarray(a[i]), np.asarray(b), rtol=0, atol=tol)
        assert res.members[i]["verdict"]["unstable"] == one.summary["verdict"]["unstable"]
        assert (tmp_path / "sweep" / f"member_{i}" / "metrics.jsonl").exists()
    # members really differ (seed and LR both matter), by far more than the tolerance
    last = np.sort(res.losses[-1])
    assert np.min(np.diff(last)) > 10 * tol


def test_sweep_runs_user_hooks_on_the_stacked_state(tmp_path):
    """A research loop adds a host hook to a sweep as to a single run: it sees every member's
    params on a leading axis at its cadence."""
    from jaxspectra.train.hooks import Hook

    class Norms(Hook):
        every = 4

        def __init__(self):
            self.seen = []

        def __call__(self, info):
            w = jax.tree.leaves(info.state.params)[0]
            self.seen.append((info.step, w.shape[0],
                              float(np.linalg.norm(np.asarray(w[1]) - np.asarray(w[0])))))

    cfg = _cfg(tmp_path / "sweep")
    hook = Norms()
    res = sweep(cfg, dataset=ToyLM(), eval_dataset=ToyLM(offset=10**6), hooks=[hook])
    assert [s for s, _, _ in hook.seen] == [4, 8, 12]
    assert all(m == len(res.members) == 4 for _, m, _ in hook.seen)
    assert all(d > 0 for _, _, d in hook.seen)  # members 0 and 1 (two LRs) really differ


@pytest.fixture
def no_compute(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("compute started before validation failed")

    monkeypatch.setattr(loop, "Engine", boom)
    import jaxspectra.train.sweep as sw

    monkeypatch.setattr(sw, "Engine", boom)


@pytest.mark.parametrize(
    "axes, match",
    [
        ({"model.options.d_model": [16, 32]}, r"changes parameter shapes"),
        ({"data.batch_size": [8, 16]}, r"changes array shapes"),
        ({"optim.msign.period": [10, 100]}, r"lax\.cond.*both branches"),
        ({"model.options.activation": ["gelu", "relu2"]}, r"changes the model's computation"),
        ({"train.steps": [10, 20]}, r"not sweepable"),
        ({"optim.learning_rate": ["big"]}, r"needs numbers"),
    ],
)
def test_bad_sweep_axes(tmp_path, no_compute, axes, match):
    with pytest.raises(ConfigError, match=match):
        sweep(_cfg(tmp_path / "s", **axes), dataset=ToyLM())


def test_init_scale_axis_is_allowed(tmp_path):
    """An init-only model field may be swept: each member is initialised with its own value."""
    cfg = _cfg(tmp_path / "s", **{"model.options.init_std": [0.02, 0.2]})
    validate_axes(cfg)
    members = members_of(cfg)[:2]
    s = setup(cfg, dataset=ToyLM(), eval_dataset=ToyLM())
    state = init_members(s, loop.Engine(s, members=len(members)), members)
    emb = state.params["params"]["embed"]["embedding"]
    assert emb.shape[0] == 2
    np.testing.assert_allclose(np.std(np.asarray(emb[0])), 0.02, rtol=0.2)
    np.testing.assert_allclose(np.std(np.asarray(emb[1])), 0.2, rtol=0.2)
