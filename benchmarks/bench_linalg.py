"""Matrix sign by method on GPT-2-small shapes, and a 768² sign amortised over 48 matrices.

``sign_methods``: for each shape (768², 3072×768, 2048²; one matrix and a batch of 12) and each
:func:`jaxspectra.linalg.matrix_sign` method, the jitted median time, the speed-up over the
``svd`` reference in the same process, the max-abs error against that reference, the singular
values of the output (their band; from the Gram eigenvalues) and the method's own error estimate
‖SSᵀ − I‖₂. Inputs are U·diag(s)·Vᵀ with random orthogonal U, V and s log-uniform in
[1e-3, 1] (σ_min/σ_max = 1e-3, the range the tests pin). ``auto`` must be the fastest method
meeting 1e-4 here (the notes name the fastest per shape).

``sign_amortised``: the polynomial methods on a batch of 48 same-shape 768² matrices (GPT-2
small's 12 × (Q, K, V, O)) against the same method called matrix by matrix; the goal is ≤ 30 µs
per matrix on an H100.

``--quick`` shrinks everything (64-wide shapes) for a CPU sanity run.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxspectra import linalg

from .harness import BenchResult, benchmark, time_fn

METHODS = (
    ("svd", {}),
    ("qdwh", {}),
    ("accurate", {}),
    ("newton_schulz", {}),  # 5 steps, bf16
    ("polar_express", {"steps": 5}),
    ("polar_express", {}),  # 10 steps, bf16
)


def conditioned(key: jax.Array, b: int, m: int, n: int, ratio: float = 1e-3) -> jax.Array:
    """b random U·diag(s)·Vᵀ (m×n), s log-uniform in [ratio, 1] with s_1 = 1, s_k = ratio."""
    k = min(m, n)
    ku, kv, ks = jax.random.split(key, 3)
    u, _ = jnp.linalg.qr(jax.random.normal(ku, (b, m, k)))
    v, _ = jnp.linalg.qr(jax.random.normal(kv, (b, n, k)))
    s = jnp.exp(jax.random.uniform(ks, (b, k), minval=np.log(ratio), maxval=0.0))
    s = s.at[:, 0].set(1.0).at[:, 1].set(ratio)
    return jnp.einsum("bik,bk,bjk->bij", u, s, v, precision=jax.lax.Precision.HIGHEST)


def adaptive_time(fn, *args, budget: float = 1.0) -> float:
    """time_fn with repeats chosen so that slow methods (SVD of 12×2048²) stay affordable."""
    jax.block_until_ready(fn(*args))  # compile
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    once = time.perf_counter() - t0
    repeats = int(np.clip(budget / max(once, 1e-6), 2, 20))
    return time_fn(fn, *args, warmup=1, repeats=repeats)


def label(method: str, kw: dict) -> str:
    if method == "newton_schulz":
        return "newton_schulz (5, bf16)"
    if method == "polar_express":
        return f"polar_express ({kw.get('steps', 10)}, bf16)"
    if method == "accurate":
        return "accurate (= auto, fp32)"
    return method


def poly_flops(method: str, kw: dict, m: int, n: int, b: int) -> float:
    k, big = min(m, n), max(m, n)
    if method in ("newton_schulz", "polar_express"):
        steps = kw.get("steps") or linalg.DEFAULT_STEPS[method]
    elif method == "accurate":
        steps = len(linalg._accurate_coefficients(k, 1e-7))
    else:
        return float("nan")
    return b * steps * 2.0 * k * k * (2 * big + k)


@benchmark("sign_methods", "matrix_sign: time and error by method on GPT-2-small shapes")
def sign_methods(quick: bool) -> BenchResult:
    shapes = [(64, 64), (192, 64), (128, 128)] if quick else [(768, 768), (3072, 768), (2048, 2048)]
    batches = (1, 3) if quick else (1, 12)
    # 12×2048² SVDs cost ~3.7 s each on an H100 (gpu-measurements.md): one matrix at that size
    skip = set() if quick else {(2048, 2048, 12)}
    rows = []
    fastest: dict[str, str] = {}
    key = jax.random.PRNGKey(0)
    for m, n in shapes:
        for b in batches:
            if (m, n, b) in skip:
                continue
            key, sub = jax.random.split(key)
            x = conditioned(sub, b, m, n)
            ref_fn = jax.jit(lambda x: linalg.matrix_sign(x, "svd"))
            ref = ref_fn(x)
            t_ref = adaptive_time(ref_fn, x)
            best = None
            for method, kw in METHODS:
                fn = jax.jit(lambda x, m=method, kw=kw: linalg.matrix_sign(x, m, **kw))
                t = t_ref if method == "svd" else adaptive_time(fn, x)
                s, est = jax.jit(lambda x, m=method, kw=kw: linalg.matrix_sign(
                    x, m, return_error=True, **kw))(x)
                err = float(jnp.max(jnp.abs(s.astype(jnp.float32) - ref)))
                sv = linalg.singular_values(s.astype(jnp.float32), "gram")
                row = {
                    "shape": f"{b}x{m}x{n}",
                    "method": label(method, kw),
                    "ms": t * 1e3,
                    "speedup_vs_svd": t_ref / t,
                    "max_abs_err_vs_svd": err,
                    "sv_min": float(sv.min()),
                    "sv_max": float(sv.max()),
                    "est_err": float(jnp.max(est)),
                    "TFLOP/s": poly_flops(method, kw, m, n, b) / t / 1e12,
                }
                if method == "accurate":
                    _, e_poly = linalg.matrix_sign(x, "accurate", tol=np.inf, return_error=True)
                    row["fallback"] = bool(jnp.max(e_poly) > linalg.ACCURATE_TOL)
                rows.append(row)
                if method != "svd" and err <= 1e-4 and (best is None or t < best[1]):
                    best = (label(method, kw), t)
            fastest[f"{b}x{m}x{n}"] = best[0] if best else "none"
    verdict = "; ".join(f"{k}: {v}" for k, v in fastest.items())
    notes = (
        "Error = max |S − S_svd| against the float32 SVD reference in the same process (itself "
        "≈1e-5 from the exact polar factor at σ_min/σ_max = 1e-3). sv_min/sv_max = the band of "
        "the output's singular values; est_err = the method's own ‖SSᵀ − I‖₂ (power iteration), "
        "which does not see the bf16 methods' input-rounding error. TFLOP/s counts the "
        "polynomial matmuls (2k²(2N + k) per step). `fallback` = the accurate route's residual "
        "check sent the batch to the SVD.\n\n"
        f"Fastest method meeting 1e-4 (max-abs) per shape, excluding svd: {verdict}. "
        f"`matrix_sign(method='auto')` resolves to `{linalg.AUTO_METHOD}`."
    )
    return BenchResult(rows=rows, notes=notes, title="Matrix sign by method")


@benchmark("sign_amortised", "a 768² sign batched over 48 same-shape matrices vs one by one")
def sign_amortised(quick: bool) -> BenchResult:
    n_mat, d = (8, 64) if quick else (48, 768)
    x = conditioned(jax.random.PRNGKey(1), n_mat, d, d)
    rows = []
    cases = (
        ("newton_schulz", {}),
        ("polar_express", {"steps": 5}),
        ("polar_express", {}),
        ("accurate", {}),
    )
    for method, kw in cases:
        fn = jax.jit(lambda x, m=method, kw=kw: linalg.matrix_sign(x, m, **kw))
        t_batched = adaptive_time(fn, x)
        one = x[:1]
        t_one = adaptive_time(fn, one)
        per = t_batched / n_mat
        rows.append(
            {
                "method": label(method, kw),
                "matrices": n_mat,
                "batched_ms": t_batched * 1e3,
                "us_per_matrix": per * 1e6,
                "one_at_a_time_us": t_one * 1e6,
                "speedup": t_one / per,
                "TFLOP/s": poly_flops(method, kw, d, d, n_mat) / t_batched / 1e12,
                "goal_30us": "met" if per * 1e6 <= 30 else "missed",
            }
        )
    notes = (
        "One jitted `matrix_sign` on the (48, 768, 768) stack vs the same function on one matrix "
        "(time × 48 = the unbatched cost). Goal: ≤ 30 µs per 768² matrix on an H100 (bf16 "
        "polynomial methods; the accurate route runs float32 matmuls at full precision)."
    )
    return BenchResult(rows=rows, notes=notes, title="768² sign amortised over a batch")
