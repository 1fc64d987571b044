"""notebooks/manifold_theory.py (paired .ipynb) executed at small size; asserts on its numbers."""

from __future__ import annotations

import os

import pytest
from _nbrun import ROOT, run_notebook


@pytest.mark.slow  # a kernel start plus a few seconds of float64 Jacobians
def test_manifold_theory_notebook(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    res = run_notebook("manifold_theory", tmp_path, monkeypatch, size="small")
    assert res["size"] == "small"
    assert res["saturation_max_excess"] <= 0  # ‖J‖_F ≤ f(δ) + 8·n·eps on every row
    g = res["n1024_gap6"]
    assert g["jac_fro"] > 40 * g["no_n_bound"] and g["jac_fro"] <= g["f"]
    assert res["logit_spec_max_ratio"] <= 1 + 1e-12 and res["logit_entry_max_ratio"] <= 1 + 1e-12
    assert res["prop41"]["min_jac_fro_stiefel"] >= res["prop41"]["c"] > 0
    p42 = res["prop42"]
    assert all(r["jac_fro"] <= r["bound"] + 1e-13 for r in p42)
    assert p42[-1]["jac_fro"] < 1e-20 < res["prop41"]["c"]  # DGram goes below the Stiefel floor
    tol = res["retraction_tol"]
    mv = res["retraction_max_rel_move"]
    assert mv["sorted_unsorted_norms"] > 1000 * tol  # the authors' retraction moves points …
    assert res["sorted_moves_iff_unsorted"] and res["unsorted_frac"] > 0.5  # … unless sorted
    assert mv["default_unsorted_norms"] < tol and mv["sorted_descending_norms"] < tol
    assert mv["stiefel_on_stiefel"] < tol
    assert res["dgram_sv_equals_colnorm_max_err"] < 1e-13
    assert res["example_norms"] == {"sorted": [2.0, 1.5, 1.0, 0.5], "default": [0.5, 2.0, 1.0, 1.5]}
