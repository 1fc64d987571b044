"""Where data lives, and the errors raised when it does not.

No loader in :mod:`jaxspectra.data` downloads anything. A data directory is given explicitly
(``data_dir=`` / ``--data-dir``) or through the ``JAXSPECTRA_DATA_DIR`` environment variable; a
missing file raises :class:`DataNotFoundError` (a :class:`FileNotFoundError`) that lists the paths
tried and names the offline alternative.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
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


def atomic_write(path: str | os.PathLike, chunks: Iterable[bytes]) -> Path:
    """Write ``chunks`` to ``path`` atomically: a temporary file in the same directory, ``fsync``,
    ``os.replace``. A crash leaves either the old file or the new one, never a partial file. The
    new file gets the usual ``0o666 & ~umask`` permissions."""
    path = Path(path)
    if not path.parent.is_dir():
        raise DataNotFoundError(f"directory {str(path.parent)!r} of {str(path)!r} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    return path
