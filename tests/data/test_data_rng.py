"""The data order pinned to an independent pure-Python Philox-4x64-10 (Salmon et al., SC'11;
Random123's constants), so batches cannot change with the NumPy version or the machine."""

import numpy as np

from jaxspectra.data import ClassificationDataset, LMDataset
from jaxspectra.data._rng import philox_words

M64 = 2**64 - 1


def _philox4x64_10(ctr, key):
    c, k = list(ctr), list(key)
    for _ in range(10):
        p0, p1 = 0xD2E7470EE14C6C93 * c[0], 0xCA5A826395121157 * c[2]
        c = [(p1 >> 64) ^ c[1] ^ k[0], p1 & M64, (p0 >> 64) ^ c[3] ^ k[1], p0 & M64]
        k = [(k[0] + 0x9E3779B97F4A7C15) & M64, (k[1] + 0xBB67AE8584CAA73B) & M64]
    return c


def _words(seed, step, stream, n):
    """Blocks for counters (0,0,0,stream)+1, +2, ... (the 256-bit counter is bumped first)."""
    out, ctr = [], [0, 0, 0, stream]
    while len(out) < n:
        for i in range(4):
            ctr[i] = (ctr[i] + 1) & M64
            if ctr[i]:
                break
        out += _philox4x64_10(ctr, [seed, step])
    return out[:n]


def test_raw_words_match_the_reference():
    for seed, step, stream, n in [(0, 0, 0, 6), (123, 456, 2, 9), (2**64 - 1, 7, 3, 5)]:
        assert philox_words(seed, step, stream, n).tolist() == _words(seed, step, stream, n)


def test_lm_and_classification_order_follow_the_reference():
    n, t, b = 1000, 16, 5
    x, _ = LMDataset(np.arange(n)).batch(seed=42, step=9, batch_size=b, seq_len=t)
    assert x[:, 0].tolist() == [w % (n - t) for w in _words(42, 9, 0, b)]
    ds = ClassificationDataset(np.arange(7), np.zeros(7, int))
    perm = sorted(range(7), key=lambda i: (_words(3, 0, 2, 7)[i], i))  # stable argsort
    assert ds.batch(3, 0, 7)[0].tolist() == perm
