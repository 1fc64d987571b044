"""``memory``: step time and memory of the trainer's GPT-2-small step per memory option.

The same step as ``train_step`` (``gpt2-small``, bf16 compute / fp32 params, B=16, T=1024,
AdamW, clip 1.0, donated state) under each combination of the two memory options of issue 24:

* ``model.options.loss_chunk`` — ``0``: the loss from the full ``[B, T, V]`` float32 logits
  (3.3 GB here); ``c``: :func:`jaxspectra.models.losses.chunked_lm_loss`, ``B·c·V`` at a time;
* ``model.options.remat`` — ``none`` | ``block`` | ``dots_with_no_batch_dims_saveable``.

Memory columns: ``temp_gb`` is XLA's compiled ``memory_analysis()`` of the step (the scratch the
program needs beyond its arguments and outputs; per configuration, exact, available on every
backend that reports it), ``args_gb`` its arguments (state + batch). ``peak_gb`` is the device's
``memory_stats()["peak_bytes_in_use"]`` after the configuration ran: a process-wide high-water
mark (never reset), so rows run from the expected smallest to the largest configuration and
only an increase is attributable to that row; ``None`` where the backend reports no memory stats
(CPU). Goal (issue 24 item 3): name the memory saved by each option and its cost in step time.
``--quick``: a tiny GPT on CPU (B=4, T=64, V=256, chunk 16).
"""

from __future__ import annotations

import math

import jax

from .bench_train_step import gpt2_setup
from .harness import BenchResult, benchmark, time_fn

GB = 1e9
# (loss_chunk, remat) from the expected smallest peak to the largest (see the module docstring)
CONFIGS = [
    ("chunk", "block"),
    ("chunk", "dots_with_no_batch_dims_saveable"),
    (0, "block"),
    ("chunk", "none"),
    (0, "none"),
]


def _engine(quick: bool, loss_chunk: int, remat: str):
    from jaxspectra.train.engine import Engine

    s, B, T = gpt2_setup(quick, {"loss_chunk": loss_chunk, "remat": remat}, "bench_memory_")
    return s, Engine(s), B, T


def _peak_bytes() -> int | None:
    stats = jax.devices()[0].memory_stats()
    return None if not stats else stats.get("peak_bytes_in_use")


def _measure(quick: bool, loss_chunk: int, remat: str, reps: dict) -> dict:
    s, eng, B, T = _engine(quick, loss_chunk, remat)
    state = [eng.init_state(0)]
    batch = eng.batch(s.dataset, 0, 0)
    plain = eng.step(())
    mem = plain.lower(state[0], batch, ()).compile().memory_analysis()

    def step():
        state[0], m, _, _ = plain(state[0], batch, ())
        return m["loss"]

    t = time_fn(step, **reps)
    loss = float(step())
    peak = _peak_bytes()
    row = {"loss_chunk": loss_chunk, "remat": remat, "step_ms": t * 1e3,
           "tokens_per_s": B * T / t, "loss_after": loss,
           "temp_gb": getattr(mem, "temp_size_in_bytes", float("nan")) / GB if mem else None,
           "args_gb": getattr(mem, "argument_size_in_bytes", float("nan")) / GB if mem else None,
           "peak_gb": None if peak is None else peak / GB}
    return row


@benchmark("memory", "gpt2-small B=16 T=1024 bf16 train step: step time and memory with the "
                     "chunked cross-entropy (loss_chunk) and remat policies on/off")
def run(quick: bool) -> BenchResult:
    chunk = 16 if quick else 128
    reps = dict(warmup=1, repeats=2) if quick else dict(warmup=3, repeats=10, min_time=3.0)
    rows = [_measure(quick, chunk if lc == "chunk" else 0, remat, reps) for lc, remat in CONFIGS]
    ref = rows[-1]  # loss_chunk=0, remat=none: today's default
    for r in rows:
        r["vs_default_time"] = r["step_ms"] / ref["step_ms"]
        if r["temp_gb"] is not None and ref["temp_gb"]:
            r["temp_saved_gb"] = ref["temp_gb"] - r["temp_gb"]
    no_stats = rows[0]["peak_gb"] is None
    size = ("tiny GPT (2×64, V=256) on CPU, B=4, T=64, loss_chunk 16 (--quick)" if quick else
            f"gpt2-small, B=16, T=1024, bf16 compute, loss_chunk {chunk}")
    notes = (f"Shape: {size}. Reference row: loss_chunk=0, remat=none (today's default). "
             "temp_gb = XLA memory_analysis temp bytes of the compiled step (per row); "
             "peak_gb = device peak_bytes_in_use, process-wide high-water mark (rows ordered "
             "smallest-expected first)."
             + (" This backend reports no memory_stats() (None on CPU): peak_gb is empty; "
                "temp_gb is the per-configuration figure." if no_stats else "")
             + " The loss after the timed steps differs between rows only by the options' "
             "round-off (same data, same init).")
    assert all(math.isfinite(r["step_ms"]) for r in rows)
    return BenchResult(rows=rows, notes=notes, title="memory (GPT-2 small: chunked loss, remat)")
