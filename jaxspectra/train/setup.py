"""Everything a run needs, validated before any compute: :func:`setup(cfg) -> Setup <setup>`.

Checked without touching the devices: config values, the run / checkpoint directories writable
(nothing is created until every check has passed, so a refused config leaves no empty folders),
device count vs batch and gradient accumulation, the model preset, the data source and path, the
optimiser (built on abstract params) and the ``[monitors]``.
"""

from __future__ import annotations

import dataclasses
import os
from functools import partial
from pathlib import Path
from typing import Any

import jax

from jaxspectra import models
from jaxspectra.train import sharding as shd
from jaxspectra.train.config import Config, ConfigError
from jaxspectra.train.monitor_hooks import config_monitors
from jaxspectra.train.state import (
    init_model_params,
    lr_multiplier_tree,
    model_from_section,
    validate_optimizer,
)


@dataclasses.dataclass
class Setup:
    """Everything validated before compute."""

    cfg: Config
    mesh: Any
    module: Any
    model_config: Any
    dataset: Any
    eval_dataset: Any
    run_dir: Path
    ckpt_dir: Path | None
    abstract_params: Any
    data_seed: int
    device_monitors: list = dataclasses.field(default_factory=list)
    host_monitors: list = dataclasses.field(default_factory=list)

    @property
    def n_devices(self) -> int:
        return int(self.mesh.devices.size)

    @property
    def n_layers(self) -> int | None:
        mc = self.model_config
        return mc.n_layers if isinstance(mc, models.TransformerConfig) else None


def check_writable(path: Path, what: str) -> None:
    """``path`` exists as a writable directory or could be created (creates nothing)."""
    p = path.absolute()
    while not p.exists():
        p = p.parent
    if not p.is_dir() or not os.access(p, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {str(path)!r} is not writable ({str(p)!r} is not a writable "
                          "directory); choose another directory")


def build_dataset(cfg: Config, split: str, vocab_size: int | None) -> Any:
    """The LM dataset ``[data]`` names (a clear error for a missing path or source)."""
    from jaxspectra import data as data_mod

    if cfg.data.data_dir and not Path(cfg.data.data_dir).exists():
        raise ConfigError(
            f"data.data_dir {cfg.data.data_dir!r} does not exist; point it at a prepared data "
            "directory or use data.source='default' (embedded corpus) / 'synthetic'")
    extra = {"vocab_size": vocab_size} if cfg.data.source == "synthetic" and vocab_size else {}
    try:
        return data_mod.build_lm_dataset(cfg.data.source, data_dir=cfg.data.data_dir or None,
                                         tokenizer=cfg.data.tokenizer, split=split, **extra)
    except (FileNotFoundError, KeyError, ValueError) as e:
        raise ConfigError(f"[data] source={cfg.data.source!r} split={split!r}: {e}") from e


def _check_sizes(cfg: Config) -> None:
    t, d = cfg.train, cfg.data
    for key, val in (("train.steps", t.steps), ("data.batch_size", d.batch_size),
                     ("data.seq_len", d.seq_len), ("train.grad_accum", t.grad_accum),
                     ("train.log_every", t.log_every)):
        if val <= 0:
            raise ConfigError(f"{key} must be positive, got {val}")
    if t.sharding not in ("replicated", "fsdp"):
        raise ConfigError(f"train.sharding must be 'replicated' or 'fsdp', got {t.sharding!r}")


def setup(cfg: Config, *, model: tuple[Any, Any] | None = None, dataset: Any = None,
          eval_dataset: Any = None, monitors: bool = True) -> Setup:
    """Validate ``cfg`` and build the model/data objects; nothing is computed on the devices.

    ``model=(module, model_config)`` and ``dataset``/``eval_dataset`` (objects with
    ``batch(seed, step, batch_size, seq_len)``) replace what the config names (Python API).
    ``monitors=False`` skips the ``[monitors]`` (sweeps).
    """
    _check_sizes(cfg)
    d = cfg.data
    shd.maybe_initialize_distributed(cfg.run.distributed)
    try:
        mesh = shd.make_mesh(cfg.run.num_devices)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    n = mesh.devices.size
    if d.batch_size % (n * cfg.train.grad_accum):
        raise ConfigError(
            f"data.batch_size={d.batch_size} must be divisible by device count × grad_accum = "
            f"{n} × {cfg.train.grad_accum}; use a multiple of {n * cfg.train.grad_accum} or set "
            "run.num_devices")
    run_dir = Path(cfg.run.dir)
    check_writable(run_dir, "run.dir")
    ckpt_dir = None
    if cfg.checkpoint.every > 0 or cfg.checkpoint.keep > 0:
        ckpt_dir = Path(cfg.checkpoint.dir) if cfg.checkpoint.dir else run_dir / "checkpoints"
        check_writable(ckpt_dir, "checkpoint.dir")
    module, mcfg = model if model is not None else model_from_section(cfg.model, d.seq_len)
    vocab = getattr(mcfg, "vocab_size", None)
    dataset = dataset if dataset is not None else build_dataset(cfg, "train", vocab)
    if eval_dataset is None:
        eval_dataset = build_dataset(cfg, d.eval_split, vocab) if d.eval_batches > 0 else dataset
    dvocab = getattr(dataset, "vocab_size", None)
    if isinstance(vocab, int) and isinstance(dvocab, int) and dvocab > vocab:
        raise ConfigError(f"the data's vocabulary ({dvocab}) is larger than model vocab_size="
                          f"{vocab}; set model.options.vocab_size")
    abstract_params = jax.eval_shape(partial(init_model_params, module, seq_len=d.seq_len),
                                     jax.random.PRNGKey(0))
    validate_optimizer(cfg.optim, cfg.train.steps, abstract_params,
                       lr_multiplier_tree(mcfg, abstract_params))
    data_seed = d.seed if d.seed >= 0 else cfg.run.seed
    s = Setup(cfg, mesh, module, mcfg, dataset, eval_dataset, run_dir, ckpt_dir,
              abstract_params, data_seed)
    if monitors:
        s.device_monitors, s.host_monitors = config_monitors(
            cfg, module=module, n_layers=s.n_layers,
            probe_inputs=lambda: dataset.batch(data_seed, 0, d.batch_size, d.seq_len)[0])
    _use_compile_cache(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)  # everything checked: now create
    return s


def _use_compile_cache(cfg: Config) -> None:
    if not cfg.run.compile_cache_dir:
        return
    cache = Path(cfg.run.compile_cache_dir).expanduser()
    check_writable(cache, "run.compile_cache_dir")
    if jax.config.jax_compilation_cache_dir != str(cache):
        from jax.experimental.compilation_cache import compilation_cache

        jax.config.update("jax_compilation_cache_dir", str(cache))
        compilation_cache.reset_cache()  # re-open at the new directory
