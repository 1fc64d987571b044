"""Frozen, validated configs of the models (one dataclass per model family).

Every config checks itself at construction (``__post_init__``) and raises a ``ValueError`` that
names the field and the fix, so a bad preset or override fails before any compute. Dtypes are
names (``"float32"``, ``"bfloat16"``) so configs serialise to JSON/TOML.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from jaxspectra.models.layers import ACTIVATIONS, DTYPES, REMAT_POLICIES

NORMS = ("layernorm", "rmsnorm")
POSITIONS = ("learned", "rope", "none")
MLPS = ("mlp", "swiglu")
MOE_IMPLS = ("ragged", "dense")
ATTENTION_IMPLS = ("auto", "xla", "cudnn")


def _fail(cls: str, msg: str) -> None:
    raise ValueError(f"{cls}: {msg}")


def _positive(cfg, *names: str) -> None:
    for n in names:
        v = getattr(cfg, n)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            _fail(type(cfg).__name__, f"{n} must be a positive int, got {v!r}")


def _choice(cfg, name: str, allowed) -> None:
    v = getattr(cfg, name)
    if v not in allowed:
        _fail(type(cfg).__name__, f"{name}={v!r} is not one of {list(allowed)}")


@dataclass(frozen=True, kw_only=True)
class TransformerConfig:
    """Fields shared by every transformer in :mod:`jaxspectra.models`.

    Attributes:
      n_layers, d_model, n_heads, d_mlp: depth, width, heads (``d_model % n_heads == 0``) and the
        MLP hidden width (per expert for MoE).
      norm: ``"layernorm"`` | ``"rmsnorm"``; ``norm_eps``.
      activation: ``"gelu"`` (exact), ``"gelu_tanh"``, ``"relu2"`` (ReLU²), ``"relu"``, ``"silu"``.
      mlp: ``"mlp"`` (fc → act → proj) | ``"swiglu"`` (gate/up/down).
      bias: biases on every dense layer (and LayerNorm).
      fused_qkv: one ``qkv`` kernel ``(d, 3d)`` (Q|K|V) instead of ``q``, ``k``, ``v``.
      prenorm: pre-norm blocks (GPT-2, LLaMA, ViT) or post-norm (original Transformer).
      init_std: std of every N(0, std²) weight init (embeddings, head, blocks).
      scale_residual_init: divide the init std of the projections that write into the residual
        stream (``o``, ``proj``/``down``) by √(2·n_layers) (GPT-2 / nanoGPT).
      mup: paper 003 Table 4 footnotes 1-3 (μP as used for NanoGPT-5M): blocks' 2-D weights
        initialised with std ``init_std·mup_init_mult``, W_Q zero-initialised, and learning-rate
        multipliers ``mup_lr_block`` on the blocks' 2-D weights and ``mup_lr_embed`` on the
        embeddings (see :func:`jaxspectra.models.mup.lr_multipliers`).
      n_experts, top_k, moe_renormalize, moe_impl: mixture of experts (``n_experts = 0``: dense).
      attention_impl: the default (non-probe) attention path: ``"auto"`` (cuDNN flash attention on
        GPUs for bf16/fp16, XLA elsewhere), ``"xla"`` or ``"cudnn"``
        (:func:`jaxspectra.models.layers.fused_attention`).
      remat: gradient checkpointing of each block (``nn.remat``; parameter names unchanged):
        ``"none"`` (default; ``False`` means the same), ``"block"`` (``True`` means the same:
        save only each block's input, recompute the whole block in the backward pass),
        ``"dots_saveable"`` (keep every matmul output, recompute the elementwise ops) or
        ``"dots_with_no_batch_dims_saveable"`` (keep the weight matmuls' outputs, recompute the
        attention score/value products and the elementwise ops); see
        :data:`jaxspectra.models.layers.REMAT_POLICIES`.
      dtype, param_dtype: compute and storage dtype names.
    """

    n_layers: int
    d_model: int
    n_heads: int
    d_mlp: int
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    activation: str = "gelu"
    mlp: str = "mlp"
    bias: bool = False
    fused_qkv: bool = False
    prenorm: bool = True
    init_std: float = 0.02
    scale_residual_init: bool = False
    mup: bool = False
    mup_init_mult: float = 4.0
    mup_lr_block: float = 16.0
    mup_lr_embed: float = 4.0
    n_experts: int = 0
    top_k: int = 0
    moe_renormalize: bool = True
    moe_impl: str = "ragged"
    attention_impl: str = "auto"
    remat: bool | str = False
    dtype: str = "float32"
    param_dtype: str = "float32"

    def __post_init__(self):
        name = type(self).__name__
        _positive(self, "n_layers", "d_model", "n_heads", "d_mlp")
        if self.d_model % self.n_heads:
            _fail(
                name,
                f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}; pick "
                f"n_heads among the divisors of d_model",
            )
        _choice(self, "norm", NORMS)
        _choice(self, "activation", ACTIVATIONS)
        _choice(self, "mlp", MLPS)
        _choice(self, "moe_impl", MOE_IMPLS)
        _choice(self, "attention_impl", ATTENTION_IMPLS)
        _choice(self, "dtype", DTYPES)
        _choice(self, "param_dtype", DTYPES)
        if not isinstance(self.remat, bool) and self.remat not in REMAT_POLICIES:
            _fail(
                name,
                f"remat={self.remat!r} is not a remat policy; choose one of "
                f"{list(REMAT_POLICIES)} (or true/false for 'block'/'none')",
            )
        for f in ("init_std", "norm_eps", "mup_init_mult", "mup_lr_block", "mup_lr_embed"):
            v = getattr(self, f)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                _fail(name, f"{f} must be a finite non-negative number, got {v!r}")
        if self.n_experts < 0:
            _fail(name, f"n_experts must be >= 0, got {self.n_experts}")
        if self.n_experts and not (1 <= self.top_k <= self.n_experts):
            _fail(name, f"top_k={self.top_k} must be in [1, n_experts={self.n_experts}]")
        if not self.n_experts and self.top_k:
            _fail(name, f"top_k={self.top_k} given without experts; set n_experts > 0")

    @property
    def remat_policy(self) -> str:
        """``remat`` as a policy name (``True`` → ``"block"``, ``False`` → ``"none"``)."""
        if isinstance(self.remat, bool):
            return "block" if self.remat else "none"
        return self.remat

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def block_init_std(self) -> float:
        """Init std of the blocks' 2-D weights (×``mup_init_mult`` under μP)."""
        return self.init_std * (self.mup_init_mult if self.mup else 1.0)

    @property
    def residual_init_std(self) -> float:
        """Init std of ``o`` and ``proj``/``down``: ÷√(2·n_layers) with ``scale_residual_init``
        (paper 003's footnote 2 prints "2·#layers": the extraction dropped the √, see
        ``../shared/papers/README.md``; nanoGPT divides by √(2L))."""
        s = self.block_init_std
        return s / math.sqrt(2 * self.n_layers) if self.scale_residual_init else s

    @property
    def zero_query_init(self) -> bool:
        return self.mup

    def replace(self, **changes):
        """``dataclasses.replace`` that names unknown fields."""
        return replace_config(self, **changes)


def replace_config(cfg, **changes):
    known = {f.name for f in dataclasses.fields(cfg)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ValueError(
            f"{type(cfg).__name__} has no field(s) {unknown}; known fields: {sorted(known)}"
        )
    return dataclasses.replace(cfg, **changes)


@dataclass(frozen=True, kw_only=True)
class GPTConfig(TransformerConfig):
    """Decoder-only LM (GPT-2, modded GPT-2, LLaMA, LLaMA-MoE).

    Attributes:
      vocab_size: token vocabulary (embedding rows and logits).
      max_seq_len: the longest sequence (rows of the learned position table; a bound otherwise).
      position: ``"learned"`` (``pos_embed``), ``"rope"`` (rotary, base ``rope_base``) or
        ``"none"``.
      tied: the head reuses the token embedding (``logits = h · Eᵀ``; no ``head`` leaf).
      loss_chunk: how the training loss (``jaxspectra.train.step.lm_loss``) is computed: ``0``
        (default) from the full float32 logits ``[B, T, V]``; ``c > 0`` by
        :func:`jaxspectra.models.losses.chunked_lm_loss` in chunks of ``c`` sequence positions
        (float32 logits of ``B·c`` tokens at a time, never all ``B·T``; e.g. 128). The forward
        ``__call__`` still returns the full logits.
    """

    vocab_size: int
    max_seq_len: int
    position: str = "learned"
    rope_base: float = 10000.0
    tied: bool = False
    loss_chunk: int = 0

    def __post_init__(self):
        super().__post_init__()
        _positive(self, "vocab_size", "max_seq_len")
        c = self.loss_chunk
        if isinstance(c, bool) or not isinstance(c, int) or c < 0:
            _fail(
                "GPTConfig",
                f"loss_chunk must be an int >= 0 (0 = full float32 logits, c > 0 = chunks of c "
                f"sequence positions, e.g. 128), got {c!r}",
            )
        _choice(self, "position", POSITIONS)
        if self.position == "rope" and self.head_dim % 2:
            _fail(
                "GPTConfig",
                f"RoPE needs an even head dim, got d_model/n_heads = {self.head_dim}",
            )


@dataclass(frozen=True, kw_only=True)
class ViTConfig(TransformerConfig):
    """Vision transformer on square images (paper 001's tiny ViT on MNIST).

    Images ``[B, H, W]`` or ``[B, H, W, C]`` are cut into non-overlapping ``patch_size`` patches
    (row-major), linearly embedded (``patch_embed``), prefixed with a learned ``cls`` token, given
    learned ``pos_embed`` (1 + number of patches rows); the head reads the final [CLS] vector after
    ``ln_f``.
    """

    image_size: int = 28
    patch_size: int = 4
    channels: int = 1
    n_classes: int = 10
    norm: str = "layernorm"
    activation: str = "gelu"
    bias: bool = True
    fused_qkv: bool = True

    def __post_init__(self):
        super().__post_init__()
        _positive(self, "image_size", "patch_size", "channels", "n_classes")
        if self.image_size % self.patch_size:
            _fail(
                "ViTConfig",
                f"image_size={self.image_size} is not divisible by patch_size={self.patch_size}",
            )

    @property
    def n_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass(frozen=True, kw_only=True)
class EncoderConfig(TransformerConfig):
    """Bidirectional encoder with a learned [CLS] token (paper 001 App. K).

    Tokens ``[B, T]`` (``T ≤ max_seq_len``) are embedded, a learned ``cls`` vector is prepended,
    learned positions ``0..T`` are added (``pos_embed`` has ``max_seq_len + 1`` rows), blocks run
    without any attention mask and a linear ``head`` maps the final [CLS] vector to
    ``n_outputs`` logits.
    """

    vocab_size: int = 30522
    max_seq_len: int = 64
    n_outputs: int = 2
    bias: bool = True
    fused_qkv: bool = True
    prenorm: bool = False

    def __post_init__(self):
        super().__post_init__()
        _positive(self, "vocab_size", "max_seq_len", "n_outputs")


@dataclass(frozen=True, kw_only=True)
class OneLayerConfig:
    """Paper 002 §4.1's one-layer single-head transformer.

    ``X [B, n, d]`` (real features) → ``Z = softmax(X W_Q (X W_K)ᵀ/√d) X W_V W_C`` ``[B, n, C]``.
    W_Q, W_K, W_V ∈ ℝ^{d×d} are trained and initialised N(0, σ²) with σ = ``sigma``; W_C ∈ ℝ^{d×C}
    is fixed (not a parameter): N(0, ``w_c_std``²) entries drawn from ``PRNGKey(w_c_seed)``
    (``w_c_std=None`` → 1/√d). The paper does not say how W_C is drawn.
    """

    d: int = 16
    n_classes: int = 4
    seq_len: int = 8
    sigma: float = 0.01
    w_c_seed: int = 0
    w_c_std: float | None = None
    dtype: str = "float32"
    param_dtype: str = "float32"

    def __post_init__(self):
        _positive(self, "d", "n_classes", "seq_len")
        if not (math.isfinite(self.sigma) and self.sigma >= 0):
            _fail("OneLayerConfig", f"sigma must be finite and >= 0, got {self.sigma!r}")
        if self.w_c_std is not None and not (math.isfinite(self.w_c_std) and self.w_c_std > 0):
            _fail("OneLayerConfig", f"w_c_std must be positive, got {self.w_c_std!r}")
        _choice(self, "dtype", DTYPES)
        _choice(self, "param_dtype", DTYPES)

    def replace(self, **changes):
        return replace_config(self, **changes)
