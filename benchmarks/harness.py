"""The benchmark harness: timing, device naming, registry and the docs/benchmarks.md writer.

A benchmark is a function ``fn(quick: bool) -> BenchResult`` registered with :func:`benchmark`
in a module ``benchmarks/bench_*.py``. It times a *candidate* beside its *baseline* in the same
process (:func:`time_fn`: medians after warm-up, ``block_until_ready`` on every output) and
returns rows; the harness renders them into its own section of ``docs/benchmarks.md`` (sections
are delimited by HTML comments, so re-running one benchmark replaces only its section).

Example (a benchmark module)::

    from jaxspectra.benchmarks.harness import BenchResult, benchmark, time_fn

    @benchmark("adamw_vs_sgd", "optax.adamw update vs optax.sgd update")
    def run(quick: bool) -> BenchResult:
        ...
        t_c = time_fn(candidate, params)
        t_b = time_fn(baseline, params)
        return BenchResult(rows=[{"shape": "768x768", "candidate_ms": t_c * 1e3,
                                  "baseline_ms": t_b * 1e3, "ratio": t_b / t_c}])
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

REGISTRY: dict[str, tuple[str, Callable[[bool], BenchResult]]] = {}


@dataclasses.dataclass
class BenchResult:
    """Rows of a benchmark table plus free-text notes (goal, verdict, caveats)."""

    rows: list[dict[str, Any]]
    notes: str = ""
    title: str = ""


def benchmark(name: str, description: str):
    """Register ``fn(quick) -> BenchResult`` under ``name``."""

    def deco(fn):
        if name in REGISTRY:
            raise ValueError(f"benchmark {name!r} registered twice")
        REGISTRY[name] = (description, fn)
        return fn

    return deco


def block(x: Any) -> Any:
    """Block until every array in the pytree ``x`` is ready (works for torch tensors too)."""
    leaves = jax.tree_util.tree_leaves(x)
    for leaf in leaves:
        if hasattr(leaf, "block_until_ready"):
            leaf.block_until_ready()
    return x


def time_fn(
    fn: Callable[..., Any],
    *args: Any,
    warmup: int = 2,
    repeats: int = 10,
    min_time: float = 0.0,
    sync: Callable[[Any], Any] = block,
) -> float:
    """Median wall time in seconds of ``fn(*args)`` after ``warmup`` calls.

    Every output is synchronised with ``sync`` (``block_until_ready`` for JAX; pass
    ``torch.cuda.synchronize``-based syncs for torch peers). With ``min_time`` > 0 the number of
    repeats grows until the total measured time reaches it.
    """
    for _ in range(warmup):
        sync(fn(*args))
    times: list[float] = []
    total = 0.0
    while len(times) < repeats or total < min_time:
        t0 = time.perf_counter()
        sync(fn(*args))
        dt = time.perf_counter() - t0
        times.append(dt)
        total += dt
        if len(times) > 10_000:
            break
    med = statistics.median(times)
    # progress on stderr, so a run cut off by a time limit still shows what it measured
    name = getattr(fn, "__name__", type(fn).__name__)
    print(f"[time_fn] {name}: median {med * 1e3:.4g} ms over {len(times)}", file=sys.stderr,
          flush=True)
    return med


def device_name() -> str:
    """E.g. ``NVIDIA H100 80GB HBM3 (gpu, 1 device), jax 0.11.2``."""
    devs = jax.devices()
    kind = devs[0].device_kind if devs else "unknown"
    if devs and devs[0].platform == "cpu":
        kind = f"CPU {platform.processor() or platform.machine()}"
    return f"{kind} ({devs[0].platform}, {len(devs)} device(s)), jax {jax.__version__}"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v == 0 or 1e-3 <= abs(v) < 1e5:
            return f"{v:.4g}"
        return f"{v:.3e}"
    return str(v)


def render(name: str, description: str, result: BenchResult, device: str) -> str:
    """Markdown section for one benchmark."""
    cols: list[str] = []
    for row in result.rows:
        for k in row:
            if k not in cols:
                cols.append(k)
    lines = [f"<!-- bench:{name} -->", f"## {result.title or name}", "", description, ""]
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines += [f"Device: **{device}**; run {stamp}.", ""]
    if cols:
        lines.append("| " + " | ".join(cols) + " |")
        lines.append("|" + "---|" * len(cols))
        for row in result.rows:
            lines.append("| " + " | ".join(_fmt(row.get(c, "")) for c in cols) + " |")
        lines.append("")
    if result.notes:
        lines += [result.notes.strip(), ""]
    lines.append(f"<!-- /bench:{name} -->")
    return "\n".join(lines)


HEADER = """# Benchmarks

Written by `jaxspectra bench` (`python -m benchmarks.run`). Each section times a candidate beside
its baseline **in the same process** (medians after warm-up, every output synchronised), on the
device named in the section. Ratios > 1 mean the candidate is faster unless the column says
otherwise. Re-running one benchmark replaces only its own section.
"""


def write_section(path: Path, name: str, section: str) -> None:
    """Insert or replace the section of ``name`` in the markdown file (atomic write)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.exists() else HEADER
    pattern = re.compile(
        rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S
    )
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
