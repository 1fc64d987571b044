"""The matrix bank (jaxspectra.matrices): params → stacks → banks → params is the identity, bit for
bit; each stored matrix is the NumPy slice / transpose it should be; the one power iteration
(jaxspectra.linalg.power_iteration) against np.linalg.svd."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspectra import linalg
from jaxspectra import matrices as M

D = 4


def _params(key=0):
    """Mixed shapes: fused qkv (wide), square o, wide fc, tall proj, stacked experts, 1-D bias,
    a second block with the same shapes (so banks hold several leaves)."""
    ks = iter(jax.random.split(jax.random.PRNGKey(key), 16))
    n = lambda *s: jax.random.normal(next(ks), s)
    blk = lambda: {
        "attn": {"qkv": {"kernel": n(D, 3 * D)}, "o": {"kernel": n(D, D)}},
        "mlp": {"fc": {"kernel": n(D, 4 * D), "bias": n(4 * D)}, "proj": {"kernel": n(4 * D, D)}},
        "moe": {"up": {"kernel": n(2, D, 2 * D)}},
    }
    return {"block_0": blk(), "block_1": blk(), "head": {"kernel": n(D, 6)}}


def _round_trip(params, mask, split_qkv, orient):
    entries = M.matrices_of(params, mask, split_qkv=split_qkv, orient=orient)
    stacks = [M.to_stack(M.leaf_at(params, p), v) for p, v in entries]
    plan = M.plan_banks(stacks)
    banks = M.to_banks(stacks, plan)
    back = M.from_banks(banks, plan)
    leaves = {p: M.from_stack(s, v) for (p, v), s in zip(entries, back)}
    return entries, stacks, banks, leaves


def _is_mat(path, x):
    return jnp.ndim(x) >= 2


@pytest.mark.parametrize("split_qkv", [True, False])
@pytest.mark.parametrize("orient", ["tall", "wide", None])
def test_round_trip_is_exact(split_qkv, orient):
    params = _params()
    entries, stacks, banks, leaves = _round_trip(params, _is_mat, split_qkv, orient)
    assert len(entries) == 11  # 5 matrices × 2 blocks + head; the biases are masked out
    for p, _ in entries:
        np.testing.assert_array_equal(np.asarray(leaves[p]), np.asarray(M.leaf_at(params, p)))
        assert leaves[p].dtype == M.leaf_at(params, p).dtype
    # every bank holds one matrix shape; together they hold every matrix exactly once
    assert sum(b.shape[0] for b in banks) == sum(v.n for _, v in entries)
    for b in banks:
        r, c = b.shape[1:]
        assert (orient != "tall" or r >= c) and (orient != "wide" or r <= c)


def test_stacks_match_numpy_slices():
    """Independent ground truth: NumPy slicing and transposition of the leaf."""
    params = _params()
    entries = dict(M.matrices_of(params, _is_mat, split_qkv=True, orient="tall"))
    qkv = np.asarray(params["block_0"]["attn"]["qkv"]["kernel"])
    st = np.asarray(M.to_stack(params["block_0"]["attn"]["qkv"]["kernel"],
                               entries["block_0/attn/qkv/kernel"]))
    assert st.shape == (3, D, D)
    for i in range(3):
        np.testing.assert_array_equal(st[i], qkv[:, i * D:(i + 1) * D])
    up = np.asarray(params["block_1"]["moe"]["up"]["kernel"])  # (2, D, 2D): wide → tall
    view = entries["block_1/moe/up/kernel"]
    assert view.transposed and view.mn == (2 * D, D) and view.batch_shape == (2,)
    st = np.asarray(M.to_stack(params["block_1"]["moe"]["up"]["kernel"], view))
    np.testing.assert_array_equal(st, np.swapaxes(up, -1, -2))
    # the same leaf as NumPy gives the same stack (the host monitor's path)
    np.testing.assert_array_equal(M.to_stack(up, view), st)


def test_banks_group_by_shape_and_dtype():
    params = _params()
    params["block_1"]["attn"]["o"]["kernel"] = params["block_1"]["attn"]["o"]["kernel"].astype(
        jnp.bfloat16)
    entries = M.matrices_of(params, _is_mat, split_qkv=True, orient="tall")
    stacks = [M.to_stack(M.leaf_at(params, p), v) for p, v in entries]
    plan = M.plan_banks(stacks)
    keys = [{(tuple(stacks[i].shape[1:]), stacks[i].dtype) for i in b} for b in plan.banks]
    assert all(len(k) == 1 for k in keys)  # one shape and dtype per bank
    assert len({next(iter(k)) for k in keys}) == len(keys)  # and no two banks share one
    # per-matrix results come back per leaf, in its batch shape (qkv: (3,), experts: (2,))
    norms = M.from_banks([jnp.linalg.norm(b, axis=(-2, -1)) for b in M.to_banks(stacks, plan)],
                         plan)
    for (_, v), nrm, s in zip(entries, norms, stacks):
        got = M.per_matrix(nrm, v)
        assert got.shape == v.batch_shape
        np.testing.assert_allclose(np.asarray(got).reshape(-1),
                                   np.linalg.norm(np.asarray(s, np.float64), axis=(-2, -1)),
                                   rtol=1e-2 if s.dtype == jnp.bfloat16 else 1e-6)


def test_mask_selects_and_bad_input_is_named():
    params = _params()
    mask = jax.tree.map(lambda _: False, params)
    mask["block_0"]["mlp"]["fc"]["kernel"] = True
    assert [p for p, _ in M.matrices_of(params, mask)] == ["block_0/mlp/fc/kernel"]
    with pytest.raises(ValueError, match="block_0/mlp/fc/bias"):
        M.matrices_of(params)  # a 1-D leaf is not a matrix: the error names it
    with pytest.raises(ValueError, match="qkv"):
        M.view_of("attn/qkv/kernel", (4, 7), split_qkv=True)
    with pytest.raises(ValueError, match="orientation"):
        M.view_of("w", (4, 4), orient="square")
    with pytest.raises(ValueError, match="does not match"):
        M.to_stack(jnp.ones((3, 3)), M.view_of("w", (4, 4)))
    plan = M.plan_banks([jnp.ones((1, 2, 2))])
    with pytest.raises(ValueError, match="stacks"):
        M.to_banks([], plan)


def test_power_iteration_batched_vs_svd():
    """Batched power iteration (one independent operator per leading index) vs float64 SVD;
    the tolerance is the convergence bound (σ₂/σ₁)^(2·iters) plus float32 round-off."""
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.standard_normal((3, 7, 5)))
    v, _ = np.linalg.qr(rng.standard_normal((3, 5, 5)))
    s = np.array([[3.0, 1.5, 1.0, 0.5, 0.1], [1.0, 0.5, 0.2, 0.1, 0.0], [2.0, 1.0, 1, 1, 1]])
    w = np.einsum("bik,bk,bjk->bij", u, s, v)
    iters = 40  # (σ₂/σ₁)^80 ≤ 0.5^80: converged far below float32 eps
    sig, uu, vv = linalg.top_singular_pair(jnp.asarray(w, jnp.float32), iters=iters)
    ref = np.linalg.svd(w, compute_uv=False)[:, 0]
    eps = np.finfo(np.float32).eps
    np.testing.assert_allclose(np.asarray(sig), ref, rtol=50 * eps * iters)
    np.testing.assert_allclose(np.einsum("bij,bj->bi", w, np.asarray(vv)),
                               np.asarray(sig)[:, None] * np.asarray(uu), atol=1e-5)
    # a zero operator in the batch gives σ = 0 (no NaN) and leaves the others alone
    w0 = np.concatenate([w, np.zeros((1, 7, 5))])
    sig0 = linalg.top_singular_pair(jnp.asarray(w0, jnp.float32), iters=iters)[0]
    np.testing.assert_allclose(np.asarray(sig0), np.append(ref, 0.0), rtol=50 * eps * iters)
