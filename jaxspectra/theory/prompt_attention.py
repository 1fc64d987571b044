"""The prompt-attention model of paper 001 (eq. 2-4) and its §4 teacher–student data.

Model (one tunable token ``p``, value vector ``v``, key–query matrix ``W``; eq. 2):

    f(X; W, p, v) = φ(X W p)ᵀ X v,        X ∈ ℝ^{n×d},  φ = softmax over the n tokens.

Parameters are an explicit pytree ``{"p": (d,), "v": (d,)}`` plus optionally ``"W": (d, d)``
(``W = I`` when absent, the paper's §4 setting). Data ``X`` has shape ``(N, n, d)``. The keys of
example ``i`` are ``K_i = X_i W`` and the attention logits ``s_i = K_i p`` (eq. 4).

Linear-attention control (``attention="linear"``; the paper's Fig. 2a does not define it). We
replace softmax by its *linearisation at uniform attention*,

    φ_lin(s) = 1/n + (s - mean(s))/n,

a normalised linear map: its weights sum to one, it equals softmax at ``s = 0`` (the student's
uniform start) with the same Jacobian ``(I - 11ᵀ/n)/n = J(1/n)`` there, but it never saturates —
so it isolates the softmax *nonlinearity* (the paper's claim) rather than a change of scale.
``f_lin`` is affine in ``p`` for fixed ``v`` and bilinear in ``(p, v)``.

Loss: ``loss = (1/N) Σ_i ½ (f_i - y_i)²`` (eq. 3 with ℓ = ½(f - y)², so ``m = L = ℓ'' = 1``); it is
*mean*-normalised over examples, hence ``∇²loss = H_p / N`` at a zero-residual optimum (see
:mod:`jaxspectra.theory.operators`).

Attention ratio. ``R_i = max_j a_ij / min_j a_ij = exp(max_j s_ij - min_j s_ij)`` underflows
float32 (and can overflow float64) in the paper's own setting, so :func:`log10_attention_ratio`
works from the logits; over examples we aggregate with the **median**
(:func:`median_log10_ratio`).

The model functions are dtype-polymorphic pure functions (``jit``/``vmap``/``grad`` friendly);
run them under :func:`jaxspectra.precision.float64` for theory work, as
:func:`make_teacher_student` does.

Example:
  >>> import jax
  >>> from jaxspectra.precision import x64_scope
  >>> with x64_scope():
  ...     data = make_teacher_student(jax.random.key(0), N=8, d=5, sigma_p=1.0)
  ...     f = predict(data["teacher"], data["X"])
  ...     float(loss(data["teacher"], data["X"], data["y"])) < 1e-28
  True
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp

from jaxspectra.precision import float64
from jaxspectra.theory._checks import check_finite, check_ndim, check_params

ATTENTIONS = ("softmax", "linear")

Params = dict[str, jax.Array]


def _check_attention(attention: str) -> None:
    if attention not in ATTENTIONS:
        raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")


def keys(params: Params, X: jax.Array) -> jax.Array:
    """``K_i = X_i W`` for every example, ``(N, n, d)`` (``X`` itself when ``W`` is absent)."""
    W = params.get("W")
    return X if W is None else jnp.einsum("Nnd,de->Nne", X, W)


def attention_logits(params: Params, X: jax.Array) -> jax.Array:
    """Scores ``s_i = X_i W p`` of every token, shape ``(N, n)``."""
    check_params(params, X)
    return jnp.einsum("Nnd,d->Nn", keys(params, X), params["p"])


def linear_attention_weights(s: jax.Array) -> jax.Array:
    """The linear control ``φ_lin(s) = 1/n + (s - mean(s))/n`` over the last axis."""
    n = s.shape[-1]
    return (1.0 + s - jnp.mean(s, axis=-1, keepdims=True)) / n


def attention_weights(params: Params, X: jax.Array, attention: str = "softmax") -> jax.Array:
    """Attention weights ``a_i`` of every example, ``(N, n)``; rows sum to one."""
    _check_attention(attention)
    s = attention_logits(params, X)
    return jax.nn.softmax(s, axis=-1) if attention == "softmax" else linear_attention_weights(s)


def predict(params: Params, X: jax.Array, attention: str = "softmax") -> jax.Array:
    """``f(X_i) = a_iᵀ X_i v`` for every example (eq. 2), shape ``(N,)``."""
    a = attention_weights(params, X, attention)
    u = jnp.einsum("Nnd,d->Nn", X, params["v"])  # u_i = X_i v
    return jnp.sum(a * u, axis=-1)


def loss(params: Params, X: jax.Array, y: jax.Array, attention: str = "softmax") -> jax.Array:
    """``(1/N) Σ_i ½ (f(X_i) - y_i)²`` (eq. 3, mean over the N examples)."""
    check_ndim("y", y, 1, "(N,) targets")
    if jnp.shape(y)[0] != jnp.shape(X)[0]:
        raise ValueError(f"y must have shape (N,) = ({jnp.shape(X)[0]},), got {jnp.shape(y)}")
    check_finite("y", y)
    r = predict(params, X, attention) - y
    return 0.5 * jnp.mean(r * r)


@float64
def make_teacher_student(
    key: jax.Array,
    N: int,
    d: int,
    sigma_p: float,
    n: int | None = None,
    attention: str = "softmax",
    train_W: bool = False,
) -> dict[str, Any]:
    """The §4 teacher–student problem, float64.

    ``X_i`` has i.i.d. N(0, 1) entries, ``n = d`` unless given, ``W = I``; teacher
    ``p* ~ N(0, σ_p² I)`` (no 1/d: only that reproduces the paper's R_teacher ≈ 10 and 10²⁵, see
    the errata), ``v* ~ N(0, I)``; ``y_i = f(X_i; p*, v*)`` with the given ``attention`` (so the
    linear control can use realisable labels from the *same teacher parameters*); student
    ``p, v ~ N(0, I/d)``. With ``train_W`` the student (and teacher) also carry ``"W": I``.

    Returns ``{"X": (N, n, d), "y": (N,), "teacher": params, "student": params}``.
    """
    _check_attention(attention)
    for name, val in (("N", N), ("d", d)):
        if int(val) != val or val < 1:
            raise ValueError(f"{name} must be a positive integer, got {val!r}")
    n = d if n is None else n
    if int(n) != n or n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    if not (math.isfinite(sigma_p) and sigma_p > 0):
        raise ValueError(f"sigma_p must be a positive finite number, got {sigma_p!r}")
    return _teacher_student(key, int(N), int(d), float(sigma_p), int(n), attention, bool(train_W))


@functools.partial(jax.jit, static_argnums=(1, 2, 4, 5, 6))
def _teacher_student(key, N, d, sigma_p, n, attention, train_W):
    kx, kp, kv, ksp, ksv = jax.random.split(key, 5)
    f64 = jnp.float64
    X = jax.random.normal(kx, (N, n, d), f64)
    teacher = {"p": sigma_p * jax.random.normal(kp, (d,), f64), "v": jax.random.normal(kv, (d,), f64)}
    scale = 1.0 / math.sqrt(d)
    student = {"p": scale * jax.random.normal(ksp, (d,), f64),
               "v": scale * jax.random.normal(ksv, (d,), f64)}
    if train_W:
        teacher["W"] = jnp.eye(d, dtype=f64)
        student["W"] = jnp.eye(d, dtype=f64)
    y = predict(teacher, X, attention)
    return {"X": X, "y": y, "teacher": teacher, "student": student}


def log10_attention_ratio(params: Params, X: jax.Array) -> jax.Array:
    """Per-example ``log10 R_i = (max_j s_ij - min_j s_ij) / ln 10`` from the logits, ``(N,)``.

    Exact for any R (no probabilities are formed); softmax attention only.
    """
    s = attention_logits(params, X)
    return (jnp.max(s, axis=-1) - jnp.min(s, axis=-1)) / math.log(10.0)


def median_log10_ratio(params: Params, X: jax.Array) -> jax.Array:
    """The median over examples of :func:`log10_attention_ratio` (our aggregate of R)."""
    return jnp.median(log10_attention_ratio(params, X))
