"""Vectorised sweeps: 4 vmapped members == the 4 runs made one by one; bad sweep axes."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from _train_standins import ToyLM, base_config

from jaxspectra.train import loop
from jaxspectra.train.config import ConfigError, from_dict
from jaxspectra.train.loop import setup, train
from jaxspectra.train.sweep import init_members, member_config, members_of, sweep, validate_axes

STEPS = 12


def _cfg(run_dir, **axes):
    return from_dict(base_config(
        run_dir, steps=STEPS, run={"num_devices": 1},
        train={"eval_every": 6},
        sweep={"seeds": [0, 1], "axes": axes or {"optim.learning_rate": [1e-2, 3e-2]}},
    ))


def test_sweep_equals_single_runs(tmp_path):
    cfg = _cfg(tmp_path / "sweep")
    ds, ev = ToyLM(), ToyLM(offset=10**6)
    res = sweep(cfg, dataset=ds, eval_dataset=ev)
    members = members_of(cfg)
    assert [(m["seed"], m["optim.learning_rate"]) for m in members] == [
        (0, 1e-2), (0, 3e-2), (1, 1e-2), (1, 3e-2)]
    assert res.losses.shape == (STEPS, 4)
    for i, m in enumerate(members):
        c = member_config(cfg, m)
        c = dataclasses.replace(c, run=dataclasses.replace(c.run, dir=str(tmp_path / f"m{i}")))
        one = train(c, dataset=ds, eval_dataset=ev)
        l1 = np.array([x for _, x in one.losses])
        np.testing.assert_allclose(res.losses[:, i], l1, rtol=0, atol=1e-6)
        np.testing.assert_allclose(res.members[i]["final_eval_loss"],
                                   one.summary["final_eval_loss"], atol=1e-6)
        for a, b in zip(jax.tree.leaves(res.state.params), jax.tree.leaves(one.state.params)):
            np.testing.assert_allclose(np.asarray(a[i]), np.asarray(b), rtol=0, atol=1e-6)
        assert res.members[i]["verdict"]["unstable"] == one.summary["verdict"]["unstable"]
        assert (tmp_path / "sweep" / f"member_{i}" / "metrics.jsonl").exists()
    # members really differ (seed and LR both matter)
    assert len({round(float(x), 6) for x in res.losses[-1]}) == 4


@pytest.fixture
def no_compute(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("compute started before validation failed")

    monkeypatch.setattr(loop, "_Engine", boom)
    import jaxspectra.train.sweep as sw

    monkeypatch.setattr(sw, "_Engine", boom)


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
    s = setup(cfg, dataset=ToyLM(), eval_dataset=ToyLM(), write_config=False)
    state = init_members(s, loop._Engine(s), members)
    emb = state.params["params"]["embed"]["embedding"]
    assert emb.shape[0] == 2
    np.testing.assert_allclose(np.std(np.asarray(emb[0])), 0.02, rtol=0.2)
    np.testing.assert_allclose(np.std(np.asarray(emb[1])), 0.2, rtol=0.2)
