"""Entry point: ``python -m jaxspectra.benchmarks.run [NAME ...] [--quick] [--out DIR] [--update-docs]``
(or ``jaxspectra bench``).

Discovers every ``benchmarks/bench_*.py`` and runs the named benchmarks (all when none is named).
Each result goes to its **own output directory** (default ``runs/benchmarks/``): ``<name>.md``
(the markdown section, naming the device) and ``<name>.json`` (device, rows, notes).
``docs/benchmarks.md`` is touched only with ``--update-docs`` (another file: ``--docs-file``),
and even then a CPU run never replaces a section measured on a GPU/TPU, nor a ``--quick`` run a
full-size one: that section is left as it is, the reason printed, and the exit status is 1.
``--quick`` shrinks sizes for a CPU sanity run.
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

DEFAULT_OUT = "runs/benchmarks"  # the same default as jaxspectra.cli.BENCH_OUT


def discover() -> None:
    """Import every ``bench_*`` module of this package (each registers its benchmarks)."""
    pkg = importlib.import_module(__package__ or "jaxspectra.benchmarks")
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("bench_"):
            importlib.import_module(f"{pkg.__name__}.{info.name}")


def _update_docs(docs: Path, name: str, section: str) -> bool:
    """Put ``section`` into ``docs`` unless :func:`harness.refuse_replacement` objects."""
    why = harness.refuse_replacement(harness.find_section(docs, name), section)
    if why:
        print(f"[bench] not replacing section {name!r} of {docs}: {why}", file=sys.stderr,
              flush=True)
        return False
    harness.write_section(docs, name, section)
    print(f"[bench] {name}: section written into {docs}", flush=True)
    return True


def main(names: list[str] | None = None, out: str | Path = DEFAULT_OUT, quick: bool = False,
         update_docs: str | Path | None = None) -> int:
    """Run benchmarks; 0 when all ran (and every requested docs update was made), else 1;
    2 for an unknown name.

    Args:
      names: benchmark names (``None`` / empty: all registered).
      out: output directory for ``<name>.md`` and ``<name>.json``.
      quick: small sizes (a CPU sanity run; marked in the section).
      update_docs: a markdown file (e.g. ``docs/benchmarks.md``) whose sections to replace.
    """
    discover()
    names = list(names or sorted(harness.REGISTRY))
    unknown = [n for n in names if n not in harness.REGISTRY]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; known: {sorted(harness.REGISTRY)}", file=sys.stderr)
        return 2
    out_dir = Path(out)
    if out_dir.suffix == ".md":
        print(f"jaxspectra bench: --out is now a directory (got {str(out_dir)!r}); to update a "
              f"markdown file pass --update-docs {out_dir}", file=sys.stderr)
        return 2
    out_dir.mkdir(parents=True, exist_ok=True)
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
        section = harness.render(name, description, result, device, quick=quick)
        (out_dir / f"{name}.md").write_text(section + "\n")
        (out_dir / f"{name}.json").write_text(
            json.dumps({"device": device, "quick": quick, "rows": result.rows,
                        "notes": result.notes}, indent=1, default=str)
        )
        print(section, flush=True)
        print(f"[bench] {name}: {out_dir / (name + '.md')}, {out_dir / (name + '.json')}",
              flush=True)
        if update_docs is not None and not _update_docs(Path(update_docs), name, section):
            failed += 1
    return 1 if failed else 0


def cli(argv: list[str] | None = None) -> int:
    from jaxspectra.cli import add_bench_arguments

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_bench_arguments(p)
    a = p.parse_args(argv)
    return main(a.names, a.out, a.quick, a.docs_file if a.update_docs else None)


if __name__ == "__main__":
    sys.exit(cli())
