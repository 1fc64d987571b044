"""The benchmark harness: timing, device naming, registry and the markdown section writer.

A benchmark is a function ``fn(quick: bool) -> BenchResult`` registered with :func:`benchmark`
in a module ``benchmarks/bench_*.py``. It times a *candidate* beside its *baseline* in the same
process (:func:`time_fn`: medians after warm-up, ``block_until_ready`` on every output) and
returns rows; the harness renders them into a markdown section (:func:`render`, delimited by HTML
comments, naming the device and whether ``--quick`` sizes were used). ``benchmarks/run.py``
writes each section to its own output directory; only ``--update-docs`` puts it into
``docs/benchmarks.md`` (:func:`write_section`), where re-running one benchmark replaces only its
section and :func:`refuse_replacement` keeps a CPU or ``--quick`` run from replacing a section
measured on an accelerator at full size.

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


QUICK_MARK = "`--quick` sizes (a sanity run, not a measurement)"


def render(name: str, description: str, result: BenchResult, device: str,
           quick: bool = False) -> str:
    """Markdown section for one benchmark; its ``Device:`` line names the device (and the
    platform in parentheses, read back by :func:`section_device`) and marks ``--quick`` runs."""
    cols: list[str] = []
    for row in result.rows:
        for k in row:
            if k not in cols:
                cols.append(k)
    lines = [f"<!-- bench:{name} -->", f"## {result.title or name}", "", description, ""]
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines += [f"Device: **{device}**; run {stamp}" + (f"; {QUICK_MARK}." if quick else "."), ""]
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

Written by `jaxspectra bench --update-docs` (`python -m jaxspectra.benchmarks.run --update-docs`). Each
section times a candidate beside its baseline **in the same process** (medians after warm-up,
every output synchronised), on the device named in the section. Ratios > 1 mean the candidate is
faster unless the column says otherwise. Re-running one benchmark replaces only its own section;
a CPU or `--quick` run never replaces a section measured on an accelerator at full size.
"""


def _section_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->",
                      re.S)


def find_section(path: Path, name: str) -> str | None:
    """The current section of ``name`` in the markdown file, or ``None``."""
    if not path.exists():
        return None
    m = _section_pattern(name).search(path.read_text())
    return m.group(0) if m else None


_DEVICE_LINE = re.compile(r"Device: \*\*(?P<device>.*?)\*\*(?P<rest>[^\n]*)")
_PLATFORM = re.compile(r"\((?P<platform>[a-z]+), \d+ device")


def section_device(section: str) -> tuple[str | None, str | None, bool]:
    """``(device, platform, quick)`` read from a section's ``Device:`` line (``None`` when the
    section does not say; ``platform`` is ``"cpu"``, ``"gpu"``, ``"tpu"``, ...)."""
    m = _DEVICE_LINE.search(section)
    if not m:
        return None, None, False
    p = _PLATFORM.search(m["device"])
    return m["device"], (p["platform"] if p else None), QUICK_MARK in m["rest"]


def refuse_replacement(old_section: str | None, new_section: str) -> str | None:
    """Why ``new_section`` must not replace ``old_section`` (``None``: it may).

    Refused: a CPU run replacing a section measured on an accelerator (GPU/TPU), and a
    ``--quick`` run replacing a full-size one. A section that names no device may be replaced.
    """
    if old_section is None:
        return None
    old_dev, old_plat, old_quick = section_device(old_section)
    new_dev, new_plat, new_quick = section_device(new_section)
    if old_plat not in (None, "cpu") and new_plat == "cpu":
        return (f"it was measured on {old_dev} and this run is on {new_dev}: a CPU run never "
                "replaces an accelerator's numbers (run it on that accelerator)")
    if new_quick and not old_quick and old_dev is not None:
        return (f"it holds full-size numbers ({old_dev}) and this is a --quick run "
                "(drop --quick to replace it)")
    return None


def write_section(path: Path, name: str, section: str) -> None:
    """Insert or replace the section of ``name`` in the markdown file (atomic write).

    Callers updating ``docs/benchmarks.md`` check :func:`refuse_replacement` first.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.exists() else HEADER
    pattern = _section_pattern(name)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
