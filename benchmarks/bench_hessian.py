"""Exact H_p (paper 001 §3.2) vs ``jax.hessian`` of the loss, float64, n = d, growing N.

Candidate: :func:`jaxspectra.theory.operators.hp_operator` — the per-example gradients
``r_i = K_iᵀ J(a_i) X_i v`` by ``vmap`` (never forming J) and ``H_p = GᵀG`` (each term is rank
one), ``O(N n d + N d²)``. Baseline: ``N · jax.hessian(loss)`` w.r.t. p (forward-over-reverse,
d tangents through the whole model, ``O(N n d²)`` time and ``d``× the activation memory). Both are
jitted and evaluated at the teacher (a zero-residual optimum), where they are equal; the table
reports their max-abs disagreement relative to ``max|H_p|`` (equal accuracy) and the speed-up.
The full run ends with a size ``jax.hessian`` cannot hold in memory (caught and noted).

``python -m jaxspectra.benchmarks.run hessian_hp --quick`` runs tiny sizes on a CPU.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxspectra.precision import x64_scope
from jaxspectra.theory.operators import hp_operator
from jaxspectra.theory.prompt_attention import loss, predict

from .harness import BenchResult, benchmark, time_fn

QUICK_SIZES = [(16, 8), (64, 16), (256, 32)]
FULL_SIZES = [(100, 64), (1_000, 128), (10_000, 256), (6_000, 512), (8_000, 512)]
GOAL = "goal: ≥ 10× faster than jax.hessian at N = 10⁴, n = d = 256 on an H100"


def _problem(N: int, d: int, chunk: int = 1_000):
    """Teacher problem of §4 (σ_p = 1, n = d, W = I) generated in chunks of examples, so that
    the largest X is built without a second full-size temporary."""
    key = jax.random.key(0)
    kp, kv, kx = jax.random.split(key, 3)
    p = jax.random.normal(kp, (d,), jnp.float64)
    v = jax.random.normal(kv, (d,), jnp.float64)
    c = min(chunk, N)
    n_chunks = math.ceil(N / c)

    @jax.jit
    def make_x(k):
        keys = jax.random.split(k, n_chunks)
        X = jax.lax.map(lambda kk: jax.random.normal(kk, (c, d, d), jnp.float64), keys)
        return X.reshape(n_chunks * c, d, d)[:N]

    X = make_x(kx)
    params = {"p": p, "v": v}
    y = jax.jit(predict)(params, X)
    return params, X, y


def _is_oom(err: Exception) -> bool:
    msg = str(err)
    return any(s in msg for s in ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory",
                                  "OOM", "Failed to allocate"))


@benchmark("hessian_hp", "Exact H_p (vmapped rank-one factor) vs N·jax.hessian(loss), paper 001, "
           "float64, n = d")
def run(quick: bool) -> BenchResult:
    rows = []
    notes = [GOAL, ""]
    sizes = QUICK_SIZES if quick else FULL_SIZES
    with x64_scope():
        hp_fn = jax.jit(lambda params, X: hp_operator(params, X))

        def make_hess(N):
            return jax.jit(lambda params, X, y: N * jax.hessian(
                lambda p: loss({**params, "p": p}, X, y))(params["p"]))

        for N, d in sizes:
            row = {"N": N, "n=d": d}
            try:
                params, X, y = _problem(N, d)
            except Exception as err:  # noqa: BLE001
                if not _is_oom(err):
                    raise
                row["note"] = "data does not fit in memory"
                rows.append(row)
                continue
            repeats = 5 if quick or N * d * d <= 1e8 else 3
            H = hp_fn(params, X)
            t_c = time_fn(hp_fn, params, X, warmup=1, repeats=repeats)
            row["hp_ms"] = t_c * 1e3
            hess_fn = make_hess(N)
            try:
                Hb = hess_fn(params, X, y)
                t_b = time_fn(hess_fn, params, X, y, warmup=1, repeats=repeats)
            except Exception as err:  # noqa: BLE001 - OOM is a result here
                if not _is_oom(err):
                    raise
                row["hessian_ms"] = "OOM"
                row["speedup"] = "∞ (jax.hessian out of memory)"
                notes.append(f"N = {N}, n = d = {d}: jax.hessian ran out of device memory; "
                             f"H_p took {t_c * 1e3:.3g} ms.")
                rows.append(row)
                del params, X, y, H
                continue
            scale = float(jnp.max(jnp.abs(H)))
            row["hessian_ms"] = t_b * 1e3
            row["speedup"] = t_b / t_c
            row["max_abs_diff_rel"] = float(jnp.max(jnp.abs(H - Hb))) / scale
            rows.append(row)
            del params, X, y, H, Hb
    notes.append("Both sides float64 and jitted; timings are medians after one warm-up call. "
                 "max_abs_diff_rel = max|H_p - N∇²L| / max|H_p| at the teacher (zero residual).")
    return BenchResult(rows=rows, notes="\n".join(notes), title="H_p vs jax.hessian (paper 001)")
