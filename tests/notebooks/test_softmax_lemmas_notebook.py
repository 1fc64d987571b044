"""notebooks/softmax_lemmas.py (paired .ipynb) executed at small size; asserts on its numbers.

Lemma 1 against eigvalsh, Prop. 1's printed bound failing and Lemma 1's holding, Lemma 3's (13),
(14) holding and its sharper Γ = 0 bound failing on the errata's counterexample."""

from __future__ import annotations

import math
import os

import pytest
from _nbrun import ROOT, run_notebook


@pytest.mark.slow  # a kernel start and ~200 small float64 eigenproblems
def test_softmax_lemmas_notebook(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    res = run_notebook("softmax_lemmas", tmp_path, monkeypatch, size="small")
    l1 = res["lemma1"]
    assert l1["checked"] >= 20 and l1["holds"]
    assert l1["max_lower_over_kappa"] <= 1 + 1e-9 and l1["max_kappa_over_upper"] <= 1 + 1e-9
    p1 = res["prop1"]
    assert p1["max_lemma1_over_kappa"] <= 1 + 1e-9  # Lemma 1's form is a valid lower bound
    ce = p1["counterexample"]
    assert math.isclose(ce["kappa"], 400, rel_tol=1e-3) and ce["paper"] > 1e13 * ce["kappa"]  # 1e16 vs 400
    sw = res["prop1_sweep"]  # the printed bound grows like ε⁻² while κ stays bounded
    assert max(sw["kappa"]) < 1e3 and sw["paper"][-1] > 1e20
    l3 = res["lemma3"]
    assert l3["max_bound13_over_aI"] <= 1 + 1e-12 and l3["max_aU_over_bound14"] <= 1 + 1e-12
    c = l3["counterexample"]
    assert c["a_U"] == pytest.approx(0.2689, abs=1e-4) and c["sharper"] == pytest.approx(0.2119,
                                                                                      abs=1e-4)
    r = l3["repaired"]  # every unimportant score at m − Δ: the sharper bound holds with equality
    assert r["a_U"] == pytest.approx(r["sharper"], rel=1e-12)
