"""Instability criteria on synthetic loss curves, and the loop's non-finite stop."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _train_standins import PoisonLM, ToyLM, base_config

from jaxspectra.train.checkpoint import Checkpointer
from jaxspectra.train.config import InstabilitySection, from_dict
from jaxspectra.train.engine import Engine
from jaxspectra.train.instability import assess
from jaxspectra.train.loop import train
from jaxspectra.train.setup import setup

TH = InstabilitySection()
STEPS = np.arange(1, 51) * 1000  # 50 evaluations over 50k steps (paper 004's cadence)


def _converging(seed=0, noise=0.02):
    rng = np.random.default_rng(seed)
    return 3.3 + 4.0 * np.exp(-STEPS / 5000) + noise * rng.standard_normal(len(STEPS))


def _triggered(curve, **kw):
    v = assess(STEPS, curve, 50_000, TH, **kw)
    return {k for k, c in v["criteria"].items() if c["triggered"]}, v


@pytest.mark.parametrize("seed", range(5))
def test_stable_noisy_curves_are_stable(seed):
    # evaluation noise (0.02 nat) and a small bump (0.3 nat, recovered) are not instabilities
    curve = _converging(seed)
    curve[30] += 0.3
    trig, v = _triggered(curve)
    assert trig == set() and not v["unstable"]


def test_hard_spike_only_after_warmup_fraction():
    curve = _converging()
    curve[2] += 1.5  # step 3000 < 10% of 50k: early transient, ignored
    assert "hard_spike" not in _triggered(curve)[0]
    curve = _converging()
    curve[20] += 1.5  # spike at step 21000, recovers immediately
    trig, v = _triggered(curve)
    assert trig == {"hard_spike"}
    assert v["criteria"]["hard_spike"]["step"] == 21_000


def test_persistent_drift():
    curve = _converging()
    curve[35:] += np.linspace(0.0, 0.4, 15)  # slow upward drift, below spike/degrade levels
    trig, _ = _triggered(curve)
    assert "persistent_drift" in trig and "hard_spike" not in trig
    # still descending at the end (steep curve): not drift
    steep = 8.0 - 0.1 * np.arange(50)
    assert "persistent_drift" not in _triggered(steep)[0]


def test_failure_to_recover_vs_recovery():
    curve = _converging()
    curve[25:] += 0.7  # degrade by 0.7 nat and stay there
    trig, v = _triggered(curve)
    assert "failure_to_recover" in trig
    assert v["criteria"]["failure_to_recover"]["step"] == 26_000
    curve = _converging()
    curve[25:30] += 0.7  # same degradation, recovered 5 evaluations later
    assert "failure_to_recover" not in _triggered(curve)[0]


def test_early_nonfinite():
    curve = _converging()
    trig, v = _triggered(curve[:10], nonfinite_step=10_500)
    assert trig == {"early_nonfinite"} and v["unstable"]
    curve = _converging()
    curve[40] = np.nan
    trig, v = _triggered(curve)
    assert "early_nonfinite" in trig and v["criteria"]["early_nonfinite"]["step"] == 41_000


def test_thresholds_are_configurable():
    curve = _converging()
    curve[20] += 0.6
    assert "hard_spike" not in _triggered(curve)[0]
    v = assess(STEPS, curve, 50_000, InstabilitySection(spike_delta=0.5))
    assert v["criteria"]["hard_spike"]["triggered"]
    assert v["thresholds"]["spike_delta"] == 0.5


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    """Batches from step 13 on are poisoned → NaN loss at step 13: the run stops at once,
    saves nothing after it, and the checkpoint at step 10 (the last good state) restores."""
    d = base_config(tmp_path / "r", steps=40, checkpoint={"every": 5, "keep": 5},
                    data={"eval_batches": 0}, run={"num_devices": 1})
    cfg = from_dict(d)
    res = train(cfg, dataset=PoisonLM(13), eval_dataset=ToyLM(offset=99))
    s = res.summary
    assert s["stopped"] == "nonfinite"
    assert s["verdict"]["unstable"] and s["verdict"]["criteria"]["early_nonfinite"]["step"] == 13
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["stopped"] == "nonfinite"
    ck = Checkpointer(tmp_path / "r" / "checkpoints")
    assert ck.latest_step() == 10  # step 15 was never reached with finite losses
    eng = Engine(setup(cfg, dataset=ToyLM(), eval_dataset=ToyLM()))
    state, meta = ck.restore(None, eng.abstract_state)
    ck.close()
    assert meta["data_position"] == 10 and int(state.step) == 10
    import jax

    assert all(bool(np.isfinite(np.asarray(x)).all()) for x in jax.tree.leaves(state.params))
    losses = dict(res.losses)
    assert np.isfinite(losses[12]) and not np.isfinite(losses[13])


def test_train_divergence_and_initial_loss():
    """A run whose loss leaves log(V) for 1e7 is unstable even when its evaluations are flat
    (lr = 1e3): the train curve from step 0 is read; a converging one is not flagged."""
    tsteps = np.arange(0, 200)
    rising = np.concatenate([[4.16], np.full(199, 2.0e7)])
    flat_evals = [2.0e7, 2.0e7, 2.0e7, 2.0e7]
    v = assess([50, 100, 150, 200], flat_evals, 200, TH, train=(tsteps, rising))
    trig = {k for k, c in v["criteria"].items() if c["triggered"]}
    assert {"train_divergence", "failure_to_recover"} <= trig and v["unstable"]
    assert not assess([50, 100, 150, 200], flat_evals, 200, TH)["unstable"]  # evals alone
    falling = 4.16 * np.exp(-tsteps / 50.0) + 1.0
    v = assess([50, 100, 150, 200], [2.5, 1.6, 1.2, 1.1], 200, TH, train=(tsteps, falling))
    assert not v["unstable"]
    # below the threshold: a loss that only creeps 0.5 nat above its start is not "divergence"
    creep = np.full(200, 4.66)
    creep[0] = 4.16
    assert not assess([], [], 200, TH, train=(tsteps, creep))["criteria"]["train_divergence"][
        "triggered"]


def test_gradient_explosion():
    rng = np.random.default_rng(0)
    steps = np.arange(300)
    g = 1.0 + 0.3 * rng.random(300)
    g[:5] = 8.0  # a warm-up transient (< explode_after steps of history): ignored
    assert not assess([], [], 300, TH, grad_norms=(steps, g))["criteria"]["grad_explosion"][
        "triggered"]
    g[150] = 20.0  # a 15x bump: a fluctuation, not an explosion
    assert not assess([], [], 300, TH, grad_norms=(steps, g))["unstable"]
    g[200] = 500.0
    c = assess([], [], 300, TH, grad_norms=(steps, g))["criteria"]["grad_explosion"]
    assert c["triggered"] and c["step"] == 200
    g[200] = 1.0
    g[250] = np.inf
    assert assess([], [], 300, TH, grad_norms=(steps, g))["criteria"]["grad_explosion"][
        "step"] == 250
