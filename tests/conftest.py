"""Test configuration.

* Eight simulated CPU devices (``--xla_force_host_platform_device_count=8``) so sharding, FSDP and
  ``pmap`` tests run on a CPU-only machine; single-device code still runs on device 0.
* ``JAX_ENABLE_X64=1`` in the environment runs the whole suite with x64 on (CI runs it both ways
  for the non-theory tests); theory code enables float64 itself, scoped.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flag = "--xla_force_host_platform_device_count=8"
if _flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()
os.environ.setdefault("MPLBACKEND", "Agg")

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
