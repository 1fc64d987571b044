"""``jaxspectra train`` / ``sweep`` end to end on the shipped configs (synthetic data)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxspectra.train.cli import sweep_command, train_command
from jaxspectra.train.config import load_config
from jaxspectra.train.metrics import read_jsonl
from jaxspectra.train.peak import peak_tflops

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name", ["smoke", "tiny-default", "nanogpt-5m", "gpt2-small"])
def test_shipped_configs_validate(name):
    cfg = load_config(CONFIGS / f"{name}.toml")
    raw = tomllib.loads((CONFIGS / f"{name}.toml").read_text())
    assert cfg.model.name == raw["model"]["name"]


def test_train_command_smoke(tmp_path, capsys):
    run = tmp_path / "run"
    rc = train_command(str(CONFIGS / "smoke.toml"),
                       {"run.dir": str(run), "train.steps": "6", "train.eval_every": "3",
                        "checkpoint.every": "3", "data.seq_len": "16", "train.progress": "false",
                        "optim.warmup_steps": "1", "run.num_devices": "1",
                        "run.compile_cache_dir": str(tmp_path / "xla"),
                        "monitors.attention.every": "4", "monitors.spectral.every": "3"})
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "completed at step 6/6" in out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped"] == "completed" and summary["param_counts"]["total"] > 0
    # a CPU has no known peak: no MFU anywhere (it read 0.0% before jaxspectra.train.peak)
    no_peak = peak_tflops(jax.devices()[0]) is None
    assert (summary["mfu"] is None) == no_peak
    assert summary["verdict"]["unstable"] is False
    recs = read_jsonl(run / "metrics.jsonl")
    assert recs[0]["step"] == 0 and "params/total" in recs[0]  # param counts logged once
    assert sum("params/total" in r for r in recs) == 1
    assert any("tokens_per_s" in r for r in recs)
    assert any("mfu" in r for r in recs) != no_peak
    assert [r["step"] for r in recs if "eval/loss" in r] == [3, 6]
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.isdigit()) == ["3",
                                                                                          "6"]
    assert load_config(run / "config.toml").train.steps == 6
    # smoke.toml's monitors: device attention at 0 and 4 (4 is off the log_every=5 grid), host
    # spectral (params after t and t+1) with its one-step ΔΣ at 0 and 3, spectra in the npz
    att = "attention/layer_0/head_0/entropy"
    assert sorted(r["step"] for r in recs if att in r) == [0, 4]
    dsig = "spectral/attention/block_0/q/delta_sigma"
    assert sorted(r["step"] for r in recs if dsig in r) == [0, 3]
    assert all(r[dsig] > 0 for r in recs if dsig in r)
    for t in (0, 3):
        assert "spectral__attention__block_0__q__sv" in np.load(run / "arrays" / f"step_{t}.npz")
    assert any((tmp_path / "xla").iterdir())  # the persistent compilation cache was used


def test_cli_bad_input_is_one_clear_line(tmp_path, capsys):
    rc = train_command(str(CONFIGS / "smoke.toml"), {"optim.lr": "1e-3"})
    err = capsys.readouterr().err
    assert rc == 2 and "unknown key 'lr'" in err and "learning_rate" in err
    rc = sweep_command(str(CONFIGS / "smoke.toml"),
                       {"run.dir": str(tmp_path / "s"), "sweep.axes.optim.msign.period": "[1, 2]"})
    err = capsys.readouterr().err
    assert rc == 2 and "lax.cond" in err
    rc = train_command(str(tmp_path / "missing.toml"), {})
    assert rc == 2 and "does not exist" in capsys.readouterr().err
    for text in ("NaN", "nan", "-inf"):  # any spelling: one line naming the key, before compute
        rc = train_command(str(CONFIGS / "smoke.toml"), {"optim.learning_rate": text})
        err = capsys.readouterr().err
        assert rc == 2 and len(err.strip().splitlines()) == 1
        assert "optim.learning_rate" in err and "not a finite number" in err
    rc = sweep_command(str(CONFIGS / "smoke.toml"), {"optim.learning_rate": "-1e-3"})
    err = capsys.readouterr().err
    assert rc == 2 and "'optim.learning_rate' must be > 0" in err


def test_absurd_value_warns_in_one_line(tmp_path, capsys):
    """lr > 10 is legal (the fault tests train at 1e3 and expect *unstable*): one warning line,
    said once although the config is validated twice (file, then overrides)."""
    from jaxspectra.train.cli import load_and_warn

    cfg = load_and_warn("train", str(CONFIGS / "smoke.toml"), {"optim.learning_rate": "1e3"})
    err = capsys.readouterr().err
    assert cfg.optim.learning_rate == 1e3
    assert err.count("jaxspectra train: warning: config key 'optim.learning_rate'") == 1


def test_tensorboard_writer_when_installed(tmp_path, monkeypatch):
    """With tensorboardX importable, scalars also go to TensorBoard (a stand-in module records
    the calls; the real package is an optional extra)."""
    import sys
    import types

    calls = []

    class SummaryWriter:
        def __init__(self, logdir):
            calls.append(("open", logdir))

        def add_scalar(self, k, v, step):
            calls.append((k, v, step))

        def close(self):
            calls.append(("close",))

    monkeypatch.setitem(sys.modules, "tensorboardX", types.SimpleNamespace(
        SummaryWriter=SummaryWriter))
    from jaxspectra.train.metrics import MetricsWriter

    w = MetricsWriter(tmp_path)
    w.write(3, {"loss": 2.5, "lr": np.float32(0.1), "spectrum": np.arange(3.0)})
    w.close()
    assert calls[0] == ("open", str(tmp_path / "tb")) and ("loss", 2.5, 3) in calls
    assert any(c[0] == "lr" and abs(c[1] - 0.1) < 1e-7 for c in calls) and calls[-1] == ("close",)
    assert not any(c[0] == "spectrum" for c in calls)  # arrays go to arrays/, not scalars


def test_custom_hook_emits_into_metrics(tmp_path):
    """A user's host hook runs after every ``every``-th update and its records land in
    metrics.jsonl under their step (the README's example, on the test stand-ins)."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from _train_standins import ToyLM, base_config

    from jaxspectra.train import Hook, train
    from jaxspectra.train.config import from_dict

    seen = []

    class Probe(Hook):
        every = 4

        def __call__(self, info):
            seen.append(info.step)
            info.control.emit(info.step, {"probe/step_seen": info.step})

    res = train(from_dict(base_config(tmp_path / "r", steps=10, run={"num_devices": 1})),
                dataset=ToyLM(), eval_dataset=ToyLM(offset=5), hooks=[Probe()])
    assert seen == [4, 8]
    recs = [r for r in read_jsonl(res.run_dir / "metrics.jsonl") if "probe/step_seen" in r]
    assert [(r["step"], r["probe/step_seen"]) for r in recs] == [(4, 4), (8, 8)]
