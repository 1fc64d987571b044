"""experiments/sosd_theory.py: the smoke run through the CLI, the override parsing, and every
criterion returning *fail* on data built to violate it (negative controls)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxspectra import cli
from jaxspectra.experiments import sosd_theory as E

RESULTS = ("lemma_a4", "thm45_epsilon", "sosd_onset", "phase1_corrected", "two_phase",
           "thm49_gradient_bounds")


def test_protocol_and_discovery():
    assert E.DESCRIPTION and {"smoke", "full"} <= set(E.PRESETS) and callable(E.run)
    assert "sosd_theory" in cli._experiment_modules()
    for preset in E.PRESETS:
        E.resolve_config(preset, {})


def test_overrides_are_validated_and_converted():
    cfg = E.resolve_config("smoke", {"steps": "1e3", "eta": "0.5", "d": "8"})
    assert cfg["steps"] == 1000 and isinstance(cfg["steps"], int) and cfg["eta"] == 0.5
    with pytest.raises(ValueError, match="unknown override 'stepz'.*known keys"):
        E.resolve_config("smoke", {"stepz": "3"})
    with pytest.raises(ValueError, match="steps=.*integer"):
        E.resolve_config("smoke", {"steps": "2.5"})
    with pytest.raises(ValueError, match="eta must be positive"):
        E.resolve_config("smoke", {"eta": "-1"})
    with pytest.raises(ValueError, match="onset_frac"):
        E.resolve_config("smoke", {"onset_frac": "1.5"})
    with pytest.raises(ValueError, match="unknown preset"):
        E.resolve_config("huge", {})


def test_onset_definition():
    x = np.r_[np.linspace(0.1, 1.0, 10), 1.0 / np.arange(1, 200)]
    # max 1.0; stays below 0.05 from the first index where 1/k < 0.05, k = 21 → index 10 + 20
    assert E.onset(x, 0.05) == 30
    assert E.onset(np.linspace(0, 1, 50), 0.05) is None


@pytest.mark.slow
def test_smoke_run_through_cli(tmp_path):
    assert cli.main(["reproduce", "sosd_theory", "--preset", "smoke", "--out",
                     str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["passed"] and summary["wall_s"] < 90
    checks = {c["key"]: c for c in summary["seeds"][0]["checks"]}
    assert set(RESULTS) <= set(checks)
    assert all(checks[k]["ok"] for k in RESULTS)
    report = (tmp_path / "report.md").read_text()
    assert "Lemma A.4 (App. A, eq. 18)" in report and "**PASSED**" in report
    for tag in ("dynamics", "phase1", "phase2"):
        assert (tmp_path / f"sosd_theory_smoke_{tag}.png").stat().st_size > 10_000


# ------------------------------------------------------------------------ negative controls


@pytest.fixture(scope="module")
def analysed():
    cfg = E.resolve_config("smoke", {"steps": "400"})
    task, tr = E.simulate(cfg, 0)
    return cfg, E.analyse(tr, task, cfg["eta"])


def _by_key(an, cfg):
    return {c.key: c.ok for c in E.checks(an, cfg)}


def test_results_hold_on_the_unperturbed_run(analysed):
    cfg, an = analysed
    ok = _by_key(an, cfg)
    assert all(ok[k] for k in RESULTS), ok


def _tr(an, **fields):
    return {**an, "tr": an["tr"]._replace(**fields)}


def test_each_criterion_fails_on_violating_data(analysed):
    cfg, an = analysed
    on = E.onset(an["mean_delta"], cfg["onset_frac"])
    assert on is not None
    fro = an["fro"].copy()
    fro[201, 0] = fro[200, 0] * 0.999  # one Frobenius norm shrinks at one step
    sv0 = an["tr"].sv.copy()
    sv0[50, 1, -1] = 0.0  # rank-deficient W_K at one step
    gh = an["tr"].gh_fro.copy()
    gh[300] = 0.0
    md = an["mean_delta"].copy()
    md[-5:] = md.max()  # the SD variation flares up again at the end
    lg = an["tr"].logit_gap.copy()
    lg[on + 10] = -0.1  # a token misclassified after the onset
    cases = {
        "norms_increase": {**an, "fro": fro},
        "condition_bounded": _tr(an, sv=sv0),
        "gh_nonvanishing": _tr(an, gh_fro=gh),
        "lemma_a4": {**an, "a4": an["delta"] * 0.5},
        "thm45_epsilon": {**an, "eps": an["delta"] * 0.9},
        "sosd_onset": {**an, "mean_delta": md},
        "assumption_4_7": _tr(an, logit_gap=lg),
        "phase1_corrected": {**an, "phase1": an["dL"] * 1.01},
        "two_phase": {**an, "dL": np.full_like(an["dL"], 1e-3)},
        "thm49_gradient_bounds": {**an, "g49": an["tr"].grad_fro * 0.99},
    }
    for key, bad in cases.items():
        ok = _by_key(bad, cfg)
        assert not ok[key], f"criterion {key} did not fail on data built to violate it"
    # the smoothness half of Assumption 4.7: η·β ≥ 2 after the onset
    curv = an["tr"].curv_seg.copy()
    curv[on + 3] = 2.5 / cfg["eta"]
    assert not _by_key(_tr(an, curv_seg=curv), cfg)["assumption_4_7"]
