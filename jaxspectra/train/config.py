"""Run configuration: frozen dataclasses loaded from TOML, overridden by ``--set a.b=value``.

A config file has one table per section (every key optional; defaults below)::

    [run]          dir, seed, num_devices (0 = all), compile_cache_dir, distributed
    [model]        name, dtype (compute), param_dtype, [model.options] (fields of the preset)
    [data]         source, data_dir, tokenizer, batch_size, seq_len, eval_batches, eval_split,
                   seed
    [optim]        name, learning_rate, schedule, warmup_steps, clip_norm, weight_decay,
                   lr_multipliers, [optim.lr_groups], [optim.options], [optim.schedule_options], [optim.msign]
    [train]        steps, grad_accum, eval_every, log_every, sharding, fsdp_min_size, peak_tflops,
                   progress, stop_on_nonfinite
    [checkpoint]   every, keep, async_save, dir, resume, allow_changes
    [instability]  thresholds of :mod:`jaxspectra.train.instability`
    [sweep]        seeds, [sweep.axes] ("section.key" = [values, ...])
    [monitors]     spectral_every, [monitors.<name>] tables of
                   :func:`jaxspectra.monitors.build_monitors` (spectral, heavy_tail, attention,
                   jacobian, grad_norms)

Monitors (default: all off). A ``[monitors.<name>]`` table turns its monitor on when it sets
``every > 0`` (``every = 0`` or no table: off); its other keys are the registry's options and are
validated here (unknown → error listing the known ones). ``monitors.spectral_every = k > 0``
appends the optax :func:`~jaxspectra.monitors.spectral_monitor` last in the optimiser chain
(σ_max, stable rank, one-step ΔΣ every ``k`` steps, logged by the trainer)::

    [monitors]
    spectral_every = 50
    [monitors.attention]
    every = 500
    probe_batch = 2

The learning rate at step ``t`` is ``optim.learning_rate · build_schedule(optim.schedule, 1.0,
…)(t)``: the schedule is built at peak 1 and scaled (so a sweep can vmap the peak), hence
**absolute** schedule options are given relative to the peak (``cosine``'s ``floor = 0.1`` means
0.1 × peak). ``optim.weight_decay ≥ 0`` overrides ``optim.options.weight_decay`` and can be swept.

Everything is validated by :func:`load_config` / :func:`from_dict` before any compute: an unknown
key (in the file or in ``--set``) is an error that lists the known keys of its section, a value of
the wrong type is an error naming the key, a non-finite number in any spelling (``nan``, ``NaN``,
``inf``, ``-Infinity``, in any section or table) and a value outside its range (:data:`RANGES`:
``optim.learning_rate > 0``, ``train.steps ≥ 1``, ``optim.weight_decay ≥ 0`` or the ``-1`` "unset"
sentinel, ...) are errors naming the key and the fix. Absurd but legal values (:data:`ABSURD`,
e.g. ``optim.learning_rate > 10``) raise a :class:`ConfigWarning` and the run goes on. The resolved config is dumped into the run directory
as ``config.toml`` (:func:`dump_toml`), so ``jaxspectra train --config <run>/config.toml``
re-runs it.

Example:
  >>> cfg = from_dict({"train": {"steps": 10}, "data": {"batch_size": 4}})
  >>> cfg.train.steps, cfg.data.batch_size
  (10, 4)
  >>> apply_overrides(cfg, {"optim.learning_rate": "3e-3"}).optim.learning_rate
  0.003
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import tomllib
import warnings
from pathlib import Path
from typing import Any, get_type_hints


class ConfigError(ValueError):
    """A configuration problem found before any compute (names the key and the fix)."""


class ConfigWarning(UserWarning):
    """A legal but probably unintended value (the run goes on)."""


@dataclasses.dataclass(frozen=True)
class RunSection:
    dir: str = "runs/train"
    seed: int = 0
    num_devices: int = 0  # 0 = every visible device
    compile_cache_dir: str = ""  # "" = no persistent compilation cache
    distributed: bool = False  # call jax.distributed.initialize() (multi-host)


@dataclasses.dataclass(frozen=True)
class ModelSection:
    name: str = "gpt-tiny"
    dtype: str = "float32"  # compute dtype (bfloat16 on accelerators)
    param_dtype: str = "float32"
    options: dict = dataclasses.field(default_factory=dict)  # preset field overrides


@dataclasses.dataclass(frozen=True)
class DataSection:
    source: str = "synthetic"
    data_dir: str = ""
    tokenizer: str = "byte"
    batch_size: int = 8  # global batch (all devices, all micro-batches)
    seq_len: int = 32
    eval_batches: int = 2
    eval_split: str = "val"  # "valid" for wikitext2
    seed: int = -1  # -1 = run.seed


@dataclasses.dataclass(frozen=True)
class OptimSection:
    name: str = "adamw"
    learning_rate: float = 1e-3
    schedule: str = "constant"
    warmup_steps: int = 0
    clip_norm: float = 1.0  # 0 = no clipping
    weight_decay: float = -1.0  # -1 (UNSET_WEIGHT_DECAY): leave the optimiser's default
    lr_multipliers: bool = True  # apply the model's per-leaf LR multipliers (muP)
    # per-group LR factors, e.g. {embedding = 5.0, head = 0.5} (groups: jaxspectra.groups.GROUPS);
    # multiplied into the muP multipliers; {} = none (paper 002's LR_head vs LR_body split)
    lr_groups: dict = dataclasses.field(default_factory=dict)
    options: dict = dataclasses.field(default_factory=dict)
    schedule_options: dict = dataclasses.field(default_factory=dict)
    msign: dict = dataclasses.field(default_factory=dict)  # {} = no MSign wrapper


@dataclasses.dataclass(frozen=True)
class TrainSection:
    steps: int = 100
    grad_accum: int = 1
    eval_every: int = 0  # 0 = only at the end
    log_every: int = 1
    sharding: str = "replicated"  # or "fsdp"
    fsdp_min_size: int = 1024  # arrays smaller than this stay replicated under fsdp
    # per-device peak for MFU, TFLOP/s; 0 = look it up from the device kind
    # (jaxspectra.train.peak: bf16 dense; unknown kinds such as CPUs → no MFU reported)
    peak_tflops: float = 0.0
    progress: bool = True
    stop_on_nonfinite: bool = True


@dataclasses.dataclass(frozen=True)
class CheckpointSection:
    every: int = 0  # 0 = no periodic checkpoints (the final one is still written if keep > 0)
    keep: int = 2
    async_save: bool = True
    dir: str = ""  # "" = <run.dir>/checkpoints
    resume: bool = True  # resume from the latest checkpoint when one exists
    # config keys ("section.key", or "section" for a whole section) a resume may change; any
    # other difference from the checkpoint's config is refused, naming the keys
    allow_changes: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class InstabilitySection:
    spike_after: float = 0.1  # fraction of training after which spikes count
    spike_delta: float = 1.0  # nats above the best loss so far
    drift_window: float = 0.2  # final fraction of evaluations
    drift_delta: float = 0.1  # nats above the best loss
    degrade_delta: float = 0.5  # nats above the best loss = "degraded"
    recover_delta: float = 0.2  # must come back within this many nats of the best
    early_fraction: float = 1.0  # non-finite before this fraction of steps = early termination
    diverge_delta: float = 1.0  # train loss (final-window mean) above the step-0 loss, nats
    explode_factor: float = 100.0  # gradient norm above this × its running median = explosion
    explode_after: int = 10  # steps of history before the explosion criterion applies


@dataclasses.dataclass(frozen=True)
class SweepSection:
    seeds: list = dataclasses.field(default_factory=list)  # [] = [run.seed]
    axes: dict = dataclasses.field(default_factory=dict)  # "optim.learning_rate" = [..]


@dataclasses.dataclass(frozen=True)
class MonitorsSection:
    spectral_every: int = 0  # > 0: optax spectral_monitor(k) last in the chain
    # one table per monitor of jaxspectra.monitors.registry.OPTIONS; on when it sets every > 0
    spectral: dict = dataclasses.field(default_factory=dict)
    heavy_tail: dict = dataclasses.field(default_factory=dict)
    attention: dict = dataclasses.field(default_factory=dict)
    jacobian: dict = dataclasses.field(default_factory=dict)
    grad_norms: dict = dataclasses.field(default_factory=dict)

    def enabled(self) -> dict[str, dict]:
        """``{name: options}`` of the monitors that are on (``every > 0``)."""
        return {f.name: dict(getattr(self, f.name)) for f in dataclasses.fields(self)
                if f.name != "spectral_every" and getattr(self, f.name).get("every", 0) > 0}


@dataclasses.dataclass(frozen=True)
class Config:
    run: RunSection = RunSection()
    model: ModelSection = ModelSection()
    data: DataSection = DataSection()
    optim: OptimSection = OptimSection()
    train: TrainSection = TrainSection()
    checkpoint: CheckpointSection = CheckpointSection()
    instability: InstabilitySection = InstabilitySection()
    sweep: SweepSection = SweepSection()
    monitors: MonitorsSection = MonitorsSection()


_SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}
_SECTION_TYPES = get_type_hints(Config)
# dict-valued fields: free-form tables whose keys the consumer validates
_MONITOR_TABLES = {f.name for f in dataclasses.fields(MonitorsSection)} - {"spectral_every"}
_FREE_TABLES = {"options", "schedule_options", "msign", "lr_groups", "axes"} | _MONITOR_TABLES


def _validate_monitors(sec: MonitorsSection) -> None:
    """Names, option names and option types of the ``[monitors.<name>]`` tables."""
    from jaxspectra.monitors.registry import OPTIONS

    if sec.spectral_every < 0:
        raise ConfigError(f"monitors.spectral_every must be ≥ 0 (0 = off), got "
                          f"{sec.spectral_every}")
    for name in sorted(_MONITOR_TABLES):
        opts = getattr(sec, name)
        known = OPTIONS[name]
        bad = set(opts) - set(known)
        if bad:
            raise ConfigError(f"unknown key(s) {sorted(f'monitors.{name}.{k}' for k in bad)}; "
                              f"known keys of [monitors.{name}]: {sorted(known)}")
        if opts and "every" not in opts:
            raise ConfigError(f"[monitors.{name}] sets {sorted(opts)} but not 'every': set "
                              f"monitors.{name}.every = <steps> to turn it on (0 = off)")
        for k, v in opts.items():
            want = type(known[k]) if known[k] is not None else int
            ok = isinstance(v, want) and (want is bool or not isinstance(v, bool))
            if not ok:
                raise ConfigError(f"config key 'monitors.{name}.{k}' expects "
                                  f"{want.__name__}, got {v!r}")
        if opts.get("every", 0) < 0:
            raise ConfigError(f"monitors.{name}.every must be ≥ 0 (0 = off), got {opts['every']}")
    if sec.spectral_every > 0 and sec.spectral.get("every", 0) > 0:
        raise ConfigError("monitors.spectral_every (optax, in the chain) and [monitors.spectral] "
                          "write the same spectral/... keys: turn one off (spectral_every = 0 or "
                          "monitors.spectral.every = 0)")

#: ``optim.weight_decay`` sentinel: leave the optimiser's own default.
UNSET_WEIGHT_DECAY = -1.0

#: ``"section.key": (low, low_inclusive, high, fix)`` — the legal range of each number (``None``:
#: unbounded on that side) and what to write instead; checked by :func:`from_dict`.
RANGES: dict[str, tuple[float | None, bool, float | None, str]] = {
    "run.num_devices": (0, True, None, "0 = every visible device"),
    "data.batch_size": (1, True, None, "the global batch, e.g. 8"),
    "data.seq_len": (1, True, None, "e.g. 32"),
    "data.eval_batches": (0, True, None, "0 = no evaluation"),
    "data.seed": (-1, True, None, "-1 = run.seed"),
    "optim.learning_rate": (0, False, None, "a positive peak learning rate, e.g. 1e-3"),
    "optim.warmup_steps": (0, True, None, "0 = no warm-up"),
    "optim.clip_norm": (0, True, None, "0 = no clipping"),
    "optim.weight_decay": (0, True, None, "a decay ≥ 0, or -1 to keep the optimiser's default"),
    "train.steps": (1, True, None, "the number of updates, e.g. 100"),
    "train.grad_accum": (1, True, None, "1 = no accumulation"),
    "train.eval_every": (0, True, None, "0 = evaluate only at the end"),
    "train.log_every": (1, True, None, "1 = log every step"),
    "train.fsdp_min_size": (0, True, None, "e.g. 1024"),
    "train.peak_tflops": (0, True, None, "0 = look the device's peak up"),
    "checkpoint.every": (0, True, None, "0 = no periodic checkpoints"),
    "checkpoint.keep": (0, True, None, "0 = no checkpoints"),
    "instability.spike_after": (0, True, 1, "a fraction of training in [0, 1]"),
    "instability.spike_delta": (0, True, None, "nats ≥ 0"),
    "instability.drift_window": (0, False, 1, "a fraction of the evaluations in (0, 1]"),
    "instability.drift_delta": (0, True, None, "nats ≥ 0"),
    "instability.degrade_delta": (0, True, None, "nats ≥ 0"),
    "instability.recover_delta": (0, True, None, "nats ≥ 0"),
    "instability.early_fraction": (0, True, 1, "a fraction of training in [0, 1]"),
    "instability.diverge_delta": (0, True, None, "nats ≥ 0"),
    "instability.explode_factor": (1, False, None, "a factor > 1, e.g. 100"),
    "instability.explode_after": (0, True, None, "steps ≥ 0"),
    "monitors.spectral_every": (0, True, None, "0 = off"),
}

#: ``"section.key": (threshold, why)`` — legal values above ``threshold`` raise a warning.
ABSURD: dict[str, tuple[float, str]] = {
    "optim.learning_rate": (10.0, "almost certainly diverges (typical peaks: 1e-4 .. 1e-1)"),
    "optim.weight_decay": (1.0, "decays the weights faster than the updates can follow"),
    "optim.clip_norm": (1e6, "clips nothing; 0 turns clipping off explicitly"),
}


def _as_nonfinite(value: Any) -> float | None:
    """``value`` as a float if it is a non-finite number in any spelling (``nan``, ``NaN``,
    ``-inf``, ``"Infinity"``), else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else value
    if isinstance(value, str):
        try:
            x = float(value.strip())
        except ValueError:
            return None
        return None if math.isfinite(x) else x
    return None


def _check_finite(where: str, value: Any) -> None:
    """Reject a non-finite number anywhere in ``value`` (tables and lists walked)."""
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(f"{where}.{k}", v)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_finite(f"{where}[{i}]", v)
    elif _as_nonfinite(value) is not None:
        raise ConfigError(f"config key {where!r} is {value!r}, not a finite number: give a finite "
                          "value (no setting accepts nan or inf)")


def _range_error(key: str, v: Any) -> str | None:
    """Why ``v`` is outside ``RANGES[key]`` (``None``: inside, or not a number)."""
    low, inclusive, high, fix = RANGES[key]
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    if key == "optim.weight_decay" and v == UNSET_WEIGHT_DECAY:
        return None
    below = low is not None and (v < low if inclusive else v <= low)
    above = high is not None and v > high
    if not (below or above):
        return None
    rng = (f"{'≥' if inclusive else '>'} {low}" if high is None else
           f"in {'[' if inclusive else '('}{low}, {high}]")
    return f"must be {rng}, got {v!r} (fix: {fix})"


def _check_ranges(sections: dict[str, Any]) -> None:
    """:data:`RANGES` (errors; sweep axes' values too) and :data:`ABSURD` (warnings)."""
    for key in RANGES:
        sec, field = key.split(".")
        why = _range_error(key, getattr(sections[sec], field))
        if why:
            raise ConfigError(f"config key {key!r} {why}")
    for key, values in sections["sweep"].axes.items():
        for v in values if key in RANGES and isinstance(values, list) else ():
            why = _range_error(key, v)
            if why:
                raise ConfigError(f"sweep axis {key!r}: a value {why}")
    for key, (threshold, why) in ABSURD.items():
        sec, field = key.split(".")
        v = getattr(sections[sec], field)
        if v > threshold:
            warnings.warn(f"config key {key!r} = {v!r} is above {threshold:g}: {why}",
                          ConfigWarning, stacklevel=3)


def _fields(cls) -> dict[str, type]:
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(section: str, key: str, typ: type, value: Any) -> Any:
    where = f"{section}.{key}"
    if typ is not str:  # a string field may legitimately read "inf" (a directory, a name)
        _check_finite(where, value)
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key {where!r} expects true/false, got {value!r}")
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"config key {where!r} expects an integer, got {value!r}")
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"config key {where!r} expects a number, got {value!r}")
        return float(value)
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key {where!r} expects a string, got {value!r}")
        return value
    if typ is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key {where!r} expects a table, got {value!r}")
        return dict(value)
    if typ is list:
        if not isinstance(value, list):
            raise ConfigError(f"config key {where!r} expects a list, got {value!r}")
        return list(value)
    raise TypeError(typ)  # pragma: no cover


def from_dict(d: dict[str, Any]) -> Config:
    """Build a :class:`Config` from nested dicts, rejecting unknown sections/keys."""
    if not isinstance(d, dict):
        raise ConfigError(f"a config must be a table of sections, got {type(d).__name__}")
    unknown = set(d) - set(_SECTION_TYPES)
    if unknown:
        raise ConfigError(
            f"unknown config section(s) {sorted(unknown)}; known sections: {sorted(_SECTION_TYPES)}"
        )
    sections = {}
    for name, cls in _SECTION_TYPES.items():
        raw = d.get(name, {})
        if not isinstance(raw, dict):
            raise ConfigError(f"config section [{name}] must be a table, got {raw!r}")
        fields = _fields(cls)
        bad = set(raw) - set(fields)
        if bad:
            raise ConfigError(
                f"unknown key(s) {sorted(f'{name}.{k}' for k in bad)}; known keys of [{name}]: "
                f"{sorted(fields)}"
            )
        sections[name] = cls(**{k: _coerce(name, k, fields[k], v) for k, v in raw.items()})
    _check_ranges(sections)
    _validate_monitors(sections["monitors"])
    return Config(**sections)


def to_dict(cfg: Config) -> dict[str, Any]:
    """Nested plain dicts (round-trips through :func:`from_dict`)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


_NONFINITE_WORD = re.compile(r"(?i)(?<![\w.])([+-]?)(nan|inf(?:inity)?)(?![\w.])")


def parse_value(text: str) -> Any:
    """Parse a ``--set`` value as a TOML value (``3e-3``, ``true``, ``[1, 2]``), else a string.

    Spellings of non-finite numbers TOML does not know (``NaN``, ``Infinity``, ``-INF``) are read
    as TOML's ``nan`` / ``inf``, so that validation refuses them as numbers, naming the key.
    """
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        pass
    norm = _NONFINITE_WORD.sub(lambda m: m[1] + ("nan" if m[2].lower() == "nan" else "inf"), text)
    try:
        return tomllib.loads(f"v = {norm}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(cfg: Config, overrides: dict[str, str] | None) -> Config:
    """Apply ``{"section.key[.sub]": "value"}`` overrides (strings parsed by :func:`parse_value`).

    Keys inside a free-form table (``model.options.d_model``, ``sweep.axes.optim.learning_rate``)
    are allowed; everything else must name a known field.
    """
    d = to_dict(cfg)
    for key, text in (overrides or {}).items():
        parts = key.split(".")
        if len(parts) < 2:
            raise ConfigError(
                f"--set key {key!r} must be section.key; known sections: {sorted(_SECTION_TYPES)}"
            )
        section, field = parts[0], parts[1]
        if section not in d:
            raise ConfigError(
                f"--set key {key!r}: unknown section {section!r}; known: {sorted(_SECTION_TYPES)}"
            )
        if field not in d[section]:
            raise ConfigError(
                f"--set key {key!r}: unknown key {field!r}; known keys of [{section}]: "
                f"{sorted(d[section])}"
            )
        value = parse_value(text) if isinstance(text, str) else text
        if len(parts) == 2:
            d[section][field] = value
        elif field in _FREE_TABLES:
            sub = ".".join(parts[2:]) if field == "axes" else None
            if sub is not None:
                d[section][field][sub] = value
            else:
                tbl = d[section][field]
                for p in parts[2:-1]:
                    tbl = tbl.setdefault(p, {})
                tbl[parts[-1]] = value
        else:
            raise ConfigError(f"--set key {key!r}: {section}.{field} is not a table")
    return from_dict(d)


def load_config(path: str | Path | None, overrides: dict[str, str] | None = None) -> Config:
    """Read a TOML file (``None``: defaults) and apply ``--set`` overrides; validates keys/types."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist (pass --config <file.toml>)")
        try:
            data = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {str(p)!r} is not valid TOML: {e}") from e
    return apply_overrides(from_dict(data), overrides)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} to TOML")


def _dump_table(prefix: str, tbl: dict[str, Any], out: list[str]) -> None:
    scalars = {k: v for k, v in tbl.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in tbl.items() if isinstance(v, dict)}
    out.append(f"[{prefix}]")
    for k, v in scalars.items():
        out.append(f"{json.dumps(k) if '.' in k else k} = {_toml_value(v)}")
    out.append("")
    for k, v in tables.items():
        _dump_table(f"{prefix}.{json.dumps(k) if '.' in k else k}", v, out)


def dump_toml(cfg: Config) -> str:
    """The config as TOML text (readable back with :func:`load_config`)."""
    out: list[str] = []
    for name, section in to_dict(cfg).items():
        _dump_table(name, section, out)
    return "\n".join(out)
