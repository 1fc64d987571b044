"""Where data lives, and the errors raised when it does not.

No loader in :mod:`jaxspectra.data` downloads anything. A data directory is given explicitly
(``data_dir=`` / ``--data-dir``) or through the ``JAXSPECTRA_DATA_DIR`` environment variable; a
missing file raises :class:`DataNotFoundError` (a :class:`FileNotFoundError`) that lists the paths
tried and names the offline alternative.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

DATA_DIR_ENV = "JAXSPECTRA_DATA_DIR"

#: Offline alternatives named by the errors (kept in one place so all messages agree).
LM_ALTERNATIVE = (
    "source='default' (the Python standard library's own sources: needs no data directory) or "
    "source='synthetic'"
)


class DataNotFoundError(FileNotFoundError):
    """A dataset file or directory is missing; the message names what to do instead."""


def resolve_data_dir(data_dir: str | os.PathLike | None, what: str, alternative: str) -> Path:
    """Return the data directory: ``data_dir`` if given, else ``$JAXSPECTRA_DATA_DIR``.

    Args:
      data_dir: a directory (or ``None``).
      what: the dataset asking (for the message).
      alternative: what the user can do instead (for the message).

    Raises:
      DataNotFoundError: neither is set, or the directory does not exist.
    """
    if data_dir is None:
        env = os.environ.get(DATA_DIR_ENV)
        if not env:
            raise DataNotFoundError(
                f"{what} needs a data directory: pass data_dir=... (CLI: --data-dir) or set "
                f"${DATA_DIR_ENV}. Nothing is downloaded. Alternative: {alternative}."
            )
        data_dir = env
    path = Path(data_dir).expanduser()
    if not path.exists():
        raise DataNotFoundError(
            f"{what}: data directory {str(path)!r} does not exist. Alternative: {alternative}."
        )
    return path


def first_existing(candidates: Iterable[Path], what: str, alternative: str) -> Path:
    """Return the first existing path among ``candidates``, or raise listing all of them."""
    candidates = list(candidates)
    for c in candidates:
        if c.exists():
            return c
    tried = ", ".join(repr(str(c)) for c in candidates)
    raise DataNotFoundError(f"{what} not found (tried {tried}). {alternative}.")
