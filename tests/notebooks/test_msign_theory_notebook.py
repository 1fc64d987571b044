"""notebooks/msign_theory.py (paired .ipynb) executed at small size; asserts on its numbers."""

from __future__ import annotations

import math
import os

import pytest
from _nbrun import ROOT, run_notebook

EPS = 2.220446049250313e-16
SLACK = 1e3 * EPS  # float64 SVD / product of ≤ 20×20 matrices: a few hundred ulps


@pytest.mark.slow  # a kernel start plus ~10 s of float64 linear algebra
def test_msign_theory_notebook(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    res = run_notebook("msign_theory", tmp_path, monkeypatch, size="small")
    assert res["size"] == "small"
    assert res["thm44_max_rel_err"] < SLACK
    assert res["lemma_b1_max_ratio"] <= 1 + SLACK
    ce = res["counterexample"]
    assert ce["bound"] == pytest.approx(4.0) and ce["true_norm"] == pytest.approx(2.0)
    assert ce["chained_alignments"][1] == pytest.approx(1 / math.sqrt(10))
    assert res["thm42_chained_always_holds"] and res["thm42_condition_implies_bound"]
    t45 = res["thm45"]
    assert t45["dA/eq54"] <= 1 + SLACK and t45["dY/eq55"] <= 1 + SLACK
    c45 = t45["counterexample"]
    assert c45["dY_norm"] > c45["eq6_printed"] and c45["dY_norm"] <= c45["eq55"]
    assert res["lipschitz"]["gelu"]["L"] == pytest.approx(1.128904, abs=1e-6)
    assert res["lipschitz"]["gelu"]["argmax"] == pytest.approx(math.sqrt(2), abs=2e-4)
    assert res["lipschitz"]["silu"]["L"] == pytest.approx(1.099839, abs=1e-6)
    assert res["thm46_max_ratio"] <= 1 + SLACK
    assert all(r <= res["thm410_r"] for r in res["thm410_ranks"].values())
    assert res["thm412"]["q>1"] == {"condition_frac": 1.0, "srank_fell_frac": 1.0}
    assert res["thm412"]["q<1"] == {"condition_frac": 0.0, "srank_fell_frac": 0.0}
    assert round(res["eq17"]["R_percent"], 2) == 0.08
    t1 = res["table1_theoretical_percent"]
    assert round(t1["LLaMA-1B"], 2) == 0.03 and round(t1["LLaMA-MoE-3B"], 2) == 0.09
    assert round(res["fit"]["r"], 1) == 3.9 and abs(res["fit"]["T_inf"] / 25_350 - 1) < 2e-3
