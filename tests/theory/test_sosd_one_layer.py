"""Paper 002 §4 theory model (jaxspectra/theory/sosd_one_layer.py) against independent ground truths.

* closed-form gradients (App. B–C) vs ``jax.grad`` of the loss;
* the pure forward pass vs the flax model :mod:`jaxspectra.models.one_layer` (float64);
* the GD scan vs a Python loop of ``θ − η·jax.grad``; its singular values vs NumPy's float64 SVD;
  its curvature record vs ``gᵀ(jax.hessian)g``; the gaps vs a NumPy transcription;
* ΔΣ vs a NumPy transcription of Σ̂ = Σ/tr Σ;
* Lemma A.4 on random pairs (holds; near-tight example; the ``max`` denominator also holds);
* the corrected Phase-I bound on real GD steps vs the exact ΔL (holds), and the paper's eq. 94
  step on its counterexample (fails while ours holds);
* Theorem 4.9's gradient bounds (eq. 139) on random parameters.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jaxspectra.precision import x64_scope
from jaxspectra.theory import sosd_one_layer as S

N, D, C = 5, 4, 3


def _setup(sigma=0.3, seed=0, n=N, d=D, c=C):
    task = S.make_task(jax.random.key(seed), n, d, c)
    params = S.small_init(jax.random.key(seed + 1), d, sigma)
    return task, params


def test_closed_form_gradients_match_jax_grad():
    with x64_scope():
        task, params = _setup(sigma=0.7)
        g = jax.jit(jax.grad(lambda p: S.task_loss(p, task)))(params)
        cf = jax.jit(lambda p: S.closed_form_grads(p, task))(params)
        for k in S.NAMES:  # float64, O(10) flops per entry: round-off ~1e-15 relative
            np.testing.assert_allclose(cf[k], g[k], rtol=1e-10, atol=1e-13)
        stepped = S.gd_step(params, task, 0.3)
        for k in S.NAMES:
            np.testing.assert_allclose(stepped[k], params[k] - 0.3 * g[k], rtol=1e-12, atol=1e-14)
        # G_H is the gradient with respect to H (eq. 42): check through a perturbation of H
        f = jax.jit(S.forward)(params, task.X, task.W_C)

        def loss_of_H(H):
            logP = jax.nn.log_softmax(H @ task.W_C, axis=-1)
            return -jnp.mean(jnp.take_along_axis(logP, task.y[:, None], axis=1))

        np.testing.assert_allclose(cf["G_H"], jax.jit(jax.grad(loss_of_H))(f["H"]), rtol=1e-10,
                                   atol=1e-14)


def test_forward_matches_flax_one_layer_model():
    from jaxspectra.models.config import OneLayerConfig
    from jaxspectra.models.one_layer import OneLayerTransformer

    with x64_scope():
        task, params = _setup(sigma=0.5)
        cfg = OneLayerConfig(d=D, n_classes=C, seq_len=N, sigma=0.5, dtype="float64",
                             param_dtype="float64")
        model = OneLayerTransformer(cfg)
        variables = {"params": {"attn": {k: {"kernel": params[k]} for k in S.NAMES}}}
        z = model.apply(variables, task.X[None], w_c=task.W_C)[0]
        np.testing.assert_allclose(S.forward(params, task.X, task.W_C)["Z"], z, rtol=1e-12,
                                   atol=1e-14)


@pytest.mark.slow  # ~8 s unloaded: compiles the scan, a dense Hessian and the reference loop
def test_run_gd_matches_python_loop_svd_curvature_and_gaps():
    eta, steps = 0.3, 4
    task, params = _setup(sigma=0.4)
    tr = S.run_gd(params, task, eta, steps, curvature_points=3)
    with x64_scope():
        p = dict(params)
        gfun = jax.jit(jax.grad(lambda q: S.task_loss(q, task)))
        unravel = ravel_pytree(p)[1]
        Hfun = jax.jit(jax.hessian(lambda th: S.task_loss(unravel(th), task)))
        fwd = jax.jit(lambda q: S.forward(q, task.X, task.W_C))
        for t in range(steps + 1):
            assert tr.loss[t] == pytest.approx(float(S.task_loss(p, task)), rel=1e-12)
            for j, k in enumerate(S.NAMES):  # float64 SVD (LAPACK) vs XLA's: ~1e-15 relative
                np.testing.assert_allclose(tr.sv[t, j], np.linalg.svd(np.asarray(p[k]),
                                                                      compute_uv=False),
                                           rtol=1e-10, atol=1e-14)
            if t == steps:
                break
            g = gfun(p)
            np.testing.assert_allclose(tr.grad_fro[t], [np.linalg.norm(g[k]) for k in S.NAMES],
                                       rtol=1e-10)
            # curvature: max over s ∈ {0, ½, 1} of gᵀ∇²L g/‖g‖² with a dense Hessian
            flat = ravel_pytree(p)[0]
            gv = ravel_pytree(g)[0]
            curv = max(float(gv @ Hfun(flat - s * eta * gv) @ gv / (gv @ gv)) for s in (0, .5, 1))
            assert tr.curv_seg[t] == pytest.approx(curv, rel=1e-8, abs=1e-12)
            f = fwd(p)
            M, Z = np.asarray(f["M"]), np.asarray(f["Z"])
            srt = np.sort(M, axis=1)
            assert tr.att_gap[t] == pytest.approx(np.min(srt[:, -1] - srt[:, -2]), abs=1e-14)
            y = np.asarray(task.y)
            zy = Z[np.arange(N), y]
            other = np.where(np.eye(C, dtype=bool)[y], -np.inf, Z).max(1)
            assert tr.logit_gap[t] == pytest.approx(np.min(zy - other), abs=1e-14)
            assert tr.accuracy[t] == pytest.approx(np.mean(zy > other))
            p_next = {k: p[k] - eta * g[k] for k in S.NAMES}
            gn = gfun(p_next)
            diff = math.sqrt(sum(float(jnp.sum((gn[k] - g[k]) ** 2)) for k in S.NAMES))
            assert tr.grad_diff[t] == pytest.approx(diff, rel=1e-8)
            p = p_next


def test_sd_variation_matches_numpy_transcription():
    rng = np.random.default_rng(0)
    sv = np.abs(rng.normal(size=(7, 3, 5)))
    hat = sv / sv.sum(-1, keepdims=True)
    want = np.sqrt(np.sum((hat[1:] - hat[:-1]) ** 2, -1))
    np.testing.assert_allclose(S.sd_variation(sv), want, rtol=1e-14)


def test_lemma_a4_holds_on_random_steps_and_is_nearly_tight():
    rng = np.random.default_rng(1)
    worst_min = worst_max = 0.0
    for _ in range(300):
        d = int(rng.integers(2, 9))
        W = rng.normal(size=(d, d)) * rng.uniform(0.01, 2)
        G = rng.normal(size=(d, d)) * rng.uniform(0.01, 3)
        eta = rng.uniform(0.01, 1)
        W1 = W - eta * G
        s0, s1 = np.linalg.svd(W, compute_uv=False), np.linalg.svd(W1, compute_uv=False)
        dsig = float(S.sd_variation(np.stack([s0, s1]))[0])
        worst_min = max(worst_min, dsig / S.lemma_a4_bound(s0, s1, eta * np.linalg.norm(G)))
        worst_max = max(worst_max, dsig / S.lemma_a4_bound(s0, s1, eta * np.linalg.norm(G),
                                                           denominator="max"))
    assert worst_min <= 1 and worst_max <= 1
    # near-tight: growing the small singular values of diag(1, ε, …) gains ≈ √d/(1+√d)
    ce = S.paper_eq94_counterexample(d=16, eta=1e-4, g=1.0)
    s0 = np.array([1.0] + [1e-3] * 15)
    s1 = np.array([1.0] + [1e-3 + 1e-4] * 15)
    ratio = ce["delta"] / S.lemma_a4_bound(s0, s1, 1e-4 * math.sqrt(15))
    assert 0.7 < ratio <= 1  # √16/(1+√16) = 0.8 to first order
    with pytest.raises(ValueError, match="denominator"):
        S.lemma_a4_bound(s0, s1, 1.0, denominator="mean")


def test_theorem45_epsilon_is_eta_over_nuclear_norm():
    eps = S.theorem45_epsilon(np.array([1.0, 2.0, 4.0]), eta=0.1, G=2.0, d=9)
    np.testing.assert_allclose(eps, (1 + 3) * 0.1 * 2.0 / np.array([1.0, 2.0, 4.0]))


def test_corrected_phase1_bound_holds_on_gd_steps():
    # large-ish steps from a moderate init: ΔL exact from float64 losses
    for seed, eta in ((0, 0.5), (3, 1.5), (5, 3.0)):
        task, params = _setup(sigma=0.5, seed=seed)
        tr = S.run_gd(params, task, eta, 40, curvature_points=9)
        nuc = tr.sv.sum(-1)
        td = np.minimum(nuc[:-1], nuc[1:]) * S.sd_variation(tr.sv)
        dL = tr.loss[:-1] - tr.loss[1:]
        bound = S.phase1_lower_bound(td, eta, tr.curv_seg, D)
        assert np.all(dL - bound >= -1e-13), (seed, eta, np.min(dL - bound))
        # the intermediate step ‖∇L‖² ≥ Σ(τ'δ)²/C₀² (Lemma A.4 squared) holds too
        C0 = (1 + math.sqrt(D)) * eta
        assert np.all(np.sum(tr.grad_fro**2, -1) >= np.sum(td**2, -1) / C0**2 * (1 - 1e-12))


def test_paper_eq94_step_fails_on_its_counterexample_ours_holds():
    ce = S.paper_eq94_counterexample(d=4, eta=1.0, g=0.01)
    assert ce["C0"] > 1
    assert ce["grad_sq"] < ce["paper_rhs"]  # eq. 94's ‖G‖² ≥ (τ'δ)²/C₀ is false here
    assert ce["grad_sq"] >= ce["corrected_rhs"]  # Lemma A.4 squared holds
    # eq. 95: max ≥ D gives Σ ≥ D², not 3D²: (D, 0, 0)
    b = S.paper_phase1_bounds(np.array([[2.0, 0.0, 0.0]]), eta=0.5, beta=np.array([0.0]), d=4)
    assert b["eq96"][0] == pytest.approx(3 * 4.0 / 3)  # 3D² where Σ(τδ)² is only D² = 4
    assert b["eq94"][0] == pytest.approx(4.0 / 3)
    assert S.phase1_lower_bound(np.array([[2.0, 0.0, 0.0]]), 0.5, np.array([0.0]), 4)[0] == \
        pytest.approx(4.0 / (0.5 * 9))


def test_theorem49_gradient_bounds_hold_on_random_params():
    with x64_scope():
        fwd, grads = jax.jit(S.forward), jax.jit(S.closed_form_grads)
        for seed in range(6):
            sigma = [0.1, 1.0, 3.0][seed % 3]
            task, params = _setup(sigma=sigma, seed=seed, n=6, d=5, c=4)
            f = fwd(params, task.X, task.W_C)
            g = grads(params, task)
            nuc = np.array([np.linalg.svd(np.asarray(params[k]), compute_uv=False).sum()
                            for k in S.NAMES])
            ag = float(jnp.min(S.gap(f["M"])))
            lg = float(jnp.min(S.label_margin(f["Z"], task.y)))
            b = S.theorem49_gradient_bounds(nuc, ag, lg, task.X, task.W_C)
            gn = np.array([float(jnp.linalg.norm(g[k])) for k in S.NAMES])
            assert np.all(gn <= b * (1 + 1e-12)), (seed, gn, b)


def test_bad_input_errors():
    with x64_scope():
        _bad_input_errors()


def _bad_input_errors():
    task, params = _setup()
    with pytest.raises(ValueError, match="params must be a dict"):
        S.run_gd({"q": params["q"]}, task, 0.1, 3)
    with pytest.raises(ValueError, match=r"params\['v'\] must be \(d, d\)"):
        S.run_gd({**params, "v": params["v"][:2]}, task, 0.1, 3)
    with pytest.raises(ValueError, match="eta must be positive"):
        S.run_gd(params, task, -0.1, 3)
    with pytest.raises(ValueError, match=r"task.y must be integers in \[0, C"):
        S.run_gd(params, task._replace(y=task.y + 10), 0.1, 3)
    with pytest.raises(ValueError, match="non-finite"):
        S.run_gd({**params, "q": params["q"].at[0, 0].set(jnp.nan)}, task, 0.1, 3)
    with pytest.raises(ValueError, match="sigma must be positive"):
        S.small_init(jax.random.key(0), 3, 0.0)
    with pytest.raises(ValueError, match="C"):
        S.make_task(jax.random.key(0), 3, 3, 1)
