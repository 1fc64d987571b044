"""Paper 001 App. J.3 (Assumption B and κ tables): the batched operators against independent
ground truths, the extraction against the model's own attention, each criterion on data built to
violate it (negative controls), the full preset's errors, and the smoke end to end."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspectra.experiments import _assumption_b_criteria as crit
from jaxspectra.experiments import softmax_assumption_b as exp
from jaxspectra.experiments import softmax_vit_mnist as vit
from jaxspectra.models import get_model
from jaxspectra.theory import results as R

EPS32 = float(np.finfo(np.float32).eps)
EPS64 = float(np.finfo(np.float64).eps)


def _keys(seed=0, N=30, n=10, d=6, scale=3.0):
    rng = np.random.default_rng(seed)
    K, s = rng.standard_normal((N, n, d)), rng.standard_normal((N, n)) * scale
    imp = R.select_important(s)
    return K, s, imp


# ------------------------------------------------------------------ operators vs ground truth
def test_kappa_J2_matches_dense_numpy_eigvals_on_tangent_space():
    rng = np.random.default_rng(0)
    s = rng.standard_normal((6, 9)) * 2  # moderate spread: eigvalsh is accurate here
    got = R.kappa_J2_tangent(s)
    n = s.shape[1]
    Q = np.linalg.qr((np.eye(n) - 1.0 / n)[:, : n - 1])[0]  # basis of 1⊥
    for i in range(s.shape[0]):
        a = np.exp(s[i] - s[i].max())
        a /= a.sum()
        J = np.diag(a) - np.outer(a, a)
        lam = np.linalg.eigvals(Q.T @ J @ J @ Q).real  # (diag a − aaᵀ)² restricted to 1⊥
        want = lam.max() / lam.min()
        # eigvals' error on λ_min is ~ n·eps·λ_max; relative to λ_min that is n·eps·κ
        assert abs(got[i] - want) <= 1e3 * n * EPS64 * want * want + 1e-9 * want, (got[i], want)
    # the paper's estimate is an upper bound (Lemma 1) and equals (max a/min a)² exactly
    est = R.log10_kappa_J2_paper(s)
    a = np.exp(s - s.max(1, keepdims=True))
    np.testing.assert_allclose(est, 2 * np.log10(a.max(1) / a.min(1)), rtol=1e-12)
    assert np.all(np.log10(got) <= est + 1e-9)


def test_rho_per_example_is_the_generalised_eigenvalue_and_bounds_the_sampled_one():
    K, _, imp = _keys()
    Q_I, Q_U = R.important_subspace(K, imp, 0.6)
    assert Q_U.shape[1] >= 1
    rho = R.rho_U_per_example(K, imp, Q_U)
    assert rho.max() == pytest.approx(R.rho_U_exact(K, imp, Q_U), rel=1e-10)
    for i in range(5):  # ground truth: maximise the ratio by SVD of K_S Q_U (K_T Q_U)^+
        KS, KT = K[i][imp[i]] @ Q_U, K[i][~imp[i]] @ Q_U
        # x = (K_T Q_U)^{-1}-whitened: max ‖K_S x‖/‖K_T x‖ = σ_max(K_S R⁻¹), K_T = Q R
        Rt = np.linalg.qr(KT)[1]
        want = np.linalg.svd(KS @ np.linalg.inv(Rt), compute_uv=False)[0]
        assert rho[i] == pytest.approx(want, rel=1e-9)
    rs = R.rho_U_sampled_per_example(K, imp, Q_U, 200, 0)
    assert np.all(rs <= rho * (1 + 1e-12))  # a max over samples never exceeds the max
    assert rs.max() == pytest.approx(R.rho_U_sampled(K, imp, Q_U, 200, 0), rel=1e-12)
    assert R.rho_U_pooled(K, imp, Q_U) <= rho.max() * (1 + 1e-12)


def test_subspace_with_many_rows_equals_the_full_svd_one_and_kappa_survives_overflow():
    """r ≥ d important rows: important_subspace's thin SVD gives the subspaces a full NumPy SVD
    does (equal projectors; bases may differ by signs)."""
    K, _, imp = _keys(N=40, d=5)
    rows = K[imp]
    assert rows.shape[0] >= K.shape[2]
    _, s, Vt = np.linalg.svd(rows, full_matrices=True)
    for var in (0.5, 0.9, 1.0):
        k = int(np.searchsorted(np.cumsum(s**2) / np.sum(s**2), var - 1e-12) + 1)
        QI, QU = R.important_subspace(K, imp, var)
        assert QI.shape == (5, k) and QU.shape == (5, 5 - k)
        np.testing.assert_allclose(QI @ QI.T, Vt[:k].T @ Vt[:k], atol=1e-10)
        np.testing.assert_allclose(QU @ QU.T, Vt[k:].T @ Vt[k:], atol=1e-10)
    # scores spanning 400 nats: κ = e^{~800} overflows float64, its log10 does not
    s = np.array([[0.0, -200.0, -400.0, -1.0]])
    lk = R.log10_kappa_J2_tangent(s)
    assert np.isfinite(lk).all() and lk[0] <= R.log10_kappa_J2_paper(s)[0] + 1e-9
    assert R.kappa_J2_tangent(s)[0] == math.inf


def test_rho_is_infinite_when_every_token_is_important():
    K, _, imp = _keys()
    imp = imp.copy()
    imp[3] = True
    Q_U = R.important_subspace(K, imp, 0.6)[1]
    rho = R.rho_U_per_example(K, imp, Q_U)
    assert rho[3] == math.inf and np.isfinite(np.delete(rho, 3)).all()
    with pytest.raises(ValueError, match="important_subspace"):
        R.rho_U_per_example(K, imp, Q_U[:-1])


def test_vector_margins_reduce_to_scalar_margins_and_match_a_loop():
    rng = np.random.default_rng(2)
    s = rng.standard_normal((7, 5)) * 2
    imp = R.select_important(s)
    u = rng.standard_normal((7, 5))
    np.testing.assert_allclose(R.vector_value_margins(u[:, :, None], s, imp),
                               R.value_margins(u, s, imp), rtol=1e-13)
    V = rng.standard_normal((7, 5, 3))
    got = R.vector_value_margins(V, s, imp)
    for i in range(7):
        a = np.exp(s[i]) / np.exp(s[i]).sum()
        mu = a @ V[i]
        want = min(np.linalg.norm(V[i, j] - mu) for j in range(5) if imp[i, j])
        assert got[i] == pytest.approx(want, rel=1e-12)


# --------------------------------------------------------------- extraction vs the model
@pytest.mark.slow  # two ViT compiles: ~25 s on 2 shared cores
def test_head_tensors_reproduce_the_models_cls_attention():
    model, _ = get_model("vit-tiny", n_layers=2, n_heads=2, d_model=16, d_mlp=32, patch_size=7,
                         init_std=0.3)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 28, 28)), jnp.float32)
    params = model.init(jax.random.key(1), x[:1])
    t = exp.head_tensors(model, params, np.asarray(x), n_heads=2, chunk=3)
    _, aux = model.apply(params, x, return_attention=True)
    for layer in range(2):
        want = np.asarray(aux["attention"][layer][:, :, 0, :], np.float64)  # [B, H, T]
        s = t["scores"][layer].transpose(1, 0, 2)
        got = np.exp(s - s.max(-1, keepdims=True))
        got /= got.sum(-1, keepdims=True)
        # float32 logits (|s| ≲ 10) and softmax: absolute error a few eps32 · |s|
        np.testing.assert_allclose(got, want, atol=64 * EPS32 * max(1.0, np.abs(s).max()))
    assert t["keys"].shape == (2, 2, 5, 17, 8) and t["values"].shape == (2, 2, 5, 17, 8)


# ------------------------------------------------------------ criteria: pass and negative
def test_b1_criterion_fails_on_leaky_keys():
    assert crit.b1_holds(np.full(100, 0.3))[0]
    bad = np.concatenate([np.full(85, 0.3), np.full(15, 1.5)])  # 15% of pairs leak
    assert not crit.b1_holds(bad)[0]
    undefined = np.concatenate([np.full(85, 0.3), np.full(15, np.inf)])
    ok, det = crit.b1_holds(undefined)
    assert not ok and det["frac_undefined"] == pytest.approx(0.15)
    with pytest.raises(ValueError, match="min_frac"):
        crit.b1_holds(bad, min_frac=0)


def test_sampling_criterion_fails_when_200_samples_miss_a_single_bad_direction():
    # ground truth construction: keys whose leaking direction is one axis of a 60-dim U
    rng = np.random.default_rng(0)
    N, n, d = 20, 8, 64
    K = rng.standard_normal((N, n, d)) * 1.0
    imp = np.zeros((N, n), bool)
    imp[:, 0] = True
    K[:, 0, :] = 0.0
    K[:, 0, 0] = 5.0      # the important key lies in I = span(e0) ...
    K[:, 0, 5] = 50.0      # ... except one large leak along e5
    Q_U = np.eye(d)[:, 1:]
    exact = R.rho_U_per_example(K, imp, Q_U).max()
    sampled = R.rho_U_sampled_per_example(K, imp, Q_U, 200, 0).max()
    assert sampled < 0.5 * exact  # 200 random directions in 63 dims rarely align with e5
    assert not crit.sampling_faithful(np.array([exact]), np.array([sampled]))[0]
    assert crit.sampling_faithful(np.array([1.0, 2.0]), np.array([0.9, 1.8]))[0]
    assert not crit.sampling_faithful(np.array([np.inf]), np.array([1.0]))[0]  # nothing to judge


def test_b2_criterion_fails_when_the_important_value_sits_on_the_mean():
    # one dominant token whose value is the attention-weighted mean: δ = 0 exactly
    s = np.array([[10.0, 0.0, 0.0, 0.0]] * 10)
    imp = R.select_important(s)
    assert imp[:, 0].all() and not imp[:, 1:].any()
    V = np.zeros((10, 4, 2))
    V[:, 1, 0], V[:, 2, 0] = 1.0, -1.0  # equal weights a₁ = a₂ cancel: μ = 0 = v₀
    delta = R.vector_value_margins(V, s, imp)
    res = crit.b2_resolution(np.linalg.norm(V, axis=2).max(1), 64)
    ok, det = crit.b2_holds(delta, res)
    assert det["frac_resolved"] < 0.9 and not ok
    assert crit.b2_holds(np.full(10, 0.1), np.full(10, 1e-5))[0]
    with pytest.raises(ValueError, match="n_dot"):
        crit.b2_resolution(np.ones(3), 0)


def test_kappa_criterion_fails_without_a_sparse_dense_contrast():
    assert crit.kappa_sparse_vs_dense(np.full(50, 8.0), np.full(50, 2.0))[0]
    assert not crit.kappa_sparse_vs_dense(np.full(50, 0.1), np.full(50, 0.1))[0]  # uniform
    assert not crit.kappa_sparse_vs_dense(np.full(50, 3.0), np.full(50, 0.5))[0]  # < 1e4
    assert not crit.kappa_sparse_vs_dense(np.full(50, 5.0), np.full(50, 4.0))[0]  # gap 1


def test_upper_bound_criterion_fails_on_an_exact_value_above_the_estimate():
    assert crit.estimate_is_upper_bound(np.array([1.0, 2.0]), np.array([1.5, 2.0]))[0]
    ok, det = crit.estimate_is_upper_bound(np.array([1.0, 3.0]), np.array([1.5, 2.0]))
    assert not ok and det["frac_bound_holds"] == 0.5


# ------------------------------------------------------------------- config and errors
def test_full_preset_needs_a_vit_run_and_names_the_fix(tmp_path):
    with pytest.raises(ValueError, match="vit_run"):
        exp.resolve_config("full", {})
    with pytest.raises(FileNotFoundError, match="softmax_vit_mnist"):
        exp.run_networks(exp.resolve_config("full", {"vit_run": str(tmp_path / "nope")}))
    with pytest.raises(FileNotFoundError, match="params_sparse.npz"):
        exp.run_networks(exp.resolve_config("full", {"vit_run": str(tmp_path)}))


@pytest.mark.slow  # a ViT init compile and npz round trips: ~20 s on 2 shared cores
def test_run_networks_picks_seed0_best_eta_student(tmp_path):
    cfg = exp.resolve_config("full", {"vit_run": str(tmp_path), "vit_preset": "smoke"})
    vc = cfg["vit_cfg"]
    model, _ = vit.make_model(vc, vc["teacher_init_std"])
    init = jax.jit(lambda k: model.init(k, jnp.zeros((1, 28, 28), jnp.float32)))
    grid = [(s, e) for s in range(2) for e in (0.01, 0.1)]
    p0 = init(jax.random.key(0))
    for name in vit.TEACHERS:  # member m = p0 + m: each student is recognisable
        members = [jax.tree.map(lambda x, m=m: x + m, p0) for m in range(len(grid))]
        stacked = jax.tree.map(lambda *x: jnp.stack(x), *members)
        vit.save_params(tmp_path / f"params_{name}.npz", p0, stacked, grid, [1.0, 1.0])
    (tmp_path / "summary.json").write_text(json.dumps({"best_eta": {"sparse": 0.1,
                                                                    "non-sparse": 0.01}}))
    nets = exp.run_networks(cfg)
    assert [n["key"] for n in nets] == ["teacher_non-sparse", "student_non-sparse",
                                        "teacher_sparse", "student_sparse"]
    m = grid.index((0, 0.1))  # the sparse teacher's best η = 0.1, seed 0
    want = jax.tree.map(lambda x: x + m, p0)
    got = nets[3]["params"]
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# --------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_smoke_end_to_end(tmp_path, monkeypatch):
    monkeypatch.delenv("JAXSPECTRA_DATA_DIR", raising=False)
    out = exp.run("smoke", tmp_path)
    text = out["report"].read_text()
    assert "Table 1" in text and "Table 3" in text and "0.244" in text
    s = out["summary"]
    assert s["n_images"] == 200 and set(s["networks"]) == {"teacher_sparse", "teacher_non-sparse"}
    # the calibrated sparse teacher's [CLS] rows are far more ill-conditioned than the dense one's
    kap = next(c for c in out["checks"] if c["claim"] == exp.CLAIM_KAPPA)
    assert kap["ok"]
    bound = next(c for c in out["checks"] if c["claim"] == exp.CLAIM_EST)
    assert bound["ok"]
    for f in out["figures"].values():
        assert f.stat().st_size > 10_000
