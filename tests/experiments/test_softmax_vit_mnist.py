"""Paper 001 Fig. 2b tiny-ViT reproduction: the attention ratio, the teacher construction, the
criteria (each with a negative control) and the smoke end to end."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspectra.experiments import _vit_criteria as crit
from jaxspectra.experiments import _vit_teacher as vt
from jaxspectra.experiments import softmax_vit_mnist as exp
from jaxspectra.models import get_model

EPS32 = float(np.finfo(np.float32).eps)


def _tiny(n_layers: int = 2):
    model, _ = get_model("vit-tiny", n_layers=n_layers, n_heads=2, d_model=16, d_mlp=32,
                         patch_size=7, init_std=0.125)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(24, 28, 28)), jnp.float32)
    return model, model.init(jax.random.key(3), x[:1]), x


def test_cls_log10_ratio_matches_numpy_float64():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 2, 5, 5)) * 3
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    got = np.asarray(vt.cls_log10_ratio(jnp.asarray(p, jnp.float32)))
    want = (logits[:, :, 0].max(-1) - logits[:, :, 0].min(-1)) / math.log(10)
    # float32 probabilities: relative error of each ~eps, log10 of a ratio adds 2 eps/ln10
    np.testing.assert_allclose(got, want, atol=8 * EPS32 / math.log(10) + 1e-6)


def test_scaling_query_key_multiplies_the_log_ratio_by_c_squared():
    model, params, x = _tiny(n_layers=1)
    base = np.asarray(vt.layer_log10_ratios(model, params, x))[0]
    c = 2.5
    scaled = vt.scale_query_key(params, 0, c)
    got = np.asarray(vt.layer_log10_ratios(model, scaled, x))[0]
    np.testing.assert_allclose(got, c * c * base, rtol=1e-4)
    # the values (last third of the fused kernel) are untouched, the queries/keys scaled
    k0 = np.asarray(params["params"]["block_0"]["attn"]["qkv"]["kernel"])
    k1 = np.asarray(scaled["params"]["block_0"]["attn"]["qkv"]["kernel"])
    d = k0.shape[1] // 3
    np.testing.assert_array_equal(k1[:, 2 * d:], k0[:, 2 * d:])
    np.testing.assert_allclose(k1[:, :2 * d], c * k0[:, :2 * d], rtol=1e-6)


@pytest.mark.parametrize("target", [1.30103, 7.0])
def test_calibrated_teacher_hits_target_per_layer(target):
    model, params, x = _tiny()
    calib, check = x[:12], x[12:]
    tp, scales = vt.calibrate_teacher(model, params, calib, target, 2)
    r = np.asarray(vt.layer_log10_ratios(model, tp, calib))
    for layer in range(2):  # exact on the calibration images (up to float32 round-off)
        assert abs(np.median(r[layer]) - target) <= 1e-3 * target, (layer, np.median(r[layer]))
    assert all(s > 0 for s in scales)
    # on images not used to calibrate: within the reproduction's band
    held = vt.median_log10_ratio(vt.layer_log10_ratios(model, tp, check))
    assert crit.teacher_r_in_band(held, target)[0], held


def test_calibration_rejects_bad_target():
    model, params, x = _tiny(1)
    with pytest.raises(ValueError, match="target_log10_r"):
        vt.calibrate_teacher(model, params, x, -1.0, 1)


def test_teacher_r_band_positive_and_negative():
    assert crit.teacher_r_in_band(6.8, 7.0)[0]
    assert not crit.teacher_r_in_band(5.0, 7.0)[0]  # two decades short: fail
    assert not crit.teacher_r_in_band(float("nan"), 7.0)[0]
    with pytest.raises(ValueError, match="band"):
        crit.teacher_r_in_band(7.0, 7.0, band=0)


def test_best_eta_picks_lowest_mean_and_treats_nan_as_diverged():
    fr = np.array([[0.9, 0.2, np.nan], [0.8, 0.3, 0.01]])
    assert crit.best_eta(fr, [0.001, 0.01, 0.1]) == (1, 0.01)
    with pytest.raises(ValueError, match="etas"):
        crit.best_eta(fr, [0.1, 0.2])


def test_slower_on_sparse_positive_and_negative_controls():
    ok, det = crit.slower_on_sparse([0.9, 0.8, 0.95], [0.1, 0.2, 0.15])
    assert ok and det["ratio"] > 2
    # negative controls: no gap; reversed; overlap of seeds despite a large mean ratio
    assert not crit.slower_on_sparse([0.2, 0.21, 0.19], [0.2, 0.2, 0.2])[0]
    assert not crit.slower_on_sparse([0.1, 0.2, 0.15], [0.9, 0.8, 0.95])[0]
    assert not crit.slower_on_sparse([0.9, 0.9, 0.05], [0.01, 0.01, 0.1])[0]
    assert not crit.slower_on_sparse([0.9], [np.nan])[0]  # a diverged control never passes


def test_learns_positive_and_negative():
    assert crit.learns([0.1, 0.2, 0.05])[0]
    assert not crit.learns([0.9, 0.95, 0.7])[0]
    assert not crit.learns([0.1, np.inf, 0.1])[0]


def test_resolve_config_errors_name_the_fix():
    with pytest.raises(ValueError, match="unknown override"):
        exp.resolve_config("smoke", {"stepz": "3"})
    with pytest.raises(ValueError, match="held_out"):
        exp.resolve_config("smoke", {"held_out": "5000"})
    cfg = exp.resolve_config("smoke", {"etas": "0.1,0.2", "steps": "7"})
    assert cfg["etas"] == (0.1, 0.2) and cfg["steps"] == 7


def test_protocol_and_discovery():
    from jaxspectra import cli

    assert exp.DESCRIPTION and {"smoke", "full"} <= set(exp.PRESETS) and callable(exp.run)
    assert "softmax_vit_mnist" in cli._experiment_modules()
    for preset in exp.PRESETS:
        exp.resolve_config(preset, {})


def test_full_preset_is_the_papers_shape():
    f = exp.PRESETS["full"]
    assert (f["n_layers"], f["n_heads"], f["d_model"], f["d_mlp"], f["patch_size"]) == \
        (6, 4, 64, 256, 4)
    assert f["etas"] == (0.001, 0.01, 0.1) and f["seeds"] == 3 and f["data"] == "mnist"


@pytest.mark.slow
def test_smoke_end_to_end(tmp_path, monkeypatch):
    monkeypatch.delenv("JAXSPECTRA_DATA_DIR", raising=False)  # the smoke needs no data directory
    res = exp.run("smoke", tmp_path, {})  # the preset itself, as `jaxspectra reproduce` runs it
    assert res["report"].exists() and "softmax_vit_mnist" in res["report"].read_text()
    for p in res["figures"].values():
        assert p.exists() and p.stat().st_size > 0
    s = res["summary"]
    assert [c["ok"] for c in res["checks"][:2]] == [True, True]  # teachers' R in band
    for n in exp.TEACHERS:
        fr = np.asarray(s["final_rel"][n])
        assert fr.shape == (3, 3) and np.all(np.isfinite(fr))
    assert isinstance(res["passed"], bool)
    # the saved parameters round-trip into the model (App. J.3's tables read them)
    cfg = exp.resolve_config("smoke", {})
    model, _ = exp.make_model(cfg, cfg["student_init_std"])
    like = model.init(jax.random.key(0), jnp.zeros((1, 28, 28), jnp.float32))
    teacher, students, grid = exp.load_params(tmp_path / "params_sparse.npz", like)
    assert grid.shape == (9, 2)
    x = jnp.asarray(exp.generated_images(4, seed=3))
    s0 = jax.tree.map(lambda a: a[0], students)
    assert np.all(np.isfinite(np.asarray(model.apply(s0, x))))
    assert jax.tree.structure(teacher) == jax.tree.structure(like)
