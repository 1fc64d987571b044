"""``train_step``: the trainer's whole GPT-2-small step beside a PyTorch ``torch.compile`` peer.

Candidate: the step :mod:`jaxspectra.train` compiles (``gpt2-small``, bf16 compute / fp32 params,
B=16, T=1024: forward, backward, global-norm clip 1.0, AdamW (0.9, 0.95), weight decay 0.1,
donated state), fed one fixed device-resident batch. Rows also time a plain JAX forward+backward
(no optimiser) to separate the optimiser's cost. Peer, in the same process: a nanoGPT-style GPT-2
small written here in PyTorch (fused qkv, ``scaled_dot_product_attention``, tanh-GELU, tied
head), bf16 autocast, ``torch.compile``, ``clip_grad_norm_`` and fused AdamW.

MFU = tokens/s × FLOPs/token / peak, FLOPs/token = 6·N(non-embedding matmul weights, head
included) + 12·L·T·d (:func:`jaxspectra.models.flops_per_token`), against the measured H100 bf16
peak (790 TFLOP/s) and the spec (989). Goal: ≥ 1.0× the peer and ≥ 50% MFU (measured).
``--quick``: a tiny GPT on CPU, torch eager if installed (skipped otherwise).
"""

from __future__ import annotations

import math
import tempfile

import jax

from .harness import BenchResult, benchmark, time_fn

PEAK_MEASURED, PEAK_SPEC = 790.0, 989.0


def gpt2_setup(quick: bool, options: dict | None = None, prefix: str = "bench_train_step_"):
    """The GPT-2-small (``quick``: a 2-layer toy) AdamW trainer setup the step benchmarks time:
    ``(setup, B, T)``; ``options`` are extra ``model.options`` (e.g. ``loss_chunk``, ``remat``)."""
    from jaxspectra.train.config import from_dict
    from jaxspectra.train.setup import setup

    opts = dict(options or {})
    if quick:
        model = {"name": "gpt-tiny", "dtype": "float32",
                 "options": {"n_layers": 2, "d_model": 64, "n_heads": 4, "d_mlp": 256,
                             "vocab_size": 256, "max_seq_len": 64, **opts}}
        B, T = 4, 64
    else:
        model = {"name": "gpt2-small", "dtype": "bfloat16", **({"options": opts} if opts else {})}
        B, T = 16, 1024
    cfg = from_dict({
        "run": {"dir": tempfile.mkdtemp(prefix=prefix), "num_devices": 1},
        "model": model,
        "data": {"source": "synthetic", "batch_size": B, "seq_len": T, "eval_batches": 0},
        "optim": {"name": "adamw", "learning_rate": 6e-4, "clip_norm": 1.0,
                  "options": {"b1": 0.9, "b2": 0.95, "weight_decay": 0.1}},
        "train": {"steps": 1000, "progress": False},
        "checkpoint": {"every": 0, "keep": 0},
    })
    return setup(cfg), B, T


def _jax_candidate(quick: bool):
    from jaxspectra.train.engine import Engine
    from jaxspectra.train.resume import run_flops_per_token

    s, B, T = gpt2_setup(quick)
    eng = Engine(s)
    state = [eng.init_state(0)]
    batch = eng.batch(s.dataset, 0, 0)
    plain = eng.step(())

    def step():
        state[0], m, _, _ = plain(state[0], batch, ())
        return m["loss"]

    grad = jax.jit(jax.value_and_grad(eng.loss_fn))

    def fwd_bwd():
        return grad(state[0].params, batch[0], batch[1], jax.random.PRNGKey(0))

    flops_tok = run_flops_per_token(s)
    return step, fwd_bwd, flops_tok, s.model_config, B, T


def _torch_peer(mcfg, B: int, T: int, quick: bool):
    import torch  # lazy: only the GPU image has it
    import torch.nn as nn
    import torch.nn.functional as F

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    V, d, L, H = mcfg.vocab_size, mcfg.d_model, mcfg.n_layers, mcfg.n_heads

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(d, bias=False), nn.LayerNorm(d, bias=False)
            self.qkv, self.o = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
            self.fc = nn.Linear(d, mcfg.d_mlp, bias=False)
            self.proj = nn.Linear(mcfg.d_mlp, d, bias=False)

        def forward(self, x):
            b, t, _ = x.shape
            q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
            q, k, v = (z.view(b, t, H, d // H).transpose(1, 2) for z in (q, k, v))
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.o(a.transpose(1, 2).reshape(b, t, d))
            return x + self.proj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.pos = nn.Embedding(V, d), nn.Embedding(mcfg.max_seq_len, d)
            self.blocks = nn.ModuleList(Block() for _ in range(L))
            self.ln_f = nn.LayerNorm(d, bias=False)
            for p in self.parameters():
                nn.init.normal_(p, std=0.02) if p.dim() >= 2 else None

        def forward(self, idx, targets):
            x = self.embed(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
            for blk in self.blocks:
                x = blk(x)
            logits = self.ln_f(x) @ self.embed.weight.T  # tied head
            return F.cross_entropy(logits.float().view(-1, V), targets.view(-1))

    torch.manual_seed(0)
    model = GPT().to(dev)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    fused = dev == "cuda"
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": rest, "weight_decay": 0.0}],
                            lr=6e-4, betas=(0.9, 0.95), fused=fused)
    fwd = model if quick else torch.compile(model)
    x = torch.randint(0, V, (B, T), device=dev)
    y = torch.randint(0, V, (B, T), device=dev)
    amp = torch.autocast(device_type=dev, dtype=torch.bfloat16, enabled=not quick)

    def step():
        with amp:
            loss = fwd(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    def sync(_):
        if dev == "cuda":
            torch.cuda.synchronize()

    label = "PyTorch eager (CPU)" if quick else "PyTorch torch.compile + fused AdamW"
    return step, sync, label


@benchmark("train_step", "gpt2-small B=16 T=1024 bf16 whole train step (fwd+bwd+clip+AdamW): "
                         "jaxspectra trainer vs PyTorch torch.compile peer")
def run(quick: bool) -> BenchResult:
    step, fwd_bwd, flops_tok, mcfg, B, T = _jax_candidate(quick)
    reps = dict(warmup=2, repeats=3) if quick else dict(warmup=3, repeats=20, min_time=5.0)
    t_step = time_fn(step, **reps)
    t_fb = time_fn(fwd_bwd, **reps)
    tokens = B * T

    def row(name, t):
        tps = tokens / t
        return {"impl": name, "step_ms": t * 1e3, "tokens_per_s": tps,
                "mfu_790": tps * flops_tok / (PEAK_MEASURED * 1e12),
                "mfu_989": tps * flops_tok / (PEAK_SPEC * 1e12)}

    rows = [row("jaxspectra train step (fwd+bwd+clip+AdamW)", t_step),
            row("JAX fwd+bwd only (no optimiser)", t_fb)]
    note_peer = ""
    try:
        peer, sync, label = _torch_peer(mcfg, B, T, quick)
        t_peer = time_fn(peer, sync=sync, **reps)
        rows.append(row(label, t_peer))
        rows[0]["vs_peer"] = t_peer / t_step
        rows[1]["vs_peer"] = t_peer / t_fb
        rows[2]["vs_peer"] = 1.0
    except ImportError:
        note_peer = " PyTorch is not installed here: the peer row is skipped."
    r0 = rows[0]
    verdict = []
    if "vs_peer" in r0:
        verdict.append(f"{r0['vs_peer']:.2f}× the peer (goal ≥ 1.0×)")
    verdict.append(f"MFU {r0['mfu_790']:.1%} of 790 TFLOP/s measured peak, {r0['mfu_989']:.1%} "
                   f"of the 989 spec (goal ≥ 50%)")
    size = ("tiny GPT (2×64, V=256) on CPU, B=4, T=64 (--quick: sizes shrunk; MFU columns "
            "are against H100 peaks and meaningless here)" if quick else
            f"gpt2-small ({mcfg.n_layers}×{mcfg.d_model}, V={mcfg.vocab_size}), B={B}, T={T}")
    notes = (f"Shape: {size}. FLOPs/token {flops_tok / 1e6:.1f} M. "
             f"Result: {'; '.join(verdict)}.{note_peer} The trainer's step donates its state and "
             "computes the loss from float32 logits; the peer casts logits to float32 too.")
    assert math.isfinite(t_step)
    return BenchResult(rows=rows, notes=notes, title="train_step (GPT-2 small, whole step)")
