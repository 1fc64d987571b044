"""Paper-001 synthetic experiments (experiments/softmax_fig*.py, experiments/_softmax.py).

Ground truths: the pass criteria of issue 12 on smoke-size runs (the Fig. 1 smoke preset itself,
reduced overrides for the others); the engine against independent computations — one GD step
against ``jax.grad`` of the un-batched loss, the power-iteration sharpness against ``eigvalsh`` of
``jax.hessian``, chunked scans against one scan, the linear-rate fit against an exact geometric
sequence; override parsing against its documented conversions.
"""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jaxspectra.experiments import _softmax, softmax_fig1, softmax_fig2a, softmax_fig6, softmax_fig7
from jaxspectra.precision import x64_scope
from jaxspectra.theory import prompt_attention as pa


def _small_batch(d=6, N=10, sigma_ps=(0.5,), seeds=2, attention="softmax", train_W=False):
    keys = jax.random.split(jax.random.key(3), seeds)
    return _softmax.make_batch(keys, N, d, sigma_ps, attention, train_W)


# ----------------------------------------------------------------------------- overrides


def test_overrides_are_validated_and_converted():
    cfg = _softmax.resolve_config(softmax_fig1.PRESETS, "smoke",
                                  {"dims": "8,12", "sigma_ps": "0.5", "steps": "1e3",
                                   "train_W": "true"})
    assert cfg["dims"] == (8, 12) and cfg["sigma_ps"] == (0.5,)
    assert cfg["steps"] == 1000 and isinstance(cfg["steps"], int) and cfg["train_W"] is True
    with pytest.raises(ValueError, match="unknown override 'stepz'.*known keys:.*steps"):
        _softmax.resolve_config(softmax_fig1.PRESETS, "smoke", {"stepz": "3"})
    with pytest.raises(ValueError, match="steps=.*int"):
        _softmax.resolve_config(softmax_fig1.PRESETS, "smoke", {"steps": "2.5"})
    with pytest.raises(ValueError, match="train_W.*bool"):
        _softmax.resolve_config(softmax_fig1.PRESETS, "smoke", {"train_W": "maybe"})
    with pytest.raises(ValueError, match="attention must be one of"):
        _softmax.resolve_config(softmax_fig1.PRESETS, "smoke", {"attention": "relu"})
    with pytest.raises(ValueError, match="sigma_ps must be positive"):
        _softmax.resolve_config(softmax_fig1.PRESETS, "smoke", {"sigma_ps": "0,1"})
    with pytest.raises(ValueError, match="unknown preset"):
        _softmax.resolve_config(softmax_fig1.PRESETS, "huge", {})


@pytest.mark.parametrize("mod", [softmax_fig1, softmax_fig2a, softmax_fig6, softmax_fig7])
def test_protocol(mod):
    assert mod.DESCRIPTION and {"smoke", "full"} <= set(mod.PRESETS) and callable(mod.run)
    for preset in mod.PRESETS:  # every preset field is a known, typed override
        _softmax.resolve_config(mod.PRESETS, preset, {})
        assert set(mod.PRESETS[preset]) <= set(_softmax.FIELDS)
    full = mod.PRESETS["full"]
    assert full["N"] == 100 and 20 in full["dims"]  # the paper's §4 setting


# ----------------------------------------------------------------------------- the engine


def test_gd_step_matches_jax_grad_and_chunks_match_one_scan():
    with x64_scope():
        batch = _small_batch(train_W=True)
        eta = jnp.array([0.05, 0.02])
        p1, c1 = _softmax.train(batch, eta, 6, 1, "softmax", progress=False)
        p3, c3 = _softmax.train(batch, eta, 6, 3, "softmax", progress=False)
        np.testing.assert_allclose(c1, c3, rtol=1e-12)
        for k in p1:
            np.testing.assert_allclose(p1[k], p3[k], rtol=1e-12, atol=1e-14)
        # first step by hand, un-batched
        b = 1
        prm = {k: v[b] for k, v in batch["student"].items()}
        X, y = batch["X"][b], batch["y"][b]
        g = jax.grad(lambda q: pa.loss(q, X, y))(prm)
        one, c = _softmax.train(jax.tree.map(lambda a: a[b:b + 1], batch), eta[b:b + 1], 1, 1,
                                "softmax", progress=False)
        for k in prm:
            np.testing.assert_allclose(one[k][0], prm[k] - eta[b] * g[k], rtol=1e-12, atol=1e-15)
        assert c.shape == (1, 2) and c[0, 0] == pytest.approx(float(pa.loss(prm, X, y)))
        assert c1.shape == (2, 7)


def test_step_size_is_one_over_sharpness_at_teacher_and_start():
    attention = "softmax"
    with x64_scope():
        batch = _small_batch(d=4, N=6)
        eta = np.asarray(_softmax.step_sizes(batch, attention, 200, jax.random.key(0)))
        for b in range(2):
            X, y = batch["X"][b], batch["y"][b]
            lams = []
            for point in ("teacher", "student"):
                flat, unr = ravel_pytree({k: v[b] for k, v in batch[point].items()})
                H = jax.hessian(lambda th, u=unr, X=X, y=y: pa.loss(u(th), X, y, attention))(flat)
                lams.append(np.max(np.abs(np.linalg.eigvalsh(np.asarray(H)))))
            assert eta[b] == pytest.approx(1.0 / (1.02 * max(lams)), rel=1e-2)
            assert eta[b] <= 1.0 / max(lams)  # η ≤ 1/λ_max(∇²L)


def test_linear_rate_fit_on_exact_geometric_sequence():
    rho = 0.97
    rel = rho ** np.arange(400.0)
    slope, r2, n = _softmax.fit_linear_rate(rel, fit_floor=1e-300)
    assert 10**slope == pytest.approx(rho, rel=1e-12) and r2 == pytest.approx(1.0) and n == 400
    slope, _, n = _softmax.fit_linear_rate(rel, fit_floor=1e-3)  # stops at the floor
    assert n == int(np.ceil(math.log(1e-3) / math.log(rho))) + 1
    _, r2, _ = _softmax.fit_linear_rate(np.r_[rho ** np.arange(50.0), np.full(350, rho**49)], 0)
    assert r2 < 0.9  # a stall is not linear convergence


def test_monotone_criterion():
    mk = lambda sp, R, L: {"sigma_p": sp, "teacher_median_log10_R": R, "final_rel_loss": L}
    ok, rows = _softmax.monotone_in_R([mk(1, 9, 0.2), mk(0.1, 1, 1e-5), mk(0.1, 1.2, 1e-13)], 1e-12)
    assert ok and [r["sigma_p"] for r in rows] == [0.1, 1]
    assert [r["converged"] for r in rows] == [0.5, 0.0]
    ok, _ = _softmax.monotone_in_R([mk(1, 9, 1e-6), mk(0.1, 1, 1e-3)], 1e-12)
    assert not ok
    ok, _ = _softmax.monotone_in_R([mk(1, 9, 1e-20), mk(0.1, 1, 1e-15)], 1e-12)  # both at floor
    assert ok
    end = [dict(r, final_median_log10_R=-r["teacher_median_log10_R"])
           for r in (mk(1, 9, 0.2), mk(0.1, 1, 1e-5))]
    assert not _softmax.monotone_in_R(end, 1e-12, "final_median_log10_R")[0]


# ----------------------------------------------------------------------------- smoke runs


def _check_outputs(res, out, name):
    assert res["report"].exists() and (out / "curves.csv").exists()
    assert (out / f"{name}_loss.png").stat().st_size > 1000
    runs = json.loads((out / "runs.json").read_text())["runs"]
    assert len(runs) == len(res["runs"])
    text = res["report"].read_text()
    assert ("PASSED" in text) == res["passed"]
    return text


@pytest.mark.slow
def test_fig1_smoke_passes(tmp_path):
    """The README's main job, at its preset: under-param. monotone in R, over-param. linear."""
    res = softmax_fig1.run("smoke", tmp_path, {})
    text = _check_outputs(res, tmp_path, "softmax_fig1")
    assert res["passed"], res["checks"]
    under = [r for r in res["runs"] if r["regime"] == "under"]
    over = [r for r in res["runs"] if r["regime"] == "over"]
    assert under and over
    # large teacher scale ⇒ sparser attention (R from the logits, median over examples)
    by_sp = {sp: np.median([r["teacher_median_log10_R"] for r in under if r["sigma_p"] == sp])
             for sp in (0.1, 1.0)}
    assert by_sp[1.0] > by_sp[0.1] + 5
    assert all(10 ** r["fit_slope_log10_per_step"] < 1 for r in over)
    for r in under:  # Corollary 1's rate is consistent with the reported κ, η and N
        assert r["cor1_rho"] == pytest.approx(1 - r["eta"] * r["lam_min_Hp_teacher"] / r["N"])
        assert r["eta_times_lam_max_end"] < 2
    assert "κ(H_p) teacher" in text and "Thm 2 bound" in text


@pytest.mark.slow
def test_fig2a_linear_attention_converges(tmp_path):
    res = softmax_fig2a.run("smoke", tmp_path, {"dims": "20", "sigma_ps": "1", "steps": "25000",
                                                 "over_dims": "32", "over_steps": "2500"})
    _check_outputs(res, tmp_path, "softmax_fig2a")
    assert res["passed"], res["checks"]
    assert max(r["final_rel_loss"] for r in res["runs"]) <= 1e-7
    # the same teachers as Fig. 1: identical keys give identical data up to the labels
    with x64_scope():
        k = jax.random.fold_in(jax.random.fold_in(jax.random.key(0), 100), 20)
        ks = jax.random.split(k, 1)
        soft = _softmax.make_batch(ks, 100, 20, (1.0,), "softmax", False)
        lin = _softmax.make_batch(ks, 100, 20, (1.0,), "linear", False)
    np.testing.assert_array_equal(soft["X"], lin["X"])
    np.testing.assert_array_equal(soft["teacher"]["p"], lin["teacher"]["p"])


@pytest.mark.slow
def test_fig7_reduced_monotone_in_R(tmp_path):
    res = softmax_fig7.run("smoke", tmp_path, {"seeds": "1", "steps": "1500",
                                                "sigma_ps": "0.02,1.5"})
    _check_outputs(res, tmp_path, "softmax_fig7")
    assert (tmp_path / "softmax_fig7_loss_vs_R.png").exists()
    assert res["passed"], res["checks"]


@pytest.mark.slow
def test_fig6_reduced_joint_W(tmp_path):
    res = softmax_fig6.run("smoke", tmp_path, {"seeds": "1", "steps": "1500",
                                                "over_steps": "600"})
    _check_outputs(res, tmp_path, "softmax_fig6")
    assert res["passed"], res["checks"]
    assert res["config"]["train_W"] is True
