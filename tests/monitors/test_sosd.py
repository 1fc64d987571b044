"""Post-hoc SoSD analysis: onset/transition on curves with known answers, the run-directory
round trip through the trainer's MetricsWriter, and the plots."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jaxspectra.monitors import sosd
from jaxspectra.train.metrics import MetricsWriter

STEPS = np.arange(0, 1001, 10)


def _decay(t):
    return 1e-2 * np.exp(-t / 100.0) + 1e-4


def test_onset_closed_form():
    d = _decay(STEPS)
    onset, floor = sosd.sosd_onset(STEPS, d)
    # floor = 3 × median over t ≥ 800; crossing where 1e-2·e^{-t/100} + 1e-4 < floor
    med = np.median(_decay(STEPS[STEPS >= 800]))
    assert floor == pytest.approx(3 * med)
    cross = 100 * math.log(1e-2 / (floor - 1e-4))
    assert onset == int(math.ceil(cross / 10) * 10)
    # a spike inside the window pushes the onset past it; one after the window does not
    d2 = d.copy()
    d2[STEPS == onset + 20] = 1.0
    assert sosd.sosd_onset(STEPS, d2)[0] == onset + 30
    d3 = d.copy()
    d3[STEPS == onset + 200] = 1.0
    assert sosd.sosd_onset(STEPS, d3)[0] == onset
    # never below the floor → None; bad input is named
    assert sosd.sosd_onset(STEPS, np.linspace(1, 2, len(STEPS)), floor_mult=0.5)[0] is None
    with pytest.raises(ValueError, match="equal length"):
        sosd.sosd_onset(STEPS, d[:-1])


def test_onset_sensitivity_monotone_in_floor():
    grid = sosd.onset_sensitivity(STEPS, _decay(STEPS), floor_mults=(1.5, 3, 8),
                                  window_fracs=(0.02, 0.1))
    assert grid.shape == (3, 2)
    assert np.all(np.diff(grid[:, 0]) <= 0)  # a higher floor is reached earlier


def test_loss_transition_recovers_the_break():
    rng = np.random.default_rng(0)
    t = np.arange(0, 1000, 5)
    loss = np.where(t < 300, 6 - 0.01 * t, 3 - 0.001 * (t - 300)) + rng.normal(0, 0.01, t.size)
    assert abs(sosd.loss_transition(t, loss) - 300) <= 10


def test_init_baseline_is_already_high():
    """Why cos⟨Σ_0, Σ_T⟩ is always shown: a Gaussian init's spectrum against an unrelated
    decaying one (σ_i = i^(-1/2)) already has cosine ≈ 0.8."""
    rng = np.random.default_rng(0)
    s0 = np.linalg.svd(rng.normal(size=(256, 256)), compute_uv=False)
    c = sosd.cosine(s0, np.arange(1, 257) ** -0.5)
    assert 0.6 < c < 0.9


def test_run_dir_round_trip_and_plots(tmp_path):
    """Spectra written the way the trainer writes monitor metrics, read back, analysed, plotted."""
    rng = np.random.default_rng(1)
    w = MetricsWriter(tmp_path, tensorboard=False)
    final = np.sort(rng.uniform(0.1, 2, 16))[::-1]
    init = np.sort(rng.uniform(0.5, 1, 16))[::-1]
    names = ["spectral/attention/block_0/q", "spectral/mlp/block_0/fc"]
    for t in STEPS:
        mix = 1 - math.exp(-t / 150)
        rec = {"loss": float(3 + 3 * math.exp(-t / 150))}
        for j, n in enumerate(names):
            rec[f"{n}/sv"] = ((1 - mix) * init + mix * final * (1 + j)).astype(np.float32)
            rec[f"{n}/delta_sigma"] = float(_decay(t) * (1 + j))
        w.write(int(t), rec)
    w.close()
    spectra, delta, loss = sosd.load_run(tmp_path)
    assert sorted(spectra) == names and sorted(delta) == names
    assert loss[0][:3] == [0, 10, 20]
    res = sosd.analyse(spectra, delta, loss=loss,
                       weights={names[0]: {int(t): spectra[names[0]][int(t)] * 2
                                           for t in STEPS}})
    steps, c = res.cos_sigma[names[0]]
    assert c[-1] == pytest.approx(1.0) and res.baseline[names[0]] == pytest.approx(c[0])
    want = sosd.cosine(spectra[names[0]][0], spectra[names[0]][1000])
    assert res.baseline[names[0]] == pytest.approx(want)
    assert res.onset[names[0]] == sosd.sosd_onset(STEPS, _decay(STEPS))[0]
    assert res.onset_all is not None and res.transition is not None
    assert res.lag == res.onset_all - res.transition
    sosd.plot_cosine(res, tmp_path / "cos.png")
    sosd.plot_sd_variation(res, tmp_path / "sd.png")
    sosd.plot_onset_sensitivity(*delta_series(delta[names[0]]), tmp_path / "sens.png")
    for f in ("cos.png", "sd.png", "sens.png"):
        assert (tmp_path / f).stat().st_size > 1000
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        sosd.load_run(tmp_path / "nope")


def delta_series(d):
    s = sorted(d)
    return s, [d[k] for k in s]


def test_rotating_records_are_averaged_per_cycle():
    """Rotating-monitor records (each matrix on its own steps, every P = 30 updates, offsets
    0/10/20): the mean over matrices is taken per cycle of P, only over complete cycles, so the
    onset of the whole model exists (an intersection of steps would be empty)."""
    names = ["a", "b", "c"]
    delta = {n: {int(t): float(_decay(t) * (1 + j)) for t in range(10 * j, 1200, 30)}
             for j, n in enumerate(names)}
    del delta["c"][1190 - 1190 % 30 + 20 - 30]  # c misses one cycle: that cycle is dropped
    curves = {n: (np.array(sorted(d)), np.array([d[s] for s in sorted(d)])) for n, d in
              delta.items()}
    steps, mean = sosd.aligned_mean(curves)
    assert steps[0] == 0 and np.all(np.diff(steps) % 30 == 0)
    assert 1140 not in steps.tolist() and len(steps) == 1200 // 30 - 1
    c0 = [delta[n][min(delta[n])] for n in names]
    assert mean[0] == pytest.approx(np.mean(c0))
    spectra = {n: {s: np.ones(4) for s in d} for n, d in delta.items()}
    res = sosd.analyse(spectra, delta)
    assert res.onset_all is not None
    assert res.onset_all == sosd.sosd_onset(steps, mean)[0]
    # all matrices on the same steps: the old rule (mean at the shared steps) is unchanged
    same = {n: (np.array(STEPS), _decay(np.array(STEPS)) * (1 + j)) for j, n in enumerate(names)}
    s2, m2 = sosd.aligned_mean(same)
    np.testing.assert_array_equal(s2, STEPS)
    np.testing.assert_allclose(m2, _decay(np.array(STEPS)) * 2)
