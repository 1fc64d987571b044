"""Paper 004 reproduction: every criterion with a positive case and a negative control (data
built to violate it returns *fail*), the measurements against closed forms, one tiny end-to-end
run."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jaxspectra.experiments import _manifold_criteria as C
from jaxspectra.experiments import manifold_repro as M

# ---- measurements ----------------------------------------------------------------------------


def _dgram(m: int, norms: list[float], seed: int = 0) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((m, len(norms))))
    return q * np.asarray(norms)[None, :]


def test_tall_transposes_wide_kernels_and_rejects_stacks():
    assert C.tall(np.zeros((3, 5))).shape == (5, 3)
    assert C.tall(np.zeros((5, 3))).shape == (5, 3)
    with pytest.raises(ValueError, match="split stacked"):
        C.tall(np.zeros((2, 3, 3)))


def test_sigma_equals_colnorm_on_dgram_and_not_off_it():
    w = _dgram(12, [0.5, 2.0, 1.0, 1.5])  # unsorted norms: σ are the sorted norms (App. C)
    assert C.dgram_sigma_vs_colnorm(w) < 1e-12
    assert C.dgram_sigma_vs_colnorm(w.T) < 1e-12  # wide kernel: its tall form is checked
    g = np.random.default_rng(1).standard_normal((12, 4))
    assert C.dgram_sigma_vs_colnorm(g) > 0.05  # a generic matrix is far from the manifold


def test_swap_eligible_pairs_closed_form():
    w = _dgram(10, [2.0, 1.0, 0.95, 0.5])  # gaps 1.0, 0.05, 0.45
    assert C.swap_eligible_pairs(w, 0.02) == 0  # 2η = 0.04 < 0.05
    assert C.swap_eligible_pairs(w, 0.03) == 1
    assert C.swap_eligible_pairs(w, 0.5) == 3
    with pytest.raises(ValueError, match="≥ 0"):
        C.swap_eligible_pairs(w, -1.0)


def test_first_crossing_and_verdict_step():
    assert C.first_crossing([0, 10, 20], [1.0, 11.0, 3.0], 10.0) == 10
    assert C.first_crossing([0, 10], [1.0, 2.0], 10.0) is None
    assert C.first_crossing([0, 10], [1.0, math.nan], 10.0) == 10
    v = {"unstable": True, "criteria": {"a": {"triggered": True, "step": 40},
                                        "b": {"triggered": True, "step": 30},
                                        "c": {"triggered": False, "step": None}}}
    assert C.verdict_step(v) == 30
    assert C.verdict_step({"unstable": False, "criteria": {}}) is None


def test_violations_read_from_a_real_manifold_muon_state():
    import jax
    import jax.numpy as jnp

    from jaxspectra.optim.module_wise import paper004, paper004_init

    k = jax.random.split(jax.random.key(0), 3)
    params = {"block_0": {"attn": {"qkv": {"kernel": 0.02 * jax.random.normal(k[0], (8, 24))}},
                          "mlp": {"fc": {"kernel": 0.02 * jax.random.normal(k[1], (8, 32))}}},
              "embed": {"embedding": jax.random.normal(k[2], (16, 8))}}
    params = paper004_init("hetero_inv", params)
    tx = paper004("hetero_inv", total_steps=10, warmup_steps=1, sign_method="svd")
    state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    _, state = tx.update(grads, state, params)
    v = M.state_metrics(state)
    assert set(v) == {f"mm/{g}/{k}" for g in ("attention", "mlp")
                      for k in ("violation_max", "violation_mean", "swaps", "swaps_total")}
    assert all(np.isfinite(x) and x >= 0 for x in v.values())
    assert v["mm/mlp/swaps"] == v["mm/mlp/swaps_total"] == 0  # Stiefel MLP: no sorted retraction
    p = M.probe(params, state, "hetero_inv", eta=0.01)
    # attention is DGram in hetero_inv: σ_max equals the largest column norm on the manifold
    assert p["mm/attention/sigma_colnorm_rel"] < C.SIGMA_COLNORM_RTOL
    assert abs(p["mm/attention/max_sigma"] - p["mm/attention/max_colnorm"]) < 1e-3
    assert "mm/mlp/sigma_colnorm_rel" not in p  # Stiefel MLP: not a DGram claim


# ---- criteria: positive and negative control -------------------------------------------------


def test_instability_pattern():
    d, s = ("all_dgram", "hetero_inv"), ("all_stiefel", "hetero")
    good = {"all_dgram": [True, True, False], "hetero_inv": [True] * 3,
            "all_stiefel": [False] * 3, "hetero": [False] * 3}
    assert C.instability_pattern(good, d, s)["status"] == "supported"
    bad = dict(good, hetero=[False, True, False])  # one Stiefel-attention seed fails
    assert C.instability_pattern(bad, d, s)["status"] == "not supported"
    bad = dict(good, all_dgram=[True, False, False])  # DGram attention mostly stable
    assert C.instability_pattern(bad, d, s)["status"] == "not supported"
    assert C.instability_pattern({}, d, s)["status"] == "untestable"


def test_ordering():
    order = ("hetero", "all_stiefel", "unconstrained_muon")
    good = {"hetero": [3.30, 3.31, 3.32], "all_stiefel": [3.40, 3.41, 3.42],
            "unconstrained_muon": [3.50, 3.52, 3.51]}
    assert C.ordering(good, order)["status"] == "supported"
    noisy = dict(good, all_stiefel=[3.25, 3.45, 3.35])  # gap inside the seeds' scatter
    assert C.ordering(noisy, order)["status"] == "unresolved"
    rev = dict(good, hetero=[3.60, 3.61, 3.62])  # Hetero clearly worst
    assert C.ordering(rev, order)["status"] == "contradicted"
    nan = dict(good, hetero=[math.nan, 3.3, 3.3])
    assert C.ordering(nan, order)["status"] == "untestable"
    one = {k: v[:1] for k, v in good.items()}  # one seed: no ranking
    assert C.ordering(one, order)["status"] == "untestable"
    assert C.ordering({"hetero": good["hetero"]}, order)["status"] == "untestable"


def test_sigma_growth():
    d, s = ("all_dgram", "hetero_inv"), ("all_stiefel", "hetero")
    up, flat = [1.0, 2.0, 8.0], [1.0, 1.0, 1.01]
    good = {"all_dgram": [up] * 3, "hetero_inv": [up, up, flat],
            "all_stiefel": [flat] * 3, "hetero": [flat] * 3}
    assert C.sigma_growth(good, d, s)["status"] == "supported"
    assert C.sigma_growth(dict(good, hetero=[flat, [1.0, 1.2]]), d, s)["status"] == \
        "not supported"  # a Stiefel σ_max off the manifold
    assert C.sigma_growth(dict(good, all_dgram=[flat] * 3), d, s)["status"] == "not supported"


def test_colnorm_claim():
    assert C.colnorm_claim([1e-6, 5e-4])["status"] == "supported"
    assert C.colnorm_claim([1e-6, 0.3])["status"] == "not supported"
    assert C.colnorm_claim([1e-6, math.nan])["status"] == "not supported"
    assert C.colnorm_claim([])["status"] == "untestable"


def _run(name, unstable, vstep, stiefel, sat):
    return {"name": name, "unstable": unstable, "verdict_step": vstep,
            "stiefel_attention": stiefel, "sat_step": sat}


def test_mechanism():
    good = [_run("d0", True, 300, False, 200), _run("d1", True, 300, False, 300),
            _run("s0", False, None, True, None)]
    assert C.mechanism(good)["status"] == "supported"
    late = [_run("d0", True, 300, False, 400), _run("s0", False, None, True, None)]
    assert C.mechanism(late)["status"] == "not supported"  # saturation after the verdict
    never = [_run("d0", True, 300, False, None)]
    assert C.mechanism(never)["status"] == "not supported"
    stiefel = [_run("d0", True, 300, False, 100), _run("s0", False, None, True, 50)]
    assert C.mechanism(stiefel)["status"] == "not supported"  # a Stiefel run saturates
    assert C.mechanism([_run("s0", False, None, True, None)])["status"] == "untestable"


def test_artefact():
    assert C.artefact([True] * 3, [False] * 3)["status"] == "artefact"
    assert C.artefact([True] * 3, [True, True, False])["status"] == "not an artefact"
    assert C.artefact([True] * 3, [True, False, False])["status"] == "mixed"
    assert C.artefact([False] * 3, [False] * 3)["status"] == "no failure to explain"
    assert C.artefact([], [True])["status"] == "untestable"


def test_stabilised():
    fails = [True, True, False]
    assert C.stabilised([False] * 3, fails)["status"] == "stabilised"
    assert C.stabilised([False, True, False], fails)["status"] == "not stabilised"
    assert C.stabilised([False] * 3, [False] * 3)["status"] == "no failure to stabilise"
    assert C.stabilised([], fails)["status"] == "untestable"


def test_mlp_tolerance():
    assert C.mlp_tolerance([5.0] * 3, [False] * 3, [0.5] * 3)["status"] == "tolerated"
    assert C.mlp_tolerance([5.0] * 3, [False, True, False], [0.5] * 3)["status"] == \
        "not tolerated"
    assert C.mlp_tolerance([5.0] * 3, [False] * 3, [0.5, 0.01, 0.5])["status"] == \
        "not tolerated"  # gradient collapse
    assert C.mlp_tolerance([1.1] * 3, [False] * 3, [0.5] * 3)["status"] == \
        "no growth to tolerate"


def test_bad_overrides_name_the_fix():
    with pytest.raises(SystemExit, match="known"):
        M._resolve("smoke", {"nope": 1})
    with pytest.raises(SystemExit, match="parts=table1"):
        M._resolve("smoke", {"parts": "tabel1"})
    with pytest.raises(SystemExit, match="warmup"):
        M._resolve("smoke", {"steps": 3, "warmup": 3})


def test_report_only_needs_saved_runs(tmp_path):
    with pytest.raises(SystemExit, match="parts=table1"):
        M.run("smoke", tmp_path, {"parts": "none"})


# ---- end to end ------------------------------------------------------------------------------


def _fake_run(assignment, seed, variant, unstable, sigma_growth, gap_peak):
    steps = [0, 10, 20, 30]
    sig = [1.0, 1.0 + sigma_growth / 3, 1.0 + 2 * sigma_growth / 3, 1.0 + sigma_growth]
    gaps = [0.5, 1.0, gap_peak, gap_peak]
    crit = {"hard_spike": {"triggered": unstable, "step": 30 if unstable else None,
                           "detail": ""}}
    return {"name": f"{assignment}-{variant}-s{seed}", "assignment": assignment, "seed": seed,
            "variant": variant, "wall_s": 1.0, "step_s": 0.01, "final_eval_loss": 3.0 + seed / 100,
            "verdict": {"unstable": unstable, "criteria": crit},
            "curves": {"eval/loss": [[s, 4.0 - s / 100] for s in steps],
                       "mm/attention/max_sigma": [[s, v] for s, v in zip(steps, sig)],
                       "mm/mlp/max_sigma": [[s, v] for s, v in zip(steps, sig)],
                       "mm/attention/sigma_colnorm_rel": [[s, 1e-6] for s in steps],
                       "mm/attention/swap_eligible": [[s, 2.0] for s in steps],
                       "mm/attention/swaps_total": [[s, float(s // 10)] for s in steps],
                       "grad_norm/mlp": [[s, 1.0] for s in steps],
                       "attention/layer_0/head_0/logit_gap": [[s, g] for s, g in
                                                              zip(steps, gaps)]}}


def test_analyse_on_synthetic_runs_reaches_every_verdict(tmp_path):
    """The whole analysis (criteria wiring, report, figures) on runs built to match the paper:
    DGram attention grows, saturates at step 20 and fails at 30; the default retraction and the
    scale control are stable; Stiefel attention stays at σ = 1 and never saturates."""
    runs = []
    for s in range(3):
        for a in M.ASSIGNMENTS:
            d = a in M.DGRAM_ATTENTION
            runs.append(_fake_run(a, s, "faithful", d, 10.0 if d or a == "hetero" else 0.0,
                                  20.0 if d else 2.0))
        for a in M.DGRAM_ATTENTION:
            runs.append(_fake_run(a, s, "defaultret", False, 0.0, 2.0))
        runs.append(_fake_run("hetero_inv", s, "msign", False, 0.0, 2.0))
    # a hetero run's attention is Stiefel: its σ curve must stay at 1 for Fig. 2's claim
    for r in runs:
        if r["assignment"] in M.STIEFEL_ATTENTION:
            r["curves"]["mm/attention/max_sigma"] = [[s, 1.0] for s in (0, 10, 20, 30)]
        r["final_eval_loss"] += {"hetero": 0.0, "all_stiefel": 0.1,
                                 "unconstrained_muon": 0.2}.get(r["assignment"], 0.0)
    res = M.analyse(runs)
    assert res["instability_pattern"]["status"] == "supported"
    assert res["ordering"]["status"] == "supported"
    assert res["sigma_growth"]["status"] == "supported"
    assert res["colnorm"]["status"] == "supported"
    assert res["mechanism"]["status"] == "supported"
    assert res["mlp_tolerance"]["status"] == "tolerated"
    assert {v["status"] for v in res["artefact"].values()} == {"artefact"}
    assert res["scale"]["status"] == "stabilised"
    assert res["swap_eligible_total"]["all_dgram-faithful-s0"] == 8
    assert res["swaps_exact_total"]["all_dgram-faithful-s0"] == 3  # the last cumulative value
    # negative control through the same wiring: Stiefel attention saturating breaks item 3
    for r in runs:
        if r["assignment"] == "hetero" and r["variant"] == "faithful":
            r["curves"]["attention/layer_0/head_0/logit_gap"][2][1] = 50.0
    assert M.analyse(runs)["mechanism"]["status"] == "not supported"
    figs = M._plot(runs, tmp_path)
    text = M._report(M._resolve("smoke", {}), runs, res, figs, 1.0, "test")
    assert text.count("**supported**") >= 5 and all(p.exists() for p in figs.values())
    assert "all_dgram-faithful-s0: exact 3, upper bound 8" in text


@pytest.mark.slow
def test_smoke_end_to_end(tmp_path):
    out = M.run("smoke", tmp_path, {"parts": "table1", "steps": 4, "warmup": 1,
                                    "eval_every": 2, "every": 1})
    assert out["passed"]
    s = out["summary"]
    assert s["n_runs"] == 1
    # DGram attention in hetero_inv: App. C's σ_j = ‖w_j‖ measured through the probe hook
    assert s["colnorm"]["status"] == "supported"
    text = open(out["report"]).read()
    assert "| claim (paper, section) | ours | verdict |" in text
    assert "hetero_inv-faithful-s0" in text
    assert all(p.endswith(".png") for p in out["figures"])


def test_weight_decay_control_builds_and_decays_attention_only(tmp_path):
    """``scale_control=wd``: the run config builds, and its optimiser decays the
    (DGram) attention weights and leaves the (Stiefel) MLP as without the control (two steps)."""
    import jax
    import jax.numpy as jnp

    from jaxspectra.optim.module_wise import paper004_init
    from jaxspectra.optim.registry import build_optimizer

    c = M._resolve("smoke", {"scale_control": "wd"})
    opts = M.run_config(c, "hetero_inv", 0, tmp_path, "wd").optim.options
    assert opts["weight_decay"] == M.WD_ATTENTION and opts["weight_decay_groups"] == "attention"
    assert "weight decay 0.1" in M.control_label(c) and "msign" in M.control_label(
        M._resolve("smoke", {}))
    k = jax.random.split(jax.random.key(1), 3)
    params = {"block_0": {"attn": {"o": {"kernel": 0.1 * jax.random.normal(k[0], (8, 8))}},
                          "mlp": {"fc": {"kernel": 0.1 * jax.random.normal(k[1], (8, 16))}}},
              "embed": {"embedding": jax.random.normal(k[2], (16, 8))}}
    params = paper004_init("hetero_inv", params, sign_method="svd")
    grads = jax.tree.map(jnp.ones_like, params)
    new = {}
    for name, o in (("wd", opts), ("none", {"muon_peak": opts["muon_peak"]})):
        tx = build_optimizer("hetero_inv", 6e-4, total_steps=10, warmup_steps=1,
                             sign_method="svd", **o)
        p, st = params, tx.init(params)
        for _ in range(2):  # the warm-up's step 0 has learning rate 0
            u, st = tx.update(grads, st, p)
            p = optax_apply(p, u)
        new[name] = jax.tree.map(np.asarray, p)
    att = [n["block_0"]["attn"]["o"]["kernel"] for n in (new["wd"], new["none"])]
    mlp = [n["block_0"]["mlp"]["fc"]["kernel"] for n in (new["wd"], new["none"])]
    np.testing.assert_array_equal(mlp[0], mlp[1])
    assert np.abs(att[0] - att[1]).max() > 0
    # the decay shrinks the DGram column norms (sum of squares of the tall kernel)
    assert np.linalg.norm(att[0]) < np.linalg.norm(att[1])


def optax_apply(params, updates):
    import optax

    return optax.apply_updates(params, updates)
