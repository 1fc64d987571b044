"""``jaxspectra train`` / ``jaxspectra sweep`` (called by :mod:`jaxspectra.cli`).

Both load the TOML config, apply ``--set a.b=value`` overrides, validate everything before any
compute (a :class:`~jaxspectra.train.config.ConfigError` — a bad key or value, an incompatible or
unreadable checkpoint — is printed as one clear line and exits with status 2), run, and print
where the outputs are. ``train`` exits 1 when the run stopped on a non-finite loss or its verdict
is *unstable*, and 130 when Ctrl-C / SIGTERM stopped it (after checkpointing: run it again to
resume).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from jaxspectra.train.config import Config, ConfigError, ConfigWarning, load_config


def _fail(cmd: str, err: Exception) -> int:
    print(f"jaxspectra {cmd}: error: {err}", file=sys.stderr)
    return 2


def load_and_warn(cmd: str, config_path: str | Path | None,
                  overrides: dict[str, str] | None) -> Config:
    """:func:`load_config`, printing each :class:`ConfigWarning` as one line on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConfigWarning)
        cfg = load_config(config_path, overrides)
    said: set[str] = set()  # load_config validates twice (file, then overrides): say each once
    for w in caught:
        if issubclass(w.category, ConfigWarning):
            if str(w.message) not in said:
                said.add(str(w.message))
                print(f"jaxspectra {cmd}: warning: {w.message}", file=sys.stderr, flush=True)
        else:  # pragma: no cover - not ours: hand it back to the warnings machinery
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return cfg


def train_command(config_path: str | None, overrides: dict[str, str] | None = None) -> int:
    from jaxspectra.train.loop import train

    try:
        cfg = load_and_warn("train", config_path, overrides)
        result = train(cfg)
    except ConfigError as e:
        return _fail("train", e)
    s = result.summary
    v = s["verdict"]
    bad = [k for k, c in v["criteria"].items() if c["triggered"]]
    print(
        f"jaxspectra train: {s['stopped']} at step {s['steps_done']}/{s['planned_steps']}; "
        f"final loss {s['final_loss']}, eval {s['final_eval_loss']}; "
        f"verdict {'UNSTABLE ' + str(bad) if v['unstable'] else 'stable'}; "
        f"outputs in {result.run_dir}"
    )
    if s["stopped"] in ("interrupted",) or (s["stopped"] == "preempted" and
                                             s["steps_done"] < s["planned_steps"]):
        return 130
    return 1 if (s["stopped"] == "nonfinite" or v["unstable"]) else 0


def sweep_command(config_path: str | None, overrides: dict[str, str] | None = None) -> int:
    from jaxspectra.train.sweep import sweep

    try:
        cfg = load_and_warn("sweep", config_path, overrides)
        result = sweep(cfg)
    except ConfigError as e:
        return _fail("sweep", e)
    for m in result.members:
        hp = {k: v for k, v in m.items() if k == "seed" or "." in k}
        print(f"member {m['member']}: {hp} final loss {m['final_loss']:.4f} eval "
              f"{m['final_eval_loss']} {'UNSTABLE' if m['verdict']['unstable'] else 'stable'}")
    print(f"jaxspectra sweep: {len(result.members)} members; outputs in {result.run_dir}")
    return 130 if result.summary["stopped"] in ("interrupted", "preempted") else 0
