"""build_monitors: names and options from a config table, clear errors."""

from __future__ import annotations

import jax.numpy as jnp
import pytest

from jaxspectra.models import get_model
from jaxspectra.monitors.registry import build_monitors


def test_build_monitors():
    model, cfg = get_model("gpt-tiny")
    probe = jnp.zeros((8, 8), jnp.int32)
    dev, host = build_monitors(
        {"spectral": {"every": 20}, "heavy_tail": {}, "attention": {"probe_batch": 2},
         "jacobian": {"every": 7}, "grad_norms": {"every": 3},
         }, module=model, n_layers=cfg.n_layers, probe_tokens=probe)
    assert [type(m).__name__ for m in host] == ["HostSpectralMonitor"]
    assert host[0].every == 20
    assert {m.name: m.every for m in dev} == {"heavy_tail": 500, "attention": 100,
                                              "jacobian": 7, "grad_norms": 3}
    assert dev[1].probe.shape == (2, 8)
    dev, host = build_monitors({"spectral": {"where": "device"}})
    assert dev[0].name == "spectral" and not host
    with pytest.raises(ValueError, match="unknown monitor 'spectrum'"):
        build_monitors({"spectrum": {}})
    with pytest.raises(ValueError, match="unknown option"):
        build_monitors({"spectral": {"evry": 3}})
    with pytest.raises(ValueError, match="needs"):
        build_monitors({"attention": {}})
    with pytest.raises(ValueError, match="where"):
        build_monitors({"spectral": {"where": "gpu"}})
