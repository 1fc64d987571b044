"""The ``jaxspectra`` command.

Subcommands::

  jaxspectra reproduce NAME [--preset smoke|full] [--out DIR] [--data-dir DIR] [--set k=v ...]
  jaxspectra list                      # the reproducible experiments and their presets
  jaxspectra train --config FILE [--data-dir DIR] [--set a.b=value ...]
  jaxspectra sweep --config FILE [--data-dir DIR] [--set a.b=value ...]
  jaxspectra bench [NAME ...] [--out runs/benchmarks] [--quick] [--update-docs [--docs-file F]]

Experiments are the modules of ``jaxspectra.experiments`` (the repository's ``experiments/`` folder,
installed under the package's name: pyproject's ``package-dir``); each defines ``PRESETS``
(a dict whose keys include ``smoke`` and ``full``), a one-line ``DESCRIPTION`` and
``run(preset, out_dir, overrides) -> dict``. They are discovered, not registered by hand.

Data: ``--data-dir DIR`` sets ``$JAXSPECTRA_DATA_DIR`` for the run (the one setting every loader
and experiment reads, :mod:`jaxspectra.data._paths`; a config's explicit ``data.data_dir`` still
wins for ``train`` / ``sweep``). Smoke presets need no data directory; a missing one, or data
missing from it, ends in one line naming ``--data-dir``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import pkgutil
import sys
import types
from collections.abc import Callable
from pathlib import Path

from jaxspectra.data._paths import DataNotFoundError, data_dir_env

_NOT_INSTALLED = (
    "jaxspectra: jaxspectra.{0} is not importable and no {0}/ folder lies beside the package: the "
    "repository's {0}/ folder is installed under that name by `pip install -e .` (or a wheel). "
    "Install the package from a checkout, then run the command again."
)


def load_from_checkout(name: str, root: Path) -> types.ModuleType | None:
    """Import ``root/<name>/`` as ``jaxspectra.<name>`` (``None`` if there is no such folder).

    For a checkout whose install does not map the folder (on ``PYTHONPATH`` alone, or an editable
    install in setuptools' path mode): the modules inside import each other relatively, so they
    load the same way as from a wheel.
    """
    init = root / name / "__init__.py"
    if not init.is_file():
        return None
    full = f"jaxspectra.{name}"
    spec = importlib.util.spec_from_file_location(
        full, init, submodule_search_locations=[str(init.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[full] = module
    spec.loader.exec_module(module)
    return module


def _subpackage(name: str) -> types.ModuleType:
    """``jaxspectra.experiments`` / ``jaxspectra.benchmarks``: installed, else the checkout's
    folder beside the package, else one clear line."""
    try:
        return importlib.import_module(f"jaxspectra.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"jaxspectra.{name}":
            raise
    import jaxspectra

    module = load_from_checkout(name, Path(jaxspectra.__file__).resolve().parents[1])
    if module is None:
        raise SystemExit(_NOT_INSTALLED.format(name))
    return module


def _experiment_modules() -> dict[str, str]:
    experiments = _subpackage("experiments")

    names = {}
    for info in pkgutil.iter_modules(experiments.__path__):
        if info.name.startswith("_") or info.name == "common":
            continue
        names[info.name] = f"jaxspectra.experiments.{info.name}"
    return names


def _load_experiment(name: str):
    mods = _experiment_modules()
    key = name.replace("-", "_")
    if key not in mods:
        known = ", ".join(sorted(mods)) or "(none)"
        raise SystemExit(f"jaxspectra: unknown experiment {name!r}. Known: {known}")
    return importlib.import_module(mods[key])


def parse_overrides(items: list[str] | None) -> dict[str, str]:
    """Parse ``key=value`` strings (values stay strings; the consumer validates and converts)."""
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"jaxspectra: --set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _with_data_dir(args: argparse.Namespace, fn: Callable[[], int]) -> int:
    """Run ``fn`` with ``--data-dir`` as ``$JAXSPECTRA_DATA_DIR``; missing data → one line, 2."""
    try:
        with data_dir_env(args.data_dir):
            return fn()
    except DataNotFoundError as err:
        print(f"jaxspectra {args.command}: error: {err}", file=sys.stderr)
        return 2


def _cmd_reproduce(args: argparse.Namespace) -> int:
    return _with_data_dir(args, lambda: _reproduce(args))


def _reproduce(args: argparse.Namespace) -> int:
    mod = _load_experiment(args.name)
    if args.preset not in mod.PRESETS:
        raise SystemExit(
            f"jaxspectra: experiment {args.name!r} has no preset {args.preset!r}; "
            f"choose one of {sorted(mod.PRESETS)}"
        )
    out = Path(args.out) if args.out else Path("runs") / args.name.replace("-", "_") / args.preset
    try:
        result = mod.run(args.preset, out, parse_overrides(args.set))
    except ValueError as err:  # bad overrides / inputs: a clean message, not a traceback
        raise SystemExit(f"jaxspectra reproduce {args.name}: {err}") from None
    report = result.get("report") if isinstance(result, dict) else None
    print(f"jaxspectra: {args.name} ({args.preset}) done; outputs in {out}")
    if report:
        print(f"jaxspectra: report {report}")
    return 0 if not (isinstance(result, dict) and result.get("passed") is False) else 1


def _cmd_list(_: argparse.Namespace) -> int:
    for name, modname in sorted(_experiment_modules().items()):
        mod = importlib.import_module(modname)
        print(f"{name:32s} presets={sorted(mod.PRESETS)}  {getattr(mod, 'DESCRIPTION', '')}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from jaxspectra.train import cli as train_cli

    return _with_data_dir(
        args, lambda: int(train_cli.train_command(args.config, parse_overrides(args.set)) or 0))


def _cmd_sweep(args: argparse.Namespace) -> int:
    from jaxspectra.train import cli as train_cli

    return _with_data_dir(
        args, lambda: int(train_cli.sweep_command(args.config, parse_overrides(args.set)) or 0))


def _cmd_bench(args: argparse.Namespace) -> int:
    _subpackage("benchmarks")
    from jaxspectra.benchmarks import run as bench_run

    return bench_run.main(args.names, out=args.out, quick=args.quick,
                          update_docs=args.docs_file if args.update_docs else None)


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="directory holding the datasets (sets $JAXSPECTRA_DATA_DIR for this run; "
                        "smoke presets need none)")


BENCH_OUT = "runs/benchmarks"
BENCH_DOCS = "docs/benchmarks.md"


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``jaxspectra bench`` (also ``python -m jaxspectra.benchmarks.run``)."""
    p.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    p.add_argument("--out", default=BENCH_OUT,
                   help=f"output directory for NAME.md / NAME.json (default {BENCH_OUT})")
    p.add_argument("--quick", action="store_true", help="small sizes (CPU sanity check)")
    p.add_argument("--update-docs", action="store_true",
                   help="also replace the benchmarks' sections in --docs-file; a CPU or --quick "
                        "run never replaces an accelerator's full-size section")
    p.add_argument("--docs-file", default=BENCH_DOCS,
                   help=f"the file --update-docs updates (default {BENCH_DOCS})")


def build_parser() -> argparse.ArgumentParser:
    from jaxspectra import __version__

    p = argparse.ArgumentParser(prog="jaxspectra", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=f"jaxspectra {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("reproduce", help="run a paper experiment")
    r.add_argument("name")
    r.add_argument("--preset", default="smoke")
    r.add_argument("--out", default=None, help="output directory (default runs/NAME/PRESET)")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a preset field")
    _add_data_dir(r)
    r.set_defaults(func=_cmd_reproduce)

    sub.add_parser("list", help="list experiments").set_defaults(func=_cmd_list)

    for name, func in (("train", _cmd_train), ("sweep", _cmd_sweep)):
        t = sub.add_parser(name, help=f"{name} from a config file")
        t.add_argument("--config", required=True)
        t.add_argument("--set", action="append", metavar="A.B=VALUE")
        _add_data_dir(t)
        t.set_defaults(func=func)

    b = sub.add_parser("bench", help="run named benchmarks (outputs in runs/benchmarks; "
                                     "--update-docs to update docs/benchmarks.md)")
    add_bench_arguments(b)
    b.set_defaults(func=_cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
