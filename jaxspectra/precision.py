"""Scoped float64 for the theory code.

Theory operators (softmax Jacobians, H_p, condition numbers) need float64, but flipping
``jax_enable_x64`` globally would change every other array a user creates. :func:`float64` is a
decorator / context manager that enables x64 only while the wrapped call runs and restores the
previous setting afterwards (``jax.enable_x64`` is thread-local config).

Example:
  >>> import jax.numpy as jnp
  >>> @float64
  ... def f(x):
  ...     return jnp.asarray(x, jnp.float64) * 2
  >>> f(1.0).dtype
  dtype('float64')
  >>> jnp.ones(1).dtype == jnp.float64   # unchanged outside
  False
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import TypeVar

import jax

F = TypeVar("F", bound=Callable)


@contextlib.contextmanager
def x64_scope() -> Iterator[None]:
    """Enable 64-bit types inside the ``with`` block only."""
    with jax.enable_x64(True):
        yield


def float64(fn: F) -> F:
    """Decorate ``fn`` so it runs with x64 enabled (and only while it runs)."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with jax.enable_x64(True):
            return fn(*args, **kwargs)

    return wrapped  # type: ignore[return-value]
