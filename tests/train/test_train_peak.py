"""Device peak lookup for MFU: known accelerators by ``device_kind``, ``None`` (no MFU) else."""

from __future__ import annotations

import jax
import pytest

from jaxspectra.train.builtin_hooks import Throughput
from jaxspectra.train.hooks import Record
from jaxspectra.train.peak import peak_flops, peak_tflops


@pytest.mark.parametrize("kind, tflops", [
    ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H100 NVL", 835.0),
    ("NVIDIA H200", 989.0), ("NVIDIA GH200 480GB", 989.0), ("NVIDIA A100-SXM4-80GB", 312.0),
    ("NVIDIA A100 80GB PCIe", 312.0), ("TPU v4", 275.0), ("TPU v5 lite", 197.0),
    ("TPU v5", 459.0), ("TPU v5p", 459.0), ("TPU v6 lite", 918.0),
])
def test_known_device_kinds(kind, tflops):
    assert peak_tflops(kind) == tflops


@pytest.mark.parametrize("kind", ["cpu", "Tesla V100-SXM2-16GB", "", "NVIDIA GeForce RTX 4090"])
def test_unknown_device_kinds_give_none(kind):
    assert peak_tflops(kind) is None


def test_cpu_device_has_no_peak_and_config_overrides():
    cpu = jax.devices("cpu")[0]
    assert peak_tflops(cpu) is None
    assert peak_flops(0.0, cpu, 1) is None  # the default: look up → unknown → no MFU
    assert peak_flops(790.0, cpu, 2) == 790.0 * 1e12 * 2  # explicit per-device peak wins
    assert peak_flops(0.0, "NVIDIA H200", 8) == 989.0 * 1e12 * 8


def test_throughput_without_a_peak_records_no_mfu():
    """A CPU run: tokens/s on every record after the first, never an ``mfu`` key (0.0% before)."""
    t = Throughput(tokens_per_step=128, flops_per_token=1e6, peak_flops=None, slow_hooks=[])
    recs = [Record(i, "train", {"loss": 1.0}) for i in range(3)]
    for r in recs:
        t.on_record(r)
    assert "tokens_per_s" in recs[1].values and all("mfu" not in r.values for r in recs)
    t = Throughput(tokens_per_step=128, flops_per_token=1e6, peak_flops=1e12, slow_hooks=[])
    for r in recs:
        t.on_record(r)
    assert 0 < recs[2].values["mfu"] < float("inf")
