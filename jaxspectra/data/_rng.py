"""Counter-based randomness for data order: raw Philox-4x64 words keyed by ``(seed, step)``.

Batches are pure functions of ``(seed, step)``: a Philox generator keyed by the pair, with a
``stream`` number in the top word of its 256-bit counter so that independent uses (LM windows,
synthetic tokens, epoch permutations, splits) never share bits. Only the raw 64-bit words are used
(not ``numpy.random.Generator`` methods, whose algorithms NumPy may change between versions), so
the data order is the same on every machine and NumPy version.
"""

from __future__ import annotations

import numpy as np

STREAM_LM_WINDOWS = 0
STREAM_SYNTHETIC = 1
STREAM_EPOCH_PERMUTATION = 2
STREAM_SPLIT = 3

_U64 = 2**64


def _check_u64(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if not 0 <= value < _U64:
        raise ValueError(f"{name} must lie in [0, 2**64), got {value}")
    return value


def philox_words(seed: int, step: int, stream: int, n: int) -> np.ndarray:
    """``n`` raw uint64 words of Philox-4x64 keyed by ``(seed, step)``, counter ``(0, 0, 0, stream)``."""
    key = np.array([_check_u64(seed, "seed"), _check_u64(step, "step")], dtype=np.uint64)
    counter = np.array([0, 0, 0, stream], dtype=np.uint64)
    bitgen = np.random.Philox(key=key, counter=counter)
    return np.asarray(bitgen.random_raw(n), dtype=np.uint64)


def philox_integers(high: int, seed: int, step: int, stream: int, n: int) -> np.ndarray:
    """``n`` integers in ``[0, high)`` (word mod ``high``; bias < high / 2**64), as int64."""
    if high <= 0:
        raise ValueError(f"high must be positive, got {high}")
    return (philox_words(seed, step, stream, n) % np.uint64(high)).astype(np.int64)


def philox_permutation(n: int, seed: int, step: int, stream: int) -> np.ndarray:
    """A permutation of ``range(n)``: the stable argsort of ``n`` Philox words."""
    return np.argsort(philox_words(seed, step, stream, n), kind="stable").astype(np.int64)
