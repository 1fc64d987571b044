"""notebooks/sosd_theory.py (paired .ipynb) executed at small size; asserts on its numbers.

(Named ``…_notebook`` because ``tests/experiments/test_sosd_theory.py`` holds the same basename and
these test directories have no ``__init__.py``: pytest's default import mode would collide.)"""

from __future__ import annotations

import os

import pytest
from _nbrun import ROOT, run_notebook


@pytest.mark.slow  # ~14 s unloaded: a kernel start and two 400-step runs
def test_sosd_theory_notebook(tmp_path, monkeypatch):
    # the kernel must import this checkout's jaxspectra/experiments, not an installed copy
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    res = run_notebook("sosd_theory", tmp_path, monkeypatch, size="small")
    assert res["steps"] == 400 and res["onset"] is not None and res["onset"] < 200
    assert res["lemma_a4_max_ratio"] <= 1 and res["thm45_max_ratio"] <= 1
    assert res["phase1_holds"] and res["eta05_phase1_min_slack"] > 0
    assert res["thm49_max_ratio"] <= 1
    # η = 0.2, d = 16: C₀ = 1, so eq. 94 coincides with ours; at η = 0.5 it is C₀ = 2.5× larger
    assert abs(res["C0"] - 1.0) < 1e-12
    assert abs(res["eta05_eq94_over_ours"] - 2.5) < 1e-9
    ce = res["counterexample"]
    assert ce["grad_sq"] < ce["paper_rhs"] and ce["grad_sq"] >= ce["corrected_rhs"]
