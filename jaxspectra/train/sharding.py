"""Device mesh and shardings: batch on a ``data`` axis; parameters replicated or FSDP-sharded.

One 1-D :class:`jax.sharding.Mesh` over the devices with axis ``data``. Batches are split on
their leading axis. With ``sharding = "fsdp"`` every array of the train state (params and the
optimiser's moments alike) is split on its largest axis divisible by the device count (arrays
smaller than ``min_fsdp_size`` or with no such axis stay replicated); XLA inserts the all-gathers
and reduce-scatters. The rule depends only on the shape, so a moment shaped like its parameter
gets the parameter's sharding.

Multi-host: :func:`maybe_initialize_distributed` calls ``jax.distributed.initialize()`` (the
existing engine) once, and only when asked to.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
_DISTRIBUTED_DONE = False


def maybe_initialize_distributed(enabled: bool) -> None:
    """``jax.distributed.initialize()`` once per process when ``enabled`` (a no-op otherwise).

    Call it before anything touches the devices. Arguments come from the environment
    (coordinator address, process count and id; auto-detected on Cloud TPU and SLURM).
    """
    global _DISTRIBUTED_DONE
    if not enabled or _DISTRIBUTED_DONE:
        return
    try:
        jax.distributed.initialize()
    except RuntimeError as e:  # already initialised by the user
        if "already" not in str(e).lower():
            raise
    _DISTRIBUTED_DONE = True


def make_mesh(num_devices: int = 0) -> Mesh:
    """A 1-D mesh with axis ``data`` over the first ``num_devices`` devices (0 = all)."""
    devices = jax.devices()
    if num_devices:
        if num_devices > len(devices):
            raise ValueError(
                f"run.num_devices={num_devices} but only {len(devices)} device(s) are visible"
            )
        devices = devices[:num_devices]
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, leading: int = 0) -> NamedSharding:
    """Split axis ``leading`` (the batch axis; 1 for a sweep's ``[members, B, T]``) on ``data``."""
    return NamedSharding(mesh, PartitionSpec(*([None] * leading), DATA_AXIS))


def fsdp_spec(shape: tuple[int, ...], n: int, min_size: int = 1024) -> PartitionSpec:
    """Partition the largest axis divisible by ``n`` (ties: the last), or replicate."""
    if n == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return PartitionSpec()
    best = None
    for ax, size in enumerate(shape):
        if size % n == 0 and (best is None or size >= shape[best]):
            best = ax
    if best is None:
        return PartitionSpec()
    return PartitionSpec(*([None] * best), DATA_AXIS)


def state_shardings(
    abstract_state: Any, mesh: Mesh, mode: str, min_fsdp_size: int = 1024, leading: int = 0
) -> Any:
    """Shardings for every array leaf of ``abstract_state`` (``"replicated"`` or ``"fsdp"``).

    ``leading`` axes (a sweep's member axis) are never partitioned.
    """
    if mode not in ("replicated", "fsdp"):
        raise ValueError(f"train.sharding must be 'replicated' or 'fsdp', got {mode!r}")
    n = mesh.devices.size

    def one(x):
        shape = tuple(getattr(x, "shape", ()))
        if mode == "replicated" or len(shape) <= leading:
            return replicated(mesh)
        spec = fsdp_spec(shape[leading:], n, min_fsdp_size)
        return NamedSharding(mesh, PartitionSpec(*([None] * leading), *spec))

    return jax.tree.map(one, abstract_state)
