"""Fault injection through the real CLI (a subprocess): interrupts, damaged checkpoints, changed
configs, absurd hyper-parameters, re-runs. Each ends in one clear line and loses no work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jaxspectra.train.metrics import read_jsonl

pytestmark = pytest.mark.slow  # subprocesses: run once in CI (not again in the x64 pass)

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.toml"
BASE = ["--set", "train.progress=false", "--set", "run.num_devices=1",
        "--set", "monitors.attention.every=0", "--set", "monitors.spectral.every=0"]


def _cli(cmd, run_dir, *sets, steps=12, wait=True):
    args = [sys.executable, "-m", "jaxspectra", cmd, "--config", str(SMOKE), *BASE,
            "--set", f'run.dir="{run_dir}"', "--set", f"train.steps={steps}",
            "--set", "train.eval_every=0", "--set", "optim.warmup_steps=1"]
    for s in sets:
        args += ["--set", s]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}
    if not wait:
        return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env)
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)


def _summary(run_dir):
    return json.loads((run_dir / "summary.json").read_text())


def _no_traceback(p):
    assert "Traceback" not in p.stderr, p.stderr[-3000:]


def _ckpt_steps(run_dir):
    d = run_dir / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit())


@pytest.mark.parametrize("sig, reason", [(signal.SIGINT, "interrupted"),
                                         (signal.SIGTERM, "preempted")])
def test_signal_mid_run_checkpoints_and_resumes(tmp_path, sig, reason):
    """Ctrl-C / SIGTERM while saving every step: the step finishes, a checkpoint of it lands
    whole, the summary says why, nothing temporary is left, and the next run resumes."""
    run = tmp_path / "r"
    p = _cli("train", run, "checkpoint.every=1", "checkpoint.keep=3", steps=5000, wait=False)
    deadline = time.time() + 240
    while time.time() < deadline:
        m = run / "metrics.jsonl"
        if m.exists() and len([r for r in read_jsonl(m) if "loss" in r]) >= 4:
            break
        time.sleep(0.2)
    p.send_signal(sig)
    out, err = p.communicate(timeout=240)
    assert p.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    s = _summary(run)
    assert s["stopped"] == reason and 0 < s["steps_done"] < 5000
    assert _ckpt_steps(run)[-1] == s["steps_done"] == s["last_checkpoint"]
    assert not [q for q in (run / "checkpoints").iterdir() if "tmp" in q.name]
    q = _cli("train", run, "checkpoint.every=1", "checkpoint.keep=3",
             steps=s["steps_done"] + 3)
    assert q.returncode == 2 and "train.steps" in q.stderr  # a changed schedule: refused…
    q = _cli("train", run, "checkpoint.every=1", "checkpoint.keep=3",
             'checkpoint.allow_changes=["train.steps"]', steps=s["steps_done"] + 3)
    assert q.returncode == 0, q.stderr[-3000:]  # …unless allowed
    s2 = _summary(run)
    assert s2["resumed_from"] == s["steps_done"] and s2["stopped"] == "completed"
    assert len(list((run / "config_history").glob("*.toml"))) == 2  # the refused one wrote none


@pytest.mark.parametrize("damage", ["truncate", "delete_metadata"])
def test_damaged_latest_checkpoint_falls_back(tmp_path, damage):
    run = tmp_path / "r"
    assert _cli("train", run, "checkpoint.every=4", "checkpoint.keep=3").returncode == 0
    assert _ckpt_steps(run) == [4, 8, 12]
    state = run / "checkpoints" / "12" / "state"
    if damage == "truncate":
        files = [f for f in state.rglob("*") if f.is_file() and f.parent.name == "d"]
        assert files
        for f in files:
            f.write_bytes(f.read_bytes()[:10])
    else:
        (state / "_METADATA").unlink()
    p = _cli("train", run, "checkpoint.every=4", "checkpoint.keep=3",
             'checkpoint.allow_changes=["train.steps"]', steps=16)
    _no_traceback(p)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = [x for x in p.stderr.splitlines() if "unreadable" in x]
    assert len(lines) == 1 and "step 12" in lines[0] and "previous" in lines[0]
    assert _summary(run)["resumed_from"] == 8
    assert len(p.stderr.splitlines()) < 10  # no wall of orbax / asyncio noise


def test_every_checkpoint_damaged_is_one_clear_error(tmp_path):
    run = tmp_path / "r"
    assert _cli("train", run, "checkpoint.every=6", "checkpoint.keep=2").returncode == 0
    for step in _ckpt_steps(run):
        (run / "checkpoints" / str(step) / "state" / "_METADATA").unlink()
    p = _cli("train", run, "checkpoint.every=6", "checkpoint.keep=2")
    assert p.returncode == 2
    _no_traceback(p)
    assert "no readable checkpoint" in p.stderr and "checkpoint.resume=false" in p.stderr


def test_changed_model_shape_is_refused_naming_the_key(tmp_path):
    run = tmp_path / "r"
    assert _cli("train", run, "checkpoint.keep=1").returncode == 0
    p = _cli("train", run, "checkpoint.keep=1", "model.options.vocab_size=80")
    assert p.returncode == 2
    _no_traceback(p)
    err = [x for x in p.stderr.splitlines() if x.strip()]
    assert len(err) == 1 and "model.options.vocab_size: 64 → 80" in err[0]
    assert "Event loop is closed" not in p.stderr


def test_absurd_learning_rate_is_unstable(tmp_path):
    """lr = 1e3: the loss explodes from log(64) to ~1e7; criteria on the train curve from step 0
    and the gradient norms call it unstable (exit 1), not stable."""
    run = tmp_path / "r"
    p = _cli("train", run, "optim.learning_rate=1e3", "checkpoint.keep=0", steps=30)
    assert p.returncode == 1, p.stdout + p.stderr[-2000:]
    v = _summary(run)["verdict"]
    trig = {k for k, c in v["criteria"].items() if c["triggered"]}
    assert v["unstable"] and "train_divergence" in trig


def test_rerun_of_finished_run_keeps_its_summary(tmp_path):
    run = tmp_path / "r"
    assert _cli("train", run, "checkpoint.keep=1").returncode == 0
    before = _summary(run)
    p = _cli("train", run, "checkpoint.keep=1")
    assert p.returncode == 0 and "already at step 12" in p.stdout
    after = _summary(run)
    assert after == before and after["final_loss"] is not None


def test_sweep_beside_a_run_keeps_the_runs_files(tmp_path):
    run = tmp_path / "r"
    assert _cli("train", run, "checkpoint.keep=0").returncode == 0
    before = (run / "summary.json").read_text(), (run / "config.toml").read_text()
    p = _cli("sweep", run, "sweep.seeds=[0, 1]", "checkpoint.keep=0")
    assert p.returncode == 0, p.stderr[-2000:]
    assert ((run / "summary.json").read_text(), (run / "config.toml").read_text()) == before
    sw = json.loads((run / "sweep_summary.json").read_text())
    assert sw["n_members"] == 2 and (run / "member_1" / "summary.json").exists()


def test_refused_config_leaves_no_directories(tmp_path):
    run = tmp_path / "r"
    p = _cli("train", run, "checkpoint.every=5", 'optim.name="nope"')
    assert p.returncode == 2 and "unknown optimizer 'nope'" in p.stderr
    _no_traceback(p)
    assert not run.exists()


def test_log_file_progress_is_a_header_and_few_lines(tmp_path):
    """Not a terminal (a GPU job's log): a start-up header, then ~10 plain lines, not one per
    step; the train and sweep commands alike."""
    run = tmp_path / "r"
    for cmd, extra in (("train", ()), ("sweep", ("sweep.seeds=[0, 1]",))):
        p = _cli(cmd, run / cmd, "train.progress=true", "checkpoint.keep=0", *extra, steps=200)
        assert p.returncode == 0, p.stderr[-2000:]
        lines = [x for x in p.stderr.splitlines() if x.strip()]
        assert lines[0].startswith(f"jaxspectra {cmd}:") and "device" in lines[0]
        steps = [x for x in lines if " step " in x]
        assert 5 <= len(steps) <= 15 and "eta" in steps[-1] and "loss" in steps[-1]
        assert "200/200" in steps[-1]


def test_failing_host_monitor_does_not_end_the_run(tmp_path):
    """A host monitor that raises (as LAPACK does on non-finite weights) is reported once,
    switched off and recorded; the run finishes with the trainer's own verdict."""
    from _train_standins import ToyLM, base_config

    from jaxspectra.train.config import from_dict
    from jaxspectra.train.loop import train

    class Exploding:
        name = "exploding"

        def wants(self, step):
            return step % 2 == 0

        def submit(self, step, params):
            self.last = step

        def poll(self):
            if getattr(self, "last", -1) >= 4:
                raise np.linalg.LinAlgError("Eigenvalues did not converge")
            return []

        def close(self):
            return []

    cfg = from_dict(base_config(tmp_path / "r", steps=10, run={"num_devices": 1}))
    res = train(cfg, dataset=ToyLM(), eval_dataset=ToyLM(offset=9), host_monitors=[Exploding()])
    assert res.summary["stopped"] == "completed"
    assert "LinAlgError" in res.summary["monitor_errors"]["exploding"]
    assert res.summary["monitor_skipped"] == {}  # no bounded-queue monitor in this run
