"""The monitors benchmark: its spectra helper against the spectral monitor, and (slow) a quick
run that produces every variant the issue-24 table needs."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxspectra.benchmarks import bench_monitors as bm
from jaxspectra.monitors import spectral as sp


def test_all_spectra_matches_the_spectral_monitor():
    k = jax.random.split(jax.random.PRNGKey(0), 3)
    p = {"block_0": {"attn": {"qkv": {"kernel": jax.random.normal(k[0], (8, 24))},
                              "o": {"kernel": jax.random.normal(k[1], (8, 8))}},
                     "mlp": {"fc": {"kernel": jax.random.normal(k[2], (8, 20))}}}}
    ref = [st["sv"] for st in sp._banked_stats(sp.matrix_entries(p))]
    for solver in ("eigh", "svd"):
        got = bm._all_spectra(p, solver)
        assert len(got) == len(ref) == 5  # o, q, k, v (the fused qkv split), fc
        for g, r in zip(got, ref):
            # each Gram route resolves σ only to ≈ √eps·σ_1 (the near-zero σ of random 8×8)
            tol = 2 * np.sqrt(np.finfo(np.float32).eps) * float(np.max(r))
            np.testing.assert_allclose(np.asarray(g).reshape(np.shape(r)), r, rtol=1e-4,
                                       atol=tol)


@pytest.mark.slow
def test_quick_run_has_every_variant():
    res = bm.run(quick=True)
    variants = [r["variant"] for r in res.rows]
    for want in ("bare jitted step", "device full", "rotating", "host bounded",
                 "one rotating slice", "solver=eigh"):
        assert any(want in v for v in variants), want
    for r in res.rows:
        assert np.isfinite(r["step_ms"]) and r["step_ms"] > 0
    host = [r for r in res.rows if r["variant"].startswith("host bounded")]
    assert len(host) == 2 and all(" of " in r["skipped"] for r in host)
