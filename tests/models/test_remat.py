"""Gradient checkpointing as a named policy (``model.options.remat``): every policy gives the
loss and gradients of the plain model (remat only changes what the backward pass recomputes, so
the same float32 operations run: equal up to XLA's fusion round-off, ≤ a few ε₃₂ relative), the
default is the plain program, and an unknown policy is a clear error naming the choices."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspectra.models import get_model
from jaxspectra.models.layers import REMAT_POLICIES, Block, block_class
from jaxspectra.train.step import lm_loss

EPS32 = float(np.finfo(np.float32).eps)


def _loss_and_grads(model, params, tok, tgt):
    fn = jax.jit(jax.value_and_grad(lambda p: lm_loss(model.apply, p, tok, tgt, jax.random.key(0))))
    return fn(params)


def _has_remat(jaxpr) -> bool:
    return any("remat" in e.primitive.name or "checkpoint" in e.primitive.name
               for e in jaxpr.jaxpr.eqns)


@pytest.mark.slow  # 3 compiles of a 1-layer GPT (~5 s on an idle 2-core CPU)
@pytest.mark.parametrize("policy", ["block", "dots_saveable", "dots_with_no_batch_dims_saveable"])
def test_every_policy_gives_the_plain_loss_and_gradients(policy):
    plain, cfg = get_model("gpt-tiny", n_layers=1)
    remat, rcfg = get_model("gpt-tiny", n_layers=1, remat=policy)
    assert rcfg.remat_policy == policy
    rng = np.random.default_rng(0)
    tok = jnp.asarray(rng.integers(0, cfg.vocab_size, (2, 8)), jnp.int32)
    tgt = jnp.asarray(rng.integers(0, cfg.vocab_size, (2, 8)), jnp.int32)
    params = plain.init(jax.random.key(0), tok)
    assert jax.tree.structure(remat.init(jax.random.key(0), tok)) == jax.tree.structure(params)
    la, ga = _loss_and_grads(plain, params, tok, tgt)
    lb, gb = _loss_and_grads(remat, params, tok, tgt)
    tol = 16 * EPS32  # a handful of re-associated float32 roundings, relative
    assert abs(float(la - lb)) <= tol * abs(float(la))
    for a, b in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
        np.testing.assert_allclose(b, a, rtol=tol, atol=tol * float(jnp.max(jnp.abs(a))))
    # the remat is really there (and absent from the plain program)
    grad_jaxpr = lambda m: jax.make_jaxpr(
        jax.grad(lambda p: lm_loss(m.apply, p, tok, tgt, jax.random.key(0))))(params)
    assert _has_remat(grad_jaxpr(remat)) and not _has_remat(grad_jaxpr(plain))


def test_default_and_false_are_the_plain_block_and_true_is_block():
    _, cfg = get_model("gpt-tiny")
    assert cfg.remat is False and cfg.remat_policy == "none"
    assert block_class(cfg) is Block
    assert block_class(cfg.replace(remat="none")) is Block
    assert cfg.replace(remat=True).remat_policy == "block"
    assert block_class(cfg.replace(remat=True)) is not Block


def test_unknown_policy_is_a_clear_error_naming_the_choices():
    with pytest.raises(ValueError, match="remat='everything' is not a remat policy.*dots_saveable"):
        get_model("gpt-tiny", remat="everything")
    assert set(REMAT_POLICIES) == {"none", "block", "dots_saveable",
                                   "dots_with_no_batch_dims_saveable"}


@pytest.mark.slow
def test_remat_with_the_chunked_loss():
    """Both memory options together train the same as neither (float32, to round-off)."""
    plain, cfg = get_model("gpt-tiny", n_layers=1, tied=False)
    both, _ = get_model("gpt-tiny", n_layers=1, tied=False, remat="block", loss_chunk=3)
    rng = np.random.default_rng(1)
    tok = jnp.asarray(rng.integers(0, cfg.vocab_size, (2, 8)), jnp.int32)
    tgt = jnp.asarray(rng.integers(0, cfg.vocab_size, (2, 8)), jnp.int32)
    params = plain.init(jax.random.key(0), tok)
    la, ga = _loss_and_grads(plain, params, tok, tgt)
    lb, gb = _loss_and_grads(both, params, tok, tgt)
    # the chunked loss re-associates the d-term logit sums and the V-term log-sum-exp
    tol = 4 * (cfg.d_model + cfg.vocab_size + tok.size) * EPS32
    assert abs(float(la - lb)) <= tol
    for a, b in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
        np.testing.assert_allclose(b, a, rtol=tol, atol=tol * float(jnp.max(jnp.abs(a))))
