"""Where data lives, and the errors raised when it does not.

No loader in :mod:`jaxspectra.data` downloads anything. A data directory is given explicitly
(``data_dir=``; on the command line ``jaxspectra reproduce|train|sweep --data-dir DIR``, which sets
the variable below for the run) or through the ``JAXSPECTRA_DATA_DIR`` environment variable — one
setting that every loader and experiment honours; nothing is looked up relative to the repository.
A missing file raises :class:`DataNotFoundError` (a :class:`FileNotFoundError`) that lists the
paths tried and names the offline alternative.

Example:
  >>> import tempfile
  >>> root = Path(tempfile.mkdtemp()); (root / "tinyshakespeare").mkdir()
  >>> _ = (root / "tinyshakespeare" / "input.txt").write_text("to be")
  >>> locate_dataset("tinyshakespeare/input.txt", root).read_text()
  'to be'
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
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


def configured_data_dir() -> str | None:
    """``$JAXSPECTRA_DATA_DIR`` when set and non-empty, else ``None``."""
    return os.environ.get(DATA_DIR_ENV) or None


def locate_dataset(relpath: str | os.PathLike, data_dir: str | os.PathLike | None = None, *,
                   alternative: str = "the experiment's smoke preset (embedded or generated "
                                      "data, no data directory)") -> Path:
    """The path of ``relpath`` inside the data directory.

    The directory is ``data_dir`` when given, else ``$JAXSPECTRA_DATA_DIR`` (what ``--data-dir``
    sets); never a path relative to the repository.

    Args:
      relpath: the dataset's path inside the data directory, e.g. ``"tinyshakespeare/input.txt"``.
      data_dir: an explicit data directory (``None``: the environment variable).
      alternative: the offline alternative named by the error.

    Raises:
      DataNotFoundError: no directory is configured, it does not exist, or ``relpath`` is not in
        it; the message names ``--data-dir`` / ``$JAXSPECTRA_DATA_DIR`` and ``alternative``.
    """
    where = "--data-dir / data_dir=" if data_dir is not None else f"${DATA_DIR_ENV}"
    root = data_dir if data_dir is not None else configured_data_dir()
    if root is None:
        raise DataNotFoundError(
            f"{relpath} needs a data directory: pass --data-dir DIR (or set ${DATA_DIR_ENV}) "
            f"to the directory holding {relpath}. Nothing is downloaded. Offline: {alternative}.")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataNotFoundError(
            f"data directory {str(root)!r} (from {where}) does not exist or is not a directory: "
            f"pass --data-dir DIR for a directory holding {relpath}. Offline: {alternative}.")
    path = root / relpath
    if not path.exists():
        raise DataNotFoundError(
            f"{relpath} is not in the data directory {str(root)!r} (from {where}; looked for "
            f"{str(path)!r}): pass --data-dir DIR for a directory holding it. "
            f"Offline: {alternative}.")
    return path


@contextlib.contextmanager
def data_dir_env(data_dir: str | os.PathLike | None) -> Iterator[None]:
    """Within the block, ``$JAXSPECTRA_DATA_DIR`` is ``data_dir`` (absolute), restored after;
    ``None`` changes nothing. What ``--data-dir`` does; a missing directory is an error."""
    if data_dir is None:
        yield
        return
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise DataNotFoundError(f"--data-dir {str(data_dir)!r} does not exist or is not a "
                                "directory: give the directory that holds the datasets (e.g. "
                                "tinyshakespeare/input.txt), or leave --data-dir out for the "
                                "smoke presets' embedded data")
    old = os.environ.get(DATA_DIR_ENV)
    os.environ[DATA_DIR_ENV] = str(path.resolve())
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(DATA_DIR_ENV, None)
        else:
            os.environ[DATA_DIR_ENV] = old


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
