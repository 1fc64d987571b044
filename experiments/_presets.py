"""Presets with ``--set key=value`` overrides: the one conversion every experiment shares.

Each override is converted to the type of the preset's value for that key (``bool`` from
``true/false/1/0``, ``int`` from an integral number, ``float``, ``str``, a ``tuple`` from
comma-separated items of its first element's type); an unknown preset or key, or a value that
does not convert, is a ``ValueError`` naming the choices. Each experiment then validates ranges.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_BOOLS = {"true": True, "1": True, "yes": True, "on": True,
          "false": False, "0": False, "no": False, "off": False}


def convert_value(kind: type, value: Any) -> Any:
    """``value`` (a ``--set`` string) as ``kind``: bools from true/false/1/0/yes/no/on/off, ints
    also from '2e1'; a non-string passes through. Raises ``ValueError`` naming what was expected."""
    if not isinstance(value, str):
        return value
    if kind is bool:
        if value.strip().lower() not in _BOOLS:
            raise ValueError("expected true or false")
        return _BOOLS[value.strip().lower()]
    if kind is int:
        f = float(value)
        if not f.is_integer():
            raise ValueError("expected an integer")
        return int(f)
    return kind(value)


def apply_overrides(presets: Mapping[str, Mapping[str, Any]], preset: str,
                    overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """``presets[preset]`` with ``overrides`` converted to each key's type.

    >>> apply_overrides({"smoke": {"steps": 10, "lrs": (0.1,), "on": False}}, "smoke",
    ...                 {"steps": "20", "lrs": "0.1,0.2", "on": "true"})
    {'steps': 20, 'lrs': (0.1, 0.2), 'on': True}
    """
    if preset not in presets:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(presets)}")
    cfg = dict(presets[preset])
    for key, value in (overrides or {}).items():
        if key not in cfg:
            raise ValueError(f"unknown override {key!r}; known keys: {', '.join(sorted(cfg))}")
        old = cfg[key]
        try:
            if isinstance(old, tuple) and isinstance(value, str):
                kind = type(old[0]) if old else str
                cfg[key] = tuple(convert_value(kind, v.strip()) for v in value.split(",") if v.strip())
            else:
                cfg[key] = convert_value(type(old), value)
        except ValueError as err:
            shown = ",".join(map(str, old)) if isinstance(old, tuple) else old
            raise ValueError(f"override {key}={value!r}: {err}; expected "
                             f"{type(old).__name__}, e.g. {key}={shown}") from None
    return cfg
