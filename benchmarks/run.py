"""Entry point: ``jaxspectra bench [NAME ...] [--quick]`` (or ``python -m jaxspectra.benchmarks.run``).

Discovers every ``benchmarks/bench_*.py`` (installed as ``jaxspectra.benchmarks``), runs the named benchmarks (all when none is named) and
writes their sections into ``docs/benchmarks.md``. ``--quick`` shrinks sizes for a CPU sanity run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import traceback
from pathlib import Path

from . import harness


def discover() -> None:
    package = importlib.import_module(__package__ or "jaxspectra.benchmarks")
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("bench_"):
            importlib.import_module(f"{package.__name__}.{info.name}")


def main(names: list[str] | None = None, out: str = "docs/benchmarks.md", quick: bool = False) -> int:
    discover()
    names = list(names or sorted(harness.REGISTRY))
    unknown = [n for n in names if n not in harness.REGISTRY]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; known: {sorted(harness.REGISTRY)}", file=sys.stderr)
        return 2
    device = harness.device_name()
    failed = 0
    for name in names:
        description, fn = harness.REGISTRY[name]
        print(f"[bench] {name} on {device} ...", flush=True)
        try:
            result = fn(quick)
        except Exception:  # noqa: BLE001 - report and continue with the other benchmarks
            traceback.print_exc()
            failed += 1
            continue
        section = harness.render(name, description, result, device)
        harness.write_section(Path(out), name, section)
        print(section, flush=True)
        json_dir = Path(out).parent / "benchmarks"
        json_dir.mkdir(parents=True, exist_ok=True)
        (json_dir / f"{name}.json").write_text(
            json.dumps({"device": device, "rows": result.rows, "notes": result.notes}, indent=1,
                       default=str)
        )
    return 1 if failed else 0


def cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("names", nargs="*")
    p.add_argument("--out", default="docs/benchmarks.md")
    p.add_argument("--quick", action="store_true")
    a = p.parse_args(argv)
    return main(a.names, a.out, a.quick)


if __name__ == "__main__":
    sys.exit(cli())
