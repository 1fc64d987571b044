"""experiments.sosd_pretrain: each criterion on synthetic curves built to pass and to fail
(negative controls), the ΔΣ hook against NumPy SVDs, and the smoke preset end to end."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest

from jaxspectra.experiments import sosd_pretrain as S

T = 2000
EVERY = 25
DSTEPS = np.arange(EVERY, T, EVERY)
END = (1 - S.WSD_DECAY) * T  # the stable window of a WSD run


def _delta(floor_ratio: float, seed: int = 0, tail: bool = False) -> np.ndarray:
    """ΔΣ: a rise to 1e-2 at step 200, a decay to 1e-2 × floor_ratio with time scale 60 steps,
    ±20 % log-normal noise; ``tail`` adds a further ×0.1 decay after END (a schedule's tail)."""
    rng = np.random.default_rng(seed)
    t = DSTEPS.astype(float)
    rise = np.minimum(t / 200, 1.0)
    decay = floor_ratio + (1 - floor_ratio) * np.exp(-np.maximum(t - 200, 0) / 60)
    d = 1e-2 * rise * decay * np.exp(0.2 * rng.standard_normal(len(t)))
    if tail:
        d = np.where(t >= END, d * 0.1, d)
    return d


def test_onset_found_below_peak_over_30_and_ignores_the_tail():
    d = _delta(1e-2)
    onset, peak, floor = S.sosd_onset_peak(DSTEPS, d, END, T)
    assert peak == pytest.approx(1e-2, rel=0.3)
    assert floor == pytest.approx(peak / 30)
    # noiseless crossing of peak/30: 1e-2·(0.01 + 0.99 e^{-(t-200)/60}) = peak/30 → t ≈ 410
    assert onset is not None and 325 <= onset <= 500
    # what happens after the stable window (a decay) does not move the onset
    assert S.sosd_onset_peak(DSTEPS, _delta(1e-2, tail=True), END, T)[0] == onset


def test_onset_negative_control_floor_too_high():
    """ΔΣ settles at peak/5: never 30× below its peak → no onset (criterion fails)."""
    onset, _, _ = S.sosd_onset_peak(DSTEPS, _delta(0.2), END, T)
    assert onset is None
    assert not S.synchrony(onset, 400, T).passed


def test_onset_needs_enough_window_left():
    """A drop that happens only in the last MIN_WINDOW_FRAC of the stable window is no onset."""
    t = DSTEPS.astype(float)
    d = np.where(t < END - 0.05 * T, 1e-2, 1e-5)
    assert S.sosd_onset_peak(DSTEPS, d, END, T)[0] is None
    with pytest.raises(ValueError, match="log points"):
        S.sosd_onset_peak(DSTEPS[:3], d[:3], END, T)


def _loss(tau: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(T, dtype=float)
    return (2.0 + 3.5 * np.exp(-t / tau)) * np.exp(0.01 * rng.standard_normal(T))


def test_knee_matches_the_noiseless_closed_form():
    tau = 150.0
    knee = S.loss_knee(np.arange(T), _loss(tau), END, T)
    # closed form: d log L/dt = -(3.5/τ) e^{-t/τ} / (2 + 3.5 e^{-t/τ}); steepest at t = 0; knee
    # where it is 10 % of that: solve on a fine grid
    t = np.linspace(0, T, 200_001)
    e = 3.5 * np.exp(-t / tau)
    slope = (e / tau) / (2 + e)
    expect = t[np.argmax(slope < S.KNEE_FRAC * slope[0])]
    assert knee is not None and abs(knee - expect) <= 0.05 * T


def test_knee_negative_control_no_slowdown():
    """log L falling at a constant rate (no fast→slow transition) has no knee."""
    t = np.arange(T, dtype=float)
    assert S.loss_knee(t, 5.0 * np.exp(-t / 3000), END, T) is None


def test_synchrony_pass_and_fail():
    assert S.synchrony(400, 350, T).passed
    assert not S.synchrony(900, 350, T).passed  # lag 550 > 10 % of 2000
    assert not S.synchrony(None, 350, T).passed


def test_sigma_before_w():
    steps = np.arange(0, T + 1, 100)
    fast = 1 - 0.2 * np.exp(-steps / 100)  # Σ: closes 90 % of its gap by ~230
    slow = 1 - 0.9 * (1 - steps / T)  # W: linear, reaches 90 % at 0.9 T
    ts, tw = S.stabilisation_step(steps, fast), S.stabilisation_step(steps, slow)
    assert ts == 300 and tw == 1800
    assert S.sigma_before_w({"q": ts, "k": ts}, {"q": tw, "k": tw}, T).passed
    assert not S.sigma_before_w({"q": tw, "k": tw}, {"q": ts, "k": ts}, T).passed  # reversed
    assert not S.sigma_before_w({"q": None}, {"q": tw}, T).passed


def test_mlp_below_attention():
    assert S.mlp_below_attention([2e-3, 3e-3], [1e-3, 1e-3]).passed
    assert not S.mlp_below_attention([1e-3], [2e-3]).passed


def _decay_case(delta_cut: float, loss_cut: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    t = np.arange(T)
    m = T // 2
    d = np.where(DSTEPS < m, 1e-3, 1e-3 * delta_cut) * np.exp(0.2 * rng.standard_normal(
        len(DSTEPS)))
    loss = np.where(t < m, 3.0, 3.0 - loss_cut) + 0.02 * rng.standard_normal(T)
    return S.decay_response("x", DSTEPS, d, t, loss, (m - 200, m), (m + 1, m + 200))


def test_decay_response_pass_and_negative_controls():
    assert _decay_case(0.1, 0.05).passed
    assert not _decay_case(0.5, 0.05).passed  # ΔΣ drops only 2×
    assert not _decay_case(0.1, 0.0).passed  # ΔΣ drops, the loss does not


def test_wd_effect():
    ok = S.wd_effect([2e-4, 2.2e-4, 2.1e-4], [1e-4, 1.1e-4, 1.2e-4], [3.00, 3.01, 3.02],
                     [3.05, 3.07, 3.06])
    assert [c.passed for c in ok] == [True, True]
    bad = S.wd_effect([2e-4, 0.9e-4, 2.1e-4], [1e-4, 1.1e-4, 1.2e-4], [3.00, 3.10, 3.02],
                      [3.05, 3.01, 3.06])  # one seed reversed; loss difference within noise
    assert [c.passed for c in bad] == [False, False]


def test_muon_effect():
    ok = S.muon_effect([1e-3, 1.1e-3, 0.9e-3], [1e-4, 1.2e-4, 1e-4], [3.1, 3.12, 3.11],
                       [3.0, 3.01, 3.02])
    assert [c.passed for c in ok] == [True, True]
    bad = S.muon_effect([1e-3, 1.1e-3, 0.9e-3], [5e-4, 5e-4, 5e-4], [3.0, 3.01, 3.02],
                        [3.1, 3.12, 3.11])  # 2× only; Muon's loss higher
    assert [c.passed for c in bad] == [False, False]


def test_spectra_hook_and_delta_against_numpy_svd():
    rng = np.random.default_rng(0)
    M = 2
    w0 = rng.standard_normal((M, 6, 4)).astype(np.float32)
    w1 = w0 + 0.05 * rng.standard_normal((M, 6, 4)).astype(np.float32)

    def info(step, w):
        params = {"params": {"block_0": {"attn": {"q": {"kernel": w}}}}}
        return types.SimpleNamespace(step=step, state=types.SimpleNamespace(params=params))

    hook = S.SpectraHook(every=10)
    hook.start(info(10, w0))
    hook(info(11, w1))
    name = "spectral/attention/block_0/q"
    # float32 Gram route: σ_i error ≈ eps·σ_1²/σ_i, i.e. relative ≈ 1.2e-7·κ² ≲ 1.2e-5 for a
    # 6×4 Gaussian (κ ≲ 10): rtol 1e-4 leaves ≈ 10× margin
    for m in range(M):
        sv = np.linalg.svd(w0[m].astype(np.float64), compute_uv=False)
        np.testing.assert_allclose(hook.sv[10][name][m], sv, rtol=1e-4)
    steps, delta = S.delta_sigma_series(hook.sv)
    assert steps.tolist() == [10]
    for m in range(M):
        a = np.linalg.svd(w0[m].astype(np.float64), compute_uv=False)
        b = np.linalg.svd(w1[m].astype(np.float64), compute_uv=False)
        ref = np.linalg.norm(b / b.sum() - a / a.sum())
        # each σ̂ entry carries ≲ 1.2e-5 relative error (above) on a ΔΣ of ≈ 1e-2: ≤ 1e-3 relative
        np.testing.assert_allclose(delta[name][0, m], ref, rtol=1e-3, atol=1e-6)
    assert hook.due(20, 100) and hook.due(21, 100) and not hook.due(22, 100)


def test_resolve_errors_name_the_fix():
    with pytest.raises(ValueError, match="emergence,schedules,wd,muon"):
        S.resolve("smoke", {"parts": "emergence,typo"})
    with pytest.raises(ValueError, match="known"):
        S.resolve("smoke", {"nope": "1"})
    with pytest.raises(ValueError, match="seeds"):
        S.resolve("smoke", {"seeds": "1"})
    assert S.resolve("smoke", {"parts": "wd, muon"})["parts"] == "wd,muon"


def test_head_lr_factor_becomes_the_trainers_lr_groups(tmp_path):
    """App. D's LR_head vs LR_body split reaches the AdamW runs' optimiser (not Muon's, whose
    split is Muon body / AdamW rest); 1.0 (the default) adds nothing."""
    specs = S.run_specs(S.resolve("smoke", {}))
    off = S.train_config(S.resolve("smoke", {}), specs["A"], tmp_path)
    assert off.optim.lr_groups == {}
    c = S.resolve("smoke", {"head_lr_factor": "0.25"})
    on = S.train_config(c, specs["A"], tmp_path)
    assert on.optim.lr_groups == {"embedding": 0.25, "head": 0.25}
    assert S.train_config(c, specs["B"], tmp_path).optim.lr_groups == {}


@pytest.mark.slow
def test_smoke_end_to_end(tmp_path):
    """The smoke preset (embedded corpus, no data directory) writes a report with a verdict,
    the figures and summary.json; a second call reuses the cached runs."""
    res = S.run("smoke", tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "**Verdict:" in text and "| criterion | ours | verdict |" in text
    for part in S.PARTS:
        assert f"## {part}" in text
    assert isinstance(res["passed"], bool)
    assert all((tmp_path / f).exists() for f in map(lambda p: p.split("/")[-1], res["figures"]))
    summ = json.loads((tmp_path / "summary.json").read_text())
    assert summ["tokens_seen_per_member"] == 200 * 8 * 32
    again = S.run("smoke", tmp_path, {"parts": "wd"})
    assert "cached" in (tmp_path / "report.md").read_text()
    assert again["summary"]["checks"]["wd"] == summ["checks"]["wd"]
