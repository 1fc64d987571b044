"""Exact resume: 2k steps straight == 1k + (preempted, restored from orbax) + 1k."""

from __future__ import annotations

import jax
import numpy as np
from _train_standins import ToyLM, base_config

from jaxspectra.train.config import from_dict
from jaxspectra.train.loop import train
from jaxspectra.train.metrics import read_jsonl

STEPS = 2000


def _cfg(run_dir):
    return from_dict(base_config(
        run_dir, steps=STEPS,
        model={"options": {"n_layers": 1, "d_model": 8, "n_heads": 2, "d_mlp": 16,
                           "vocab_size": 17, "max_seq_len": 8}},
        data={"batch_size": 8, "seq_len": 8},
        checkpoint={"every": 500, "keep": 2}, train={"eval_every": 1000},
        run={"num_devices": 1},
    ))


def test_resume_is_exact(tmp_path):
    ds, ev = ToyLM(), ToyLM(offset=10**6)
    straight = train(_cfg(tmp_path / "a"), dataset=ds, eval_dataset=ev)
    first = train(_cfg(tmp_path / "b"), dataset=ds, eval_dataset=ev, stop_after=STEPS // 2)
    assert first.summary["stopped"] == "preempted"
    assert int(first.state.step) == STEPS // 2
    second = train(_cfg(tmp_path / "b"), dataset=ds, eval_dataset=ev)
    assert second.summary["resumed_from"] == STEPS // 2
    assert int(second.state.step) == STEPS

    # identical params (bitwise: the same compiled step on the same restored bits)
    for a, b in zip(jax.tree.leaves(straight.state.params), jax.tree.leaves(second.state.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-7)
    for a, b in zip(jax.tree.leaves(straight.state.opt_state),
                    jax.tree.leaves(second.state.opt_state)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-7)

    # identical loss curve: the in-memory losses and the metrics files
    la = np.array([x for _, x in straight.losses])
    lb = np.array([x for _, x in first.losses] + [x for _, x in second.losses])
    assert la.shape == (STEPS,) and la[-1] < 0.5 * la[0]  # it trained
    np.testing.assert_array_equal(la, lb)
    ra = [r for r in read_jsonl(tmp_path / "a" / "metrics.jsonl") if "loss" in r]
    rb = [r for r in read_jsonl(tmp_path / "b" / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in rb] == list(range(STEPS))
    assert [r["loss"] for r in ra] == [r["loss"] for r in rb]
    ea = [r for r in read_jsonl(tmp_path / "a" / "metrics.jsonl") if "eval/loss" in r]
    eb = [r for r in read_jsonl(tmp_path / "b" / "metrics.jsonl") if "eval/loss" in r]
    assert ea == eb and [r["step"] for r in ea] == [1000, 2000]


class _Preempt:
    """A host monitor that delivers SIGTERM to this process after step 3 (a preemption)."""

    name = "preempt"

    def wants(self, step):
        return step == 3

    def submit(self, step, params):
        import os
        import signal

        os.kill(os.getpid(), signal.SIGTERM)

    def poll(self):
        return []

    def close(self):
        return []


def test_sigterm_checkpoints_and_resumes(tmp_path):
    cfg = from_dict(base_config(tmp_path / "p", steps=10, run={"num_devices": 1},
                                data={"eval_batches": 0}, checkpoint={"every": 0, "keep": 1}))
    first = train(cfg, dataset=ToyLM(), host_monitors=[_Preempt()])
    assert first.summary["stopped"] == "preempted"
    stop = int(first.state.step)
    assert 4 <= stop < 10 and first.summary["last_checkpoint"] == stop
    second = train(cfg, dataset=ToyLM())
    assert second.summary["resumed_from"] == stop and second.summary["stopped"] == "completed"
    assert [s for s, _ in second.losses] == list(range(stop, 10))
