"""Paper 001 Fig. 3 (WikiText-2): the criteria (positive and negative controls on synthetic
curves), the generated smoke data, the [CLS] attention ratio against a NumPy float64 ground truth,
and the smoke preset end to end (slow)."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

from jaxspectra.experiments import _wikitext_criteria as crit
from jaxspectra.experiments import softmax_wikitext as wt

STEPS = 200
T = np.arange(STEPS)[:, None]


def _curves(l0: float, floor: float, rate: float, seeds: int = 3, noise: float = 0.01,
            seed: int = 0) -> np.ndarray:
    """[steps, seeds] losses ℓ_t = ℓ₀ (floor + (1 − floor) e^{−rate t}) with mini-batch noise."""
    rng = np.random.default_rng(seed)
    base = l0 * (floor + (1 - floor) * np.exp(-rate * T))
    return base * (1 + noise * rng.standard_normal((STEPS, seeds)))


def _final_ratio(losses: np.ndarray, tail: int = 20) -> float:
    return float(np.mean(crit.final_loss(losses, tail) / losses[0]))


# ---- final loss and the learning-rate choice -------------------------------------------------


def test_final_loss_is_tail_mean_and_inf_for_nonfinite():
    x = np.array([[4.0, 1.0], [2.0, np.nan], [1.0, 1.0]])
    f = crit.final_loss(x, 2)
    assert f[0] == pytest.approx(1.5) and f[1] == np.inf
    with pytest.raises(ValueError, match="tail"):
        crit.final_loss(x, 4)
    with pytest.raises(ValueError, match="steps, members"):
        crit.final_loss(np.ones(3), 1)


def test_best_lr_picks_lowest_seed_mean_and_never_a_diverged_one():
    lrs = [0.1, 0.5, 0.1, 0.5]
    best, means = crit.best_lr([1.0, 0.2, 1.2, np.inf], lrs)
    assert best == 0.1 and means[0.1] == pytest.approx(1.1) and means[0.5] == np.inf
    best, _ = crit.best_lr([1.0, 0.2, 1.2, 0.3], lrs)
    assert best == 0.5
    with pytest.raises(ValueError, match="agree"):
        crit.best_lr([1.0], [0.1, 0.2])


# ---- NTP: SGD stagnates, Adam converges ------------------------------------------------------


def test_ntp_criterion_passes_when_sgd_plateaus_and_adam_converges():
    sgd = _final_ratio(_curves(10.3, 0.7, 0.05))  # unigram plateau at 0.7 ℓ₀
    adam = _final_ratio(_curves(10.3, 0.3, 0.02, seed=1))
    ok, d = crit.sgd_stagnates_adam_converges(sgd, adam, 0.8)
    assert ok and d["fraction"] < 0.5


def test_ntp_criterion_fails_when_both_converge_alike_negative_control():
    sgd = _final_ratio(_curves(10.3, 0.3, 0.02))
    adam = _final_ratio(_curves(10.3, 0.3, 0.02, seed=1))
    ok, d = crit.sgd_stagnates_adam_converges(sgd, adam, 0.8)
    assert not ok and 0.9 < d["fraction"] < 1.1
    # Adam only slightly ahead (0.9 of SGD) is not "SGD stagnates": fails at 0.8
    assert not crit.sgd_stagnates_adam_converges(0.5, 0.45, 0.8)[0]
    assert not crit.sgd_stagnates_adam_converges(math.nan, 0.1, 0.8)[0]
    with pytest.raises(ValueError, match="max_fraction"):
        crit.sgd_stagnates_adam_converges(1.0, 0.1, 0.0)


# ---- BoW: no Adam advantage ------------------------------------------------------------------


def test_bow_criterion_passes_for_equal_curves_and_for_sgd_ahead():
    sgd = _final_ratio(_curves(0.69, 0.05, 0.05))
    adam = _final_ratio(_curves(0.69, 0.05, 0.05, seed=1))
    assert crit.no_adam_advantage(sgd, adam, 0.1)[0]
    assert crit.no_adam_advantage(0.05, 0.6, 0.1)[0]  # SGD far ahead: Adam does not outperform


def test_bow_criterion_fails_when_adam_is_clearly_better_negative_control():
    sgd = _final_ratio(_curves(0.69, 0.8, 0.05))  # SGD stuck near ℓ₀
    adam = _final_ratio(_curves(0.69, 0.05, 0.05, seed=1))
    ok, d = crit.no_adam_advantage(sgd, adam, 0.1)
    assert not ok and d["sgd_minus_adam"] > 0.5
    assert not crit.no_adam_advantage(math.inf, 0.1, 0.1)[0]


# ---- R(NTP) ≫ R(BoW) ------------------------------------------------------------------------


def test_R_criterion_positive_and_negative_controls():
    good = {"next_token": {"sgd": 4.0, "adam": 6.0}, "bag_of_words": {"sgd": 0.5, "adam": 1.0}}
    ok, d = crit.sparser_on_ntp(good, 1.0)
    assert ok and d["gap_decades"] == {"adam": 5.0, "sgd": 3.5}
    # one optimiser's gap below a decade (R ratio 10^0.5 ≈ 3): fail
    bad = {"next_token": {"sgd": 4.0, "adam": 1.5}, "bag_of_words": {"sgd": 0.5, "adam": 1.0}}
    assert not crit.sparser_on_ntp(bad, 1.0)[0]
    # reversed (BoW sparser) and non-finite: fail
    assert not crit.sparser_on_ntp({"next_token": {"a": 0.1}, "bag_of_words": {"a": 3.0}}, 1)[0]
    assert not crit.sparser_on_ntp({"next_token": {"a": math.nan},
                                    "bag_of_words": {"a": 0.0}}, 1)[0]
    with pytest.raises(ValueError, match="both tasks"):
        crit.sparser_on_ntp({"next_token": {"a": 1.0}}, 1.0)


# ---- data, config, the attention ratio -------------------------------------------------------


def test_generated_stream_puts_the_in_about_half_the_chunks():
    L, n = 16, 4000
    s = wt.generated_stream(n * L, 48, L, seed=3)
    assert s.min() >= 1 and s.max() < 48
    frac = (s.reshape(n, L) == wt.THE_ID).any(axis=1).mean()
    # P = 1/2 by construction; 5 binomial standard deviations at n = 4000
    assert abs(frac - 0.5) < 5 * math.sqrt(0.25 / n)
    np.testing.assert_array_equal(s, wt.generated_stream(n * L, 48, L, seed=3))


def test_resolve_names_bad_overrides():
    with pytest.raises(ValueError, match="unknown override"):
        wt.resolve("smoke", {"stepz": "3"})
    with pytest.raises(ValueError, match="comma-separated"):
        wt.resolve("smoke", {"sgd_lrs": "0.1;0.2"})
    with pytest.raises(ValueError, match="tail"):
        wt.resolve("smoke", {"tail": "1000"})
    c = wt.resolve("smoke", {"steps": "12", "tail": "4"})
    assert c["steps"] == 12 and wt.lrs(c, "adam_lrs")[0] == 1e-4


def test_sweep_config_is_the_papers_optimisers():
    import pathlib

    c = wt.resolve("full", None)
    sgd = wt.sweep_config(c, "next_token", "sgd", pathlib.Path("/tmp/x"))
    adam = wt.sweep_config(c, "bag_of_words", "adam", pathlib.Path("/tmp/x"))
    assert sgd.optim.name == "sgd" and sgd.optim.options == {"momentum": 0.9}
    assert adam.optim.name == "adam_l2" and adam.optim.weight_decay == 1e-4
    assert sgd.optim.clip_norm == 0.0 and sgd.data.batch_size == 32
    assert sgd.data.seq_len == 63 and adam.data.seq_len == 64
    assert sgd.sweep.axes["optim.learning_rate"] == [0.01, 0.05, 0.1, 0.5]
    assert adam.sweep.axes["optim.learning_rate"] == [1e-4, 5e-4, 1e-3, 5e-3]
    assert sgd.sweep.seeds == [0, 1, 2] and sgd.train.steps == 2000


@pytest.mark.slow  # ~10 s of CPU: compiles the vmapped encoder and the attention statistics
def test_cls_attention_ratio_matches_numpy_float64():
    """log10 of the [CLS] row's max/min, averaged (in R, not log R) over heads, examples and
    layers — App. K's order — against the model's own probabilities in float64."""
    c = wt.resolve("smoke", {"n_layers": "2", "d_model": "16"})
    module, _ = wt.model(c, 5)
    tok = jax.random.randint(jax.random.PRNGKey(1), (3, 16), 0, c["vocab"])
    params = module.init(jax.random.PRNGKey(0), tok)
    # sharpen attention so R spans decades (init R is ~1)
    params = jax.tree.map(lambda x: x * 6.0, params)
    got = wt._cls_log10_r(module)(jax.tree.map(lambda x: x[None], params), tok[None])[0]
    _, aux = module.apply(params, tok, return_attention=True)
    p = np.stack([np.asarray(a, np.float64)[:, :, 0, :] for a in aux["attention"]])  # [L,B,H,S]
    r = p.max(-1) / p.min(-1)
    want = np.log10(r.mean(axis=2).mean(axis=1).mean(axis=0))
    assert want > 1.0  # the check is not trivial
    # float32 softmax: each log-probability carries ~|logit| × eps relative error
    assert float(got) == pytest.approx(want, abs=1e-3 * max(1.0, want))


def test_protocol():
    from jaxspectra import cli

    assert wt.DESCRIPTION and {"smoke", "full"} <= set(wt.PRESETS) and callable(wt.run)
    assert "softmax_wikitext" in cli._experiment_modules()
    for preset in wt.PRESETS:
        wt.resolve(preset, {})
    assert wt.PRESETS["full"]["data"] == "wikitext2" and wt.PRESETS["full"]["steps"] <= 2000
    assert wt.PRESETS["smoke"]["data"] == "generated"


@pytest.mark.slow
def test_smoke_end_to_end(tmp_path, monkeypatch):
    monkeypatch.delenv("JAXSPECTRA_DATA_DIR", raising=False)  # the smoke needs no ../shared
    res = wt.run("smoke", tmp_path, {"steps": "20", "every": "10", "tail": "5"})
    assert (tmp_path / "report.md").exists() and (tmp_path / "softmax_wikitext_fig3.png").exists()
    text = (tmp_path / "report.md").read_text()
    assert "GENERATED" in text and "say little" in text
    assert [ch["claim"][:3] for ch in res["checks"]] == ["§4:"] * 3
    assert all(isinstance(ch["ok"], bool) for ch in res["checks"])
    assert res["passed"] == all(ch["ok"] for ch in res["checks"])
    for key, s in res["summary"].items():
        assert math.isfinite(s["final_ratio"]) and math.isfinite(s["final_log10_R"]), key
    assert res["summary"]["next_token/adam"]["best_lr"] in (1e-4, 5e-4, 1e-3, 5e-3)
    assert res["summary"]["bag_of_words/sgd"]["best_lr"] in (0.01, 0.05, 0.1, 0.5)
