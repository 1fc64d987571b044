"""Paper 003's cost model (jaxspectra.theory.msign_cost): closed forms and the worked examples."""

from __future__ import annotations

import numpy as np
import pytest

from jaxspectra.theory import msign_cost as C


def test_svd_and_msign_flops_table5():
    d = 7
    assert C.svd_flops(d, d) == 13 * d**3 and C.svd_flops(d, 4 * d) == 19 * d**3
    assert C.svd_flops(4 * d, d) == 19 * d**3
    assert C.msign_flops_per_layer(d, "attention") == 52 * d**3
    assert C.msign_flops_per_layer(d, "mlp") == 38 * d**3
    assert C.msign_flops_per_layer(d, "all_2d") == 90 * d**3
    with pytest.raises(ValueError, match="targets must be one of"):
        C.msign_flops_per_layer(d, "blocks")


def test_worked_example_eq17():
    b, t, d, p = 16, 1024, 2048, 100
    assert C.msign_flops_per_layer(d) == 446_676_598_784  # "≈ 4.47 × 10¹¹"
    assert round(C.msign_flops_per_layer(d) / 1e11, 2) == 4.47
    assert round(C.step_flops_per_layer(b, t, d) / 1e12, 2) == 5.36  # "≈ 5.36 × 10¹²"
    r = C.overhead_ratio(d, b, t, p)
    assert round(100 * r, 2) == 0.08  # "≈ 0.08 %"
    assert r == pytest.approx(52 * d**2 / ((72 * b * t * d + 12 * b * t * t) * p), rel=1e-15)
    # eq. 16 proper (all 2-D) is 90/52 of it; negative control: it does not round to 0.08 %
    assert round(100 * C.overhead_ratio(d, b, t, p, "all_2d"), 2) == 0.14
    with pytest.raises(ValueError, match="period must be > 0"):
        C.overhead_ratio(d, b, t, 0)


def test_fit_recovers_synthetic_parameters():
    p = np.array([5.0, 10, 30, 100, 1000, 1e4])
    t = C.throughput_model(p, 1234.5, 2.5)
    t_inf, r = C.fit_throughput(p, t)
    assert t_inf == pytest.approx(1234.5, rel=1e-12) and r == pytest.approx(2.5, rel=1e-10)
    # with 1 % noise the fit stays near the truth (the 1/P design is well conditioned here)
    rng = np.random.default_rng(0)
    t_inf, r = C.fit_throughput(p, t * (1 + 0.01 * rng.standard_normal(p.size)))
    assert abs(t_inf / 1234.5 - 1) < 0.03 and abs(r - 2.5) < 0.3
    with pytest.raises(ValueError, match="distinct periods"):
        C.fit_throughput([10, 10], [1.0, 2.0])
    with pytest.raises(ValueError, match="level"):
        C.fit_throughput([1, 10, 100], [1.0, 100.0, 1e4])  # T ∝ P² never levels off


def test_fit_reproduces_appendix_a4():
    t_inf, r = C.fit_throughput(C.SIGMA40M_P, C.SIGMA40M_THROUGHPUT)
    assert round(r, 1) == 3.9  # eq. 19
    assert abs(t_inf / 25_350 - 1) < 2e-3  # printed 25 350; least squares gives 25 319
    pred = C.throughput_model(np.array(C.SIGMA40M_P, float), t_inf, r)
    assert np.max(np.abs(pred / np.array(C.SIGMA40M_THROUGHPUT) - 1)) < 0.01


def test_table1_theoretical_row():
    r = {k: 100 * v for k, v in C.table1_theoretical(100).items()}
    assert r["NanoGPT-5M"] < 0.01 and r["Sigma-40M"] < 0.01
    assert round(r["LLaMA-1B"], 2) == 0.03
    assert round(r["LLaMA-MoE-3B"], 2) == 0.09
    # negative control: two matrices per expert (a non-gated MLP) does not give the printed 0.09 %
    d, b, t = 2048, 66_000 / 2048, 2048
    two = C.msign_flops_per_layer(d) + C.msign_flops([(d, 1360)] * 32)
    assert round(100 * two / (C.step_flops_per_layer(b, t, d) * 100), 2) != 0.09
