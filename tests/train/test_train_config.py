"""Config loading/validation and the bad-input errors raised before any compute."""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from pathlib import Path

import pytest
from _train_standins import ToyLM, base_config

from jaxspectra.train import loop
from jaxspectra.train.config import (
    Config,
    ConfigError,
    apply_overrides,
    dump_toml,
    from_dict,
    load_config,
    to_dict,
)


def test_toml_roundtrip_and_overrides(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[train]\nsteps = 7\n[optim]\nname = "sgd"\n[optim.options]\nmomentum = 0.5\n'
                 '[sweep.axes]\n"optim.learning_rate" = [0.1, 0.2]\n')
    cfg = load_config(p, {"optim.learning_rate": "3e-3", "train.progress": "false",
                          "model.options.d_model": "32", "optim.options.nesterov": "true"})
    assert cfg.train.steps == 7 and cfg.optim.name == "sgd" and cfg.optim.learning_rate == 3e-3
    assert cfg.train.progress is False
    assert cfg.model.options == {"d_model": 32}
    assert cfg.optim.options == {"momentum": 0.5, "nesterov": True}
    assert cfg.sweep.axes == {"optim.learning_rate": [0.1, 0.2]}
    # the dump is valid TOML that loads back to the same config
    (tmp_path / "d.toml").write_text(dump_toml(cfg))
    assert load_config(tmp_path / "d.toml") == cfg
    assert to_dict(from_dict(to_dict(cfg))) == to_dict(cfg)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.steps = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "data, match",
    [
        ({"train": {"stpes": 3}}, r"train\.stpes.*known keys of \[train\].*'steps'"),
        ({"trian": {}}, r"unknown config section.*known sections"),
        ({"train": {"steps": "ten"}}, r"train\.steps.*integer"),
        ({"train": {"progress": 1}}, r"train\.progress.*true/false"),
    ],
)
def test_unknown_or_mistyped_keys_in_file(tmp_path, data, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(data)


@pytest.mark.parametrize(
    "key, match",
    [
        ("optim.lr", r"unknown key 'lr'.*known keys of \[optim\].*learning_rate"),
        ("optimizer.name", r"unknown section 'optimizer'"),
        ("steps", r"must be section\.key"),
        ("train.steps.x", r"not a table"),
    ],
)
def test_unknown_set_keys(key, match):
    with pytest.raises(ConfigError, match=match):
        apply_overrides(Config(), {key: "1"})


@pytest.fixture
def no_compute(monkeypatch):
    """Fail the test if the loop gets as far as building compiled steps."""

    def boom(*a, **k):
        raise AssertionError("compute started before validation failed")

    monkeypatch.setattr(loop, "Engine", boom)


def _train(d, **kw):
    return loop.train(from_dict(d), **kw)


def test_batch_not_divisible_by_devices(tmp_path, no_compute, n_devices):
    d = base_config(tmp_path / "r", data={"batch_size": n_devices + 1})
    with pytest.raises(ConfigError, match=r"batch_size=9 must be divisible by device count"):
        _train(d)
    d = base_config(tmp_path / "r", data={"batch_size": 8}, train={"grad_accum": 3})
    with pytest.raises(ConfigError, match=r"divisible by device count × grad_accum"):
        _train(d)


def test_heads_not_dividing_width(tmp_path, no_compute):
    d = base_config(tmp_path / "r", model={"options": {"d_model": 18, "n_heads": 4}})
    with pytest.raises(ConfigError, match=r"\[model\].*18.*4|divisible"):
        _train(d)
    assert not (tmp_path / "r" / "metrics.jsonl").exists()


def test_unknown_model_optimizer_schedule(tmp_path, no_compute):
    with pytest.raises(ConfigError, match="unknown model"):
        _train(base_config(tmp_path / "r", model={"name": "gpt-nope"}))
    with pytest.raises(ConfigError, match="unknown optimizer"):
        _train(base_config(tmp_path / "r", optim={"name": "adamz"}))
    with pytest.raises(ConfigError, match=r"unknown option|weight_dekay"):
        _train(base_config(tmp_path / "r", optim={"options": {"weight_dekay": 0.1}}))
    with pytest.raises(ConfigError, match="unknown schedule"):
        _train(base_config(tmp_path / "r", optim={"schedule": "cosinus"}))


def test_missing_data_path(tmp_path, no_compute):
    d = base_config(tmp_path / "r", data={"source": "tinyshakespeare",
                                         "data_dir": str(tmp_path / "nowhere")})
    with pytest.raises(ConfigError, match=r"nowhere.*does not exist.*default"):
        _train(d)


def test_seq_len_beyond_model(tmp_path, no_compute):
    with pytest.raises(ConfigError, match=r"seq_len=16 exceeds"):
        _train(base_config(tmp_path / "r", data={"seq_len": 16}))


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_dirs(tmp_path, no_compute):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match=r"run\.dir .*not writable"):
            _train(base_config(ro / "run"))
        with pytest.raises(ConfigError, match=r"checkpoint\.dir .*not writable"):
            _train(base_config(tmp_path / "ok", checkpoint={"every": 5, "dir": str(ro / "c")}))
    finally:
        ro.chmod(0o700)


def test_unwritable_dirs_as_file(tmp_path, no_compute):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ConfigError, match=r"run\.dir .*not writable"):
        _train(base_config(f / "run"))
    with pytest.raises(ConfigError, match=r"checkpoint\.dir .*not writable"):
        _train(base_config(tmp_path / "ok", checkpoint={"every": 5, "dir": str(f / "c")}))


def test_config_dumped_into_run_dir(tmp_path):
    d = base_config(tmp_path / "r", steps=3)
    res = loop.train(from_dict(d), dataset=ToyLM(), eval_dataset=ToyLM(offset=99))
    assert load_config(Path(res.run_dir) / "config.toml") == from_dict(d)


def test_manifold_optimizer_with_mup_multipliers_is_rejected(tmp_path, no_compute):
    d = base_config(tmp_path / "r", optim={"name": "hetero", "options": {"warmup_steps": 1}},
                    model={"options": {"mup": True}})
    with pytest.raises(ConfigError, match=r"lr_multipliers=false"):
        _train(d)


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-inf", "+inf", "Infinity", "-Infinity"])
@pytest.mark.parametrize("key", ["optim.learning_rate", "train.steps", "optim.options.b1",
                                 "sweep.axes.optim.learning_rate"])
def test_non_finite_numbers_are_rejected_in_any_spelling(key, text):
    """TOML reads ``nan``/``inf`` as floats and ``NaN``/``Infinity`` as strings: both refused,
    naming the key, in fields, free tables and sweep axes alike."""
    value = f"[1e-3, {text}]" if key.startswith("sweep") else text
    with pytest.raises(ConfigError, match=rf"{re.escape(key)}.*not a finite number"):
        apply_overrides(Config(), {key: value})


def test_non_finite_in_a_file_is_rejected(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[optim]\nlearning_rate = nan\n")
    with pytest.raises(ConfigError, match="optim.learning_rate.*not a finite number"):
        load_config(p)


def test_a_string_field_may_read_inf():
    assert from_dict({"run": {"dir": "inf"}, "data": {"source": "NaN"}}).run.dir == "inf"


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("optim.learning_rate", "-1e-3", r"'optim\.learning_rate' must be > 0, got -0\.001"),
        ("optim.learning_rate", "0", r"'optim\.learning_rate' must be > 0"),
        ("optim.weight_decay", "-0.5", r"'optim\.weight_decay' must be ≥ 0.*-1 to keep"),
        ("optim.clip_norm", "-1", r"'optim\.clip_norm' must be ≥ 0.*0 = no clipping"),
        ("optim.warmup_steps", "-1", r"'optim\.warmup_steps' must be ≥ 0"),
        ("train.steps", "0", r"'train\.steps' must be ≥ 1"),
        ("train.log_every", "0", r"'train\.log_every' must be ≥ 1"),
        ("train.grad_accum", "0", r"'train\.grad_accum' must be ≥ 1"),
        ("train.eval_every", "-1", r"'train\.eval_every' must be ≥ 0"),
        ("data.batch_size", "0", r"'data\.batch_size' must be ≥ 1"),
        ("checkpoint.keep", "-1", r"'checkpoint\.keep' must be ≥ 0"),
        ("instability.spike_after", "1.5", r"'instability\.spike_after' must be in \[0, 1\]"),
        ("instability.explode_factor", "1", r"'instability\.explode_factor' must be > 1"),
    ],
)
def test_out_of_range_values_are_rejected(key, value, match):
    with pytest.raises(ConfigError, match=match):
        apply_overrides(Config(), {key: value})


def test_out_of_range_sweep_axis_values_are_rejected():
    with pytest.raises(ConfigError, match=r"sweep axis 'optim\.learning_rate'.*must be > 0"):
        apply_overrides(Config(), {"sweep.axes.optim.learning_rate": "[1e-3, -1e-3]"})
    assert apply_overrides(Config(), {"sweep.axes.optim.learning_rate": "[1e-3, 2e-3]"})


def test_every_range_names_a_real_key_and_its_default_is_legal():
    """RANGES is checked on the defaults too (a default outside its own range would make every
    config fail), and each entry names an existing field."""
    from jaxspectra.train.config import RANGES

    d = to_dict(Config())
    for key in RANGES:
        sec, field = key.split(".")
        assert field in d[sec], key
    from_dict({})  # the defaults pass


def test_weight_decay_unset_sentinel_and_edges_are_legal():
    assert apply_overrides(Config(), {"optim.weight_decay": "-1"}).optim.weight_decay == -1.0
    assert apply_overrides(Config(), {"optim.weight_decay": "0"}).optim.weight_decay == 0.0
    assert apply_overrides(Config(), {"instability.spike_after": "1"}).instability.spike_after == 1


def test_absurd_but_legal_values_warn_and_load():
    from jaxspectra.train.config import ConfigWarning

    with pytest.warns(ConfigWarning, match=r"optim\.learning_rate.*1000"):
        cfg = apply_overrides(Config(), {"optim.learning_rate": "1e3"})
    assert cfg.optim.learning_rate == 1e3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        apply_overrides(Config(), {"optim.learning_rate": "10"})  # at the threshold: silent


def test_lr_groups_from_toml_table_and_set():
    """optim.lr_groups is a free table: a TOML [optim.lr_groups] and --set optim.lr_groups.<g>."""
    assert from_dict({"optim": {"lr_groups": {"embedding": 5.0}}}).optim.lr_groups == \
        {"embedding": 5.0}
    assert load_config(None, {"optim.lr_groups.head": "0.5"}).optim.lr_groups == {"head": 0.5}
