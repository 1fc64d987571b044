"""Paper reproductions, one module per figure or table, run as ``jaxspectra reproduce NAME``.

Each module defines ``DESCRIPTION``, ``PRESETS`` (with at least ``smoke`` and ``full``) and
``run(preset: str, out_dir: pathlib.Path, overrides: dict[str, str]) -> dict``. The returned dict
holds at least ``report`` (path of the markdown report) and ``passed`` (the pass criteria).
Modules whose name starts with ``_`` or is ``common`` hold shared helpers and are not listed.
"""
