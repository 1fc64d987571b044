"""Peak dense bf16 throughput of an accelerator, for MFU (model FLOPs utilisation).

MFU = tokens/s · FLOPs/token / (peak FLOP/s · devices). ``train.peak_tflops = 0`` (the default)
means "look the device up here"; a device this table does not know — every CPU, older or newer
accelerators — gives ``None``, and the trainer then reports no MFU at all rather than a
meaningless ``0.0%``. A measured peak (e.g. 790 TFLOP/s on an H100, against 989 on paper) is
given explicitly with ``train.peak_tflops``.

The numbers are the vendors' dense (no 2:4 sparsity) bf16 tensor-core / MXU peaks per JAX device:

==================================  =========
``device_kind`` contains            TFLOP/s
==================================  =========
``H100 PCIe``                       756
``H100 NVL``                        835
``H100`` (SXM), ``H200``, ``GH200``  989
``B200``                            2250
``A100``                            312
``TPU v6 lite`` / ``TPU v6e``       918
``TPU v5 lite`` / ``TPU v5e``       197
``TPU v5p`` / ``TPU v5``            459
``TPU v4``                          275
==================================  =========

Example:
  >>> peak_tflops("NVIDIA H100 80GB HBM3"), peak_tflops("TPU v5 lite"), peak_tflops("cpu")
  (989.0, 197.0, None)
"""

from __future__ import annotations

from typing import Any

#: ``(lower-case substring of device_kind, dense bf16 TFLOP/s)``; the first match wins, so the
#: more specific names come first.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("h100 pcie", 756.0),
    ("h100 nvl", 835.0),
    ("h100", 989.0),
    ("h200", 989.0),  # also GH200
    ("b200", 2250.0),
    ("a100", 312.0),
    ("tpu v6 lite", 918.0),
    ("tpu v6e", 918.0),
    ("tpu v5 lite", 197.0),
    ("tpu v5e", 197.0),
    ("tpu v5p", 459.0),
    ("tpu v5", 459.0),
    ("tpu v4", 275.0),
)


def peak_tflops(device: Any) -> float | None:
    """Dense bf16 peak of one device in TFLOP/s, or ``None`` when unknown (e.g. a CPU).

    Args:
      device: a ``jax.Device`` (its ``device_kind`` is read; CPU devices give ``None``) or a
        ``device_kind`` string such as ``"NVIDIA H200"``.
    """
    if isinstance(device, str):
        kind = device
    else:
        if getattr(device, "platform", None) == "cpu":
            return None
        kind = getattr(device, "device_kind", "")
    kind = kind.lower()
    for pattern, tflops in PEAK_BF16_TFLOPS:
        if pattern in kind:
            return tflops
    return None


def peak_flops(configured_tflops: float, device: Any, n_devices: int) -> float | None:
    """Total peak FLOP/s of ``n_devices`` devices: the configured per-device TFLOP/s when > 0,
    else :func:`peak_tflops` of ``device``; ``None`` when neither is known (no MFU)."""
    per = configured_tflops if configured_tflops > 0 else peak_tflops(device)
    return per * 1e12 * n_devices if per else None
