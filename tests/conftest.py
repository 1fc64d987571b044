"""Test configuration.

* Eight simulated CPU devices (``--xla_force_host_platform_device_count=8``) so sharding, FSDP and
  ``pmap`` tests run on a CPU-only machine; single-device code still runs on device 0.
* ``JAX_ENABLE_X64=1`` in the environment runs the whole suite with x64 on (CI runs it both ways
  for the non-theory tests); theory code enables float64 itself, scoped.
* Longer XLA CPU collective timeouts, where this jaxlib knows the flags: the 8 simulated devices
  are threads that meet at a rendezvous, and on 2 cores shared by two xdist workers a straggler
  can miss XLA's default termination timeout, which aborts the whole worker ("Fatal Python
  error: Aborted" in a sharded test, seen once in a fresh-clone CI run). The flags are probed in
  a subprocess first, because an unknown XLA flag aborts at start-up.
"""

import os
import subprocess
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flag = "--xla_force_host_platform_device_count=8"
if _flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()
os.environ.setdefault("MPLBACKEND", "Agg")
_TIMEOUTS = ("--xla_cpu_collective_call_terminate_timeout_seconds=600 "
             "--xla_cpu_collective_call_warn_stuck_timeout_seconds=300")
if "collective_call_terminate" not in os.environ["XLA_FLAGS"]:
    _probe = subprocess.run(
        [sys.executable, "-c", "import jax.numpy as j; j.ones(1).block_until_ready()"],
        env={**os.environ, "XLA_FLAGS": os.environ["XLA_FLAGS"] + " " + _TIMEOUTS},
        capture_output=True, timeout=120)
    if _probe.returncode == 0:
        os.environ["XLA_FLAGS"] += " " + _TIMEOUTS

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def n_devices() -> int:
    return jax.device_count()


@pytest.fixture
def tmp_run_dir(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    return d
