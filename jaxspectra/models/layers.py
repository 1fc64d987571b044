"""Transformer building blocks shared by the GPT/LLaMA, ViT and CLS-encoder models.

Every module names its parameters after :mod:`jaxspectra.groups`: attention projections ``q``,
``k``, ``v`` (or a fused ``qkv`` kernel ``(d, 3d)`` laid out Q|K|V) and ``o``; MLP ``fc``/``proj``
or SwiGLU ``gate``/``up``/``down``; a mixture of experts under ``moe`` with expert kernels stacked
on a leading expert axis (``(E, fan_in, fan_out)``) and a ``router``; norms ``ln_*``. Dense kernels
are ``(fan_in, fan_out)`` (Flax's layout).

Mixed precision: parameters are stored in ``param_dtype`` and matmuls run in ``dtype`` (e.g.
bfloat16). Norm statistics and attention softmaxes are computed in at least float32, and the
residual stream stays in ``param_dtype`` (as under PyTorch autocast).

The modules read their hyper-parameters from a config object with the fields of
:class:`jaxspectra.models.config.TransformerConfig`.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

DTYPES = {
    "float32": jnp.float32,
    "bfloat16": jnp.bfloat16,
    "float16": jnp.float16,
    "float64": jnp.float64,
}


def resolve_dtype(name: str) -> Any:
    """Map a dtype name of a config (``"bfloat16"``, ...) to the JAX dtype."""
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; known: {sorted(DTYPES)}") from None


def _softmax_dtype(dtype: Any) -> Any:
    """At least float32 (float64 stays float64)."""
    return jnp.promote_types(dtype, jnp.float32)


def activation_fn(name: str):
    """``gelu`` (exact erf form, as ``torch.nn.GELU()``), ``gelu_tanh``, ``relu2`` (ReLU²),
    ``relu`` or ``silu``."""
    if name == "gelu":
        return lambda x: jax.nn.gelu(x, approximate=False)
    if name == "gelu_tanh":
        return lambda x: jax.nn.gelu(x, approximate=True)
    if name == "relu2":
        return lambda x: jnp.square(jax.nn.relu(x))
    if name == "relu":
        return jax.nn.relu
    if name == "silu":
        return jax.nn.silu
    raise ValueError(f"unknown activation {name!r}")


ACTIVATIONS = ("gelu", "gelu_tanh", "relu2", "relu", "silu")


# --------------------------------------------------------------------------------------- norms
class Norm(nn.Module):
    """LayerNorm (``kind="layernorm"``) or RMSNorm (``kind="rmsnorm"``) over the last axis.

    LayerNorm: ``(x - mean) / sqrt(var + eps) * scale (+ bias)``; RMSNorm:
    ``x / sqrt(mean(x²) + eps) * scale`` (Zhang & Sennrich 2019). Statistics in ≥ float32; the
    result is cast to ``dtype``. ``bias`` only applies to LayerNorm.
    """

    kind: str = "layernorm"
    eps: float = 1e-5
    use_bias: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = x.shape[-1]
        xf = x.astype(_softmax_dtype(x.dtype))
        scale = self.param("scale", nn.initializers.ones, (d,), self.param_dtype)
        if self.kind == "layernorm":
            xc = xf - xf.mean(-1, keepdims=True)
            y = xc * jax.lax.rsqrt(jnp.mean(xc * xc, -1, keepdims=True) + self.eps)
        elif self.kind == "rmsnorm":
            y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, -1, keepdims=True) + self.eps)
        else:
            raise ValueError(f"unknown norm {self.kind!r}; use 'layernorm' or 'rmsnorm'")
        y = y * scale.astype(y.dtype)
        if self.use_bias and self.kind == "layernorm":
            bias = self.param("bias", nn.initializers.zeros, (d,), self.param_dtype)
            y = y + bias.astype(y.dtype)
        return y.astype(self.dtype)


def make_norm(cfg: Any, name: str) -> Norm:
    return Norm(
        kind=cfg.norm,
        eps=cfg.norm_eps,
        use_bias=cfg.bias,
        dtype=resolve_dtype(cfg.dtype),
        param_dtype=resolve_dtype(cfg.param_dtype),
        name=name,
    )


# ---------------------------------------------------------------------------------------- RoPE
def rope_tables(seq_len: int, head_dim: int, base: float, dtype: Any = jnp.float32):
    """``cos, sin`` tables ``[T, head_dim]`` of rotary embeddings (Su et al. 2021), in the
    rotate-half layout of HF LLaMA / modded-nanogpt: frequency ``base^(-2i/head_dim)`` for
    ``i < head_dim/2`` on both halves."""
    inv = 1.0 / (base ** (jnp.arange(0, head_dim // 2, dtype=dtype) * 2.0 / head_dim))
    ang = jnp.arange(seq_len, dtype=dtype)[:, None] * inv[None, :]
    ang = jnp.concatenate([ang, ang], axis=-1)
    return jnp.cos(ang), jnp.sin(ang)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate ``x`` ``[B, T, H, Dh]`` by position: ``x·cos + rotate_half(x)·sin`` with
    ``rotate_half(x) = (-x₂, x₁)`` for the halves ``x = (x₁, x₂)``."""
    h = x.shape[-1] // 2
    xf = x.astype(cos.dtype)
    rot = jnp.concatenate([-xf[..., h:], xf[..., :h]], axis=-1)
    out = xf * cos[None, :, None, :] + rot * sin[None, :, None, :]
    return out.astype(x.dtype)


# ----------------------------------------------------------------------------------- attention
def attention_scores(q, k, scale: float):
    """Pre-softmax scores ``q kᵀ · scale`` ``[B, H, T, S]`` in ≥ float32 (no mask)."""
    return jnp.einsum("bthd,bshd->bhts", q, k,
                      preferred_element_type=_softmax_dtype(q.dtype)) * scale


def explicit_attention(q, k, v, causal: bool, scale: float):
    """Attention with its probabilities materialised: returns ``(out [B,T,H,Dh], p [B,H,T,S])``.

    ``p = softmax(q kᵀ · scale)`` (masked to ``s ≤ t`` when causal), computed in ≥ float32.
    """
    s = attention_scores(q, k, scale)
    sdt = s.dtype
    if causal:
        t, sl = s.shape[-2], s.shape[-1]
        mask = jnp.tril(jnp.ones((t, sl), dtype=bool))
        s = jnp.where(mask, s, jnp.finfo(sdt).min)
    p = jax.nn.softmax(s, axis=-1)
    out = jnp.einsum("bhts,bshd->bthd", p.astype(v.dtype), v)
    return out, p


def _cudnn_ok(q) -> bool:
    return (
        jax.default_backend() == "gpu"
        and q.dtype in (jnp.bfloat16, jnp.float16)
        and q.shape[-1] <= 128
        and q.shape[-1] % 8 == 0
    )


def fused_attention(q, k, v, causal: bool, scale: float, impl: str = "auto"):
    """:func:`jax.nn.dot_product_attention` on ``[B, T, H, Dh]``.

    ``impl="xla"`` or ``"cudnn"`` are passed through. ``"auto"`` picks cuDNN's fused (flash)
    kernel on a GPU backend for bf16/fp16 inputs with a head dim ≤ 128 divisible by 8 (JAX's own
    ``implementation=None`` always picks XLA today), and XLA everywhere else (CPU, TPU, float32).
    If cuDNN refuses while tracing (version/shape checks) it falls back to XLA.
    """
    if impl == "auto":
        if _cudnn_ok(q):
            try:
                return jax.nn.dot_product_attention(
                    q, k, v, scale=scale, is_causal=causal, implementation="cudnn"
                )
            except (RuntimeError, ValueError, NotImplementedError):
                pass
        impl = "xla"
    return jax.nn.dot_product_attention(q, k, v, scale=scale, is_causal=causal, implementation=impl)


def _normal(std: float):
    return nn.initializers.normal(stddev=std) if std > 0 else nn.initializers.zeros


def _qkv_init(std: float, zero_query: bool):
    """Init of a fused ``(d, 3d)`` kernel: N(0, std²) with the Q block zeroed when asked."""

    def init(key, shape, dtype=jnp.float32):
        w = jax.random.normal(key, shape, dtype) * std
        if zero_query:
            w = w.at[..., : shape[-1] // 3].set(0)
        return w

    return init


class Attention(nn.Module):
    """Multi-head self-attention with ``q,k,v,o`` (or fused ``qkv`` and ``o``) projections.

    ``__call__(x, rope=None, return_probs=False) -> (y, probs | None)``. The default path is
    :func:`jax.nn.dot_product_attention` (XLA or cuDNN, chosen by JAX); ``return_probs=True``
    takes the explicit softmax path and returns the ``[B, H, T, T]`` probabilities.
    """

    cfg: Any
    causal: bool = True

    def setup(self):
        c = self.cfg
        d = c.d_model
        dt, pdt = resolve_dtype(c.dtype), resolve_dtype(c.param_dtype)
        std = c.block_init_std
        dense = lambda n, init, name: nn.Dense(
            n, use_bias=c.bias, dtype=dt, param_dtype=pdt, kernel_init=init, name=name
        )
        if c.fused_qkv:
            self.qkv = dense(3 * d, _qkv_init(std, c.zero_query_init), "qkv")
        else:
            self.q = dense(d, _normal(0.0 if c.zero_query_init else std), "q")
            self.k = dense(d, _normal(std), "k")
            self.v = dense(d, _normal(std), "v")
        self.o = dense(d, _normal(c.residual_init_std), "o")

    def __call__(self, x, rope=None, return_probs: bool = False):
        c = self.cfg
        b, t, d = x.shape
        h = c.n_heads
        if c.fused_qkv:
            q, k, v = jnp.split(self.qkv(x), 3, axis=-1)
        else:
            q, k, v = self.q(x), self.k(x), self.v(x)
        q, k, v = (z.reshape(b, t, h, d // h) for z in (q, k, v))
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        scale = 1.0 / math.sqrt(d // h)
        if return_probs:  # the scores are sown for the attention monitor (no second pass)
            self.sow("intermediates", "attention_logits", attention_scores(q, k, scale))
            out, probs = explicit_attention(q, k, v, self.causal, scale)
        else:
            out = fused_attention(q, k, v, self.causal, scale, c.attention_impl)
            probs = None
        return self.o(out.reshape(b, t, d)), probs


# ----------------------------------------------------------------------------------------- MLP
class MLP(nn.Module):
    """``proj(act(fc(x)))`` (``mlp="mlp"``) or SwiGLU ``down(act(gate(x)) ⊙ up(x))``
    (``mlp="swiglu"``, Shazeer 2020; with ``act="silu"`` as in LLaMA)."""

    cfg: Any

    def setup(self):
        c = self.cfg
        dt, pdt = resolve_dtype(c.dtype), resolve_dtype(c.param_dtype)
        dense = lambda n, std, name: nn.Dense(
            n, use_bias=c.bias, dtype=dt, param_dtype=pdt, kernel_init=_normal(std), name=name
        )
        if c.mlp == "swiglu":
            self.gate = dense(c.d_mlp, c.block_init_std, "gate")
            self.up = dense(c.d_mlp, c.block_init_std, "up")
            self.down = dense(c.d_model, c.residual_init_std, "down")
        else:
            self.fc = dense(c.d_mlp, c.block_init_std, "fc")
            self.proj = dense(c.d_model, c.residual_init_std, "proj")

    def __call__(self, x):
        act = activation_fn(self.cfg.activation)
        if self.cfg.mlp == "swiglu":
            return self.down(act(self.gate(x)) * self.up(x))
        return self.proj(act(self.fc(x)))


class StackedDense(nn.Module):
    """A stack of ``n`` bias-free kernels ``(n, fan_in, fan_out)`` (one per expert)."""

    n: int
    fan_in: int
    fan_out: int
    std: float
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self):
        return self.param(
            "kernel", _normal(self.std), (self.n, self.fan_in, self.fan_out), self.param_dtype
        )


def route_top_k(logits: jax.Array, k: int, renormalize: bool):
    """Softmax router followed by top-``k``: returns ``(weights [N, k], experts [N, k])``.

    With ``renormalize`` the ``k`` kept probabilities are rescaled to sum to one (Mixtral)."""
    probs = jax.nn.softmax(logits.astype(_softmax_dtype(logits.dtype)), axis=-1)
    w, idx = jax.lax.top_k(probs, k)
    if renormalize:
        w = w / jnp.sum(w, axis=-1, keepdims=True)
    return w, idx


def load_balance_loss(logits: jax.Array, experts: jax.Array) -> jax.Array:
    """Switch-Transformer auxiliary loss ``E · Σ_e f_e · P_e`` (Fedus et al. 2021, eq. 4, with
    top-k assignments): ``f_e`` the fraction of the ``N·k`` assignments sent to expert ``e``,
    ``P_e`` the mean router probability of ``e``. Equals 1 under perfectly uniform routing."""
    n_exp = logits.shape[-1]
    probs = jax.nn.softmax(logits.astype(_softmax_dtype(logits.dtype)), axis=-1)
    frac = jnp.mean(jax.nn.one_hot(experts, n_exp, dtype=probs.dtype), axis=(0, 1))
    return n_exp * jnp.sum(frac * jnp.mean(probs, axis=0))


class MoE(nn.Module):
    """Token-choice mixture of SwiGLU (or plain MLP) experts with a softmax top-``k`` router.

    Parameters (under the ``moe`` scope): ``router/kernel (d, E)``, expert kernels
    ``gate/kernel (E, d, f)``, ``up/kernel (E, d, f)``, ``down/kernel (E, f, d)`` (SwiGLU) or
    ``fc (E, d, f)``, ``proj (E, f, d)``. ``y = Σ_{e ∈ topk(x)} w_e(x) · expert_e(x)``.

    ``cfg.moe_impl``: ``"ragged"`` sorts the ``N·k`` (token, expert) pairs by expert and runs
    :func:`jax.lax.ragged_dot` (only the chosen experts are computed); ``"dense"`` runs every
    expert on every token and masks (E/k times the FLOPs; a simple reference).
    No capacity limit is applied. Each MoE layer sows its :func:`load_balance_loss` into the
    ``"intermediates"`` collection (``apply(..., mutable=["intermediates"])`` returns it; add it to
    the loss with a small weight, e.g. 0.01, if wanted — the default apply ignores it).
    """

    cfg: Any

    def setup(self):
        c = self.cfg
        pdt = resolve_dtype(c.param_dtype)
        e, d, f = c.n_experts, c.d_model, c.d_mlp
        self.router = nn.Dense(
            e,
            use_bias=False,
            dtype=_softmax_dtype(resolve_dtype(c.dtype)),
            param_dtype=pdt,
            kernel_init=_normal(c.block_init_std),
            name="router",
        )
        sd = lambda fi, fo, std, name: StackedDense(e, fi, fo, std, pdt, name=name)
        if c.mlp == "swiglu":
            self.gate = sd(d, f, c.block_init_std, "gate")
            self.up = sd(d, f, c.block_init_std, "up")
            self.down = sd(f, d, c.residual_init_std, "down")
        else:
            self.fc = sd(d, f, c.block_init_std, "fc")
            self.proj = sd(f, d, c.residual_init_std, "proj")

    def _kernels(self):
        dt = resolve_dtype(self.cfg.dtype)
        if self.cfg.mlp == "swiglu":
            return [w().astype(dt) for w in (self.gate, self.up, self.down)]
        return [self.fc().astype(dt), None, self.proj().astype(dt)]

    def __call__(self, x):
        c = self.cfg
        dt = resolve_dtype(c.dtype)
        shape = x.shape
        xf = x.reshape(-1, shape[-1]).astype(dt)
        logits = self.router(xf)
        w, idx = route_top_k(logits, c.top_k, c.moe_renormalize)
        self.sow("intermediates", "load_balance_loss", load_balance_loss(logits, idx))
        act = activation_fn(c.activation)
        w_in, w_up, w_out = self._kernels()
        if c.moe_impl == "dense":
            h = jnp.einsum("nd,edf->enf", xf, w_in)
            h = act(h) * jnp.einsum("nd,edf->enf", xf, w_up) if w_up is not None else act(h)
            ye = jnp.einsum("enf,efd->end", h, w_out)
            comb = jnp.sum(jax.nn.one_hot(idx, c.n_experts, dtype=w.dtype) * w[..., None], 1)
            y = jnp.einsum("ne,end->nd", comb.astype(ye.dtype), ye)
        else:
            n, k = idx.shape
            flat = idx.reshape(-1)
            order = jnp.argsort(flat, stable=True)
            token = order // k
            sizes = jnp.bincount(flat, length=c.n_experts).astype(jnp.int32)
            xs = xf[token]
            h = jax.lax.ragged_dot(xs, w_in, sizes)
            h = act(h) * jax.lax.ragged_dot(xs, w_up, sizes) if w_up is not None else act(h)
            ys = jax.lax.ragged_dot(h, w_out, sizes)
            ys = ys * w.reshape(-1)[order][:, None].astype(ys.dtype)
            y = jnp.zeros_like(xf).at[token].add(ys)
        return y.reshape(shape).astype(dt)


# --------------------------------------------------------------------------------------- block
class Block(nn.Module):
    """A transformer block: pre-norm ``x + attn(ln_1(x))``, ``x + mlp(ln_2(x))`` or, with
    ``cfg.prenorm=False``, post-norm ``ln_1(x + attn(x))``, ``ln_2(x + mlp(x))`` (the original
    Transformer / ``nn.TransformerEncoderLayer`` default). The feed-forward part is ``mlp`` or, when
    ``cfg.n_experts > 0``, ``moe``."""

    cfg: Any
    causal: bool = True

    def setup(self):
        c = self.cfg
        self.ln_1 = make_norm(c, "ln_1")
        self.attn = Attention(c, self.causal, name="attn")
        self.ln_2 = make_norm(c, "ln_2")
        if getattr(c, "n_experts", 0):
            self.moe = MoE(c, name="moe")
        else:
            self.mlp = MLP(c, name="mlp")

    def ff(self, x):
        return self.moe(x) if getattr(self.cfg, "n_experts", 0) else self.mlp(x)

    def __call__(self, x, rope=None, return_probs: bool = False):
        if self.cfg.prenorm:
            a, p = self.attn(self.ln_1(x), rope, return_probs)
            x = x + a
            x = x + self.ff(self.ln_2(x))
        else:
            a, p = self.attn(x, rope, return_probs)
            x = self.ln_1(x + a).astype(x.dtype)
            x = self.ln_2(x + self.ff(x)).astype(x.dtype)
        return x, p


REMAT_POLICIES: dict[str, Any] = {
    "none": None,
    "block": None,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
"""Remat policies of a block by name (``cfg.remat``): ``"none"`` no remat; ``"block"`` save only
the block's input and recompute it all (``jax.checkpoint`` without a policy); the others are the
named :mod:`jax.checkpoint_policies` (which residuals the backward pass keeps)."""


def remat_policy_name(cfg: Any) -> str:
    """``cfg.remat`` as a name of :data:`REMAT_POLICIES` (``True``/``False`` → block/none)."""
    r = getattr(cfg, "remat", False)
    name = ("block" if r else "none") if isinstance(r, bool) else r
    if name not in REMAT_POLICIES:
        raise ValueError(
            f"remat={r!r} is not a remat policy; choose one of {list(REMAT_POLICIES)}"
        )
    return name


def block_class(cfg: Any):
    """:class:`Block`, wrapped in ``nn.remat`` with the policy named by ``cfg.remat`` (see
    :data:`REMAT_POLICIES`; ``return_probs`` static). ``"none"`` returns :class:`Block` itself,
    so the default program is unchanged."""
    name = remat_policy_name(cfg)
    if name == "none":
        return Block
    return nn.remat(Block, static_argnums=(3,), policy=REMAT_POLICIES[name])


def run_blocks(blocks, h, rope, return_attention: bool, return_hidden: bool):
    """Apply ``blocks`` in order; returns ``(h, hidden, attention)`` where ``hidden`` holds the
    residual stream before each block and after the last (when asked) and ``attention`` each
    block's probabilities (when asked). Shared by every model's ``__call__``."""
    hidden, attn = [], []
    for blk in blocks:
        if return_hidden:
            hidden.append(h)
        h, p = blk(h, rope, return_attention)
        if return_attention:
            attn.append(p)
    if return_hidden:
        hidden.append(h)
    return h, hidden, attn


def with_aux(logits, hidden, attn, return_attention: bool, return_hidden: bool):
    """``logits`` alone, or ``(logits, aux)`` with ``aux["attention"]`` / ``aux["hidden"]``."""
    if not (return_attention or return_hidden):
        return logits
    aux = {}
    if return_attention:
        aux["attention"] = attn
    if return_hidden:
        aux["hidden"] = hidden
    return logits, aux
