"""Fixtures of the trainer tests: tiny configs, and a persistent compilation cache."""

from __future__ import annotations

import pytest


@pytest.fixture
def tiny():
    from _train_standins import ToyLM, tiny_model

    return tiny_model(), ToyLM()


@pytest.fixture(scope="session")
def _xla_cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("xla_cache")


@pytest.fixture(autouse=True, scope="module")
def _persistent_compilation_cache(_xla_cache_dir):
    """Identical programs compiled by several tests (a resumed run, the members of a sweep run
    one by one) are compiled once: the persistent cache, on only while these modules run."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    old = (jax.config.jax_compilation_cache_dir,
           jax.config.jax_persistent_cache_min_compile_time_secs)
    jax.config.update("jax_compilation_cache_dir", str(_xla_cache_dir))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    compilation_cache.reset_cache()
    yield
    jax.config.update("jax_compilation_cache_dir", old[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", old[1])
    compilation_cache.reset_cache()
