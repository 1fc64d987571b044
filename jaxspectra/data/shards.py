"""Token shards on disk: the nanoGPT and modded-nanogpt ``.bin`` layouts, as read-only memmaps.

Two layouts, both little-endian:

* ``"nanogpt"`` (nanoGPT's ``prepare.py``): the raw ``uint16`` token array, nothing else.
* ``"modded"`` (modded-nanogpt / llm.c): a header of 256 ``int32`` — ``[0]`` the magic
  ``20240520``, ``[1]`` the version, ``[2]`` the token count, the rest zero — then the tokens:
  ``uint16`` for version 1 (GPT-2 sized vocabularies), ``uint32`` for llm.c's version 2.

:func:`read_shard` returns a ``np.memmap`` (nothing is loaded until indexed) after checking the
header and that the file size matches it; :func:`write_shard` writes atomically (a temporary file in
the same directory, ``fsync``, then ``os.replace``), so a crash never leaves a half-written shard
under the final name.

Example:
  >>> import tempfile, numpy as np
  >>> d = tempfile.mkdtemp()
  >>> p = write_shard(f"{d}/val.bin", np.arange(10), layout="modded")
  >>> shard_info(p).layout, shard_info(p).num_tokens
  ('modded', 10)
  >>> read_shard(p)[:4].tolist()
  [0, 1, 2, 3]
"""

from __future__ import annotations

import glob as _glob
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from jaxspectra.data._paths import LM_ALTERNATIVE, DataNotFoundError, atomic_write

MODDED_MAGIC = 20240520
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
_VERSION_DTYPE = {1: np.dtype("<u2"), 2: np.dtype("<u4")}
LAYOUTS = ("nanogpt", "modded")


class ShardFormatError(ValueError):
    """A token shard's header or size does not match its layout."""


class ShardInfo(NamedTuple):
    """Where the tokens of a shard lie: ``layout``, ``num_tokens``, byte ``offset``, ``dtype``."""

    layout: str
    num_tokens: int
    offset: int
    dtype: np.dtype


def _check_layout(layout: str, allow_auto: bool) -> None:
    allowed = (*LAYOUTS, "auto") if allow_auto else LAYOUTS
    if layout not in allowed:
        raise ValueError(f"layout must be one of {allowed}, got {layout!r}")


def shard_info(path: str | os.PathLike, layout: str = "auto") -> ShardInfo:
    """Validate a shard's header/size and say where its tokens are.

    ``layout="auto"`` picks ``"modded"`` when the file starts with the magic 20240520 (then its
    header must be valid: a raw file whose first two tokens happen to spell the magic needs
    ``layout="nanogpt"``), else ``"nanogpt"``.
    """
    _check_layout(layout, allow_auto=True)
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(
            f"token shard {str(path)!r} not found. Write shards with "
            f"`python -m jaxspectra.data.prepare`, or use {LM_ALTERNATIVE}."
        )
    size = path.stat().st_size
    with open(path, "rb") as f:
        head_bytes = f.read(12)
    head = np.frombuffer(head_bytes + b"\0" * (12 - len(head_bytes)), dtype="<i4")
    has_magic = size >= HEADER_BYTES and int(head[0]) == MODDED_MAGIC
    if layout == "auto":
        layout = "modded" if has_magic else "nanogpt"
    if layout == "nanogpt":
        if size % 2:
            raise ShardFormatError(
                f"{str(path)!r} has {size} bytes, not a whole number of uint16 tokens: not a "
                "nanoGPT .bin shard"
            )
        return ShardInfo("nanogpt", size // 2, 0, np.dtype("<u2"))
    # modded
    if size < HEADER_BYTES:
        raise ShardFormatError(
            f"{str(path)!r} has {size} bytes, fewer than the {HEADER_BYTES}-byte modded-nanogpt "
            "header"
        )
    magic, version, n = (int(x) for x in head[:3])
    if magic != MODDED_MAGIC:
        raise ShardFormatError(
            f"{str(path)!r}: header magic {magic} != {MODDED_MAGIC}, not a modded-nanogpt shard "
            "(a raw nanoGPT .bin? use layout='nanogpt')"
        )
    if version not in _VERSION_DTYPE:
        raise ShardFormatError(
            f"{str(path)!r}: unsupported modded-nanogpt shard version {version} (known: 1 = uint16 "
            "tokens, 2 = uint32 tokens)"
        )
    dtype = _VERSION_DTYPE[version]
    expected = HEADER_BYTES + n * dtype.itemsize
    if n < 0 or size != expected:
        raise ShardFormatError(
            f"{str(path)!r}: header says {n} tokens ({expected} bytes with the header) but the "
            f"file has {size} bytes (truncated or corrupt)"
        )
    return ShardInfo("modded", n, HEADER_BYTES, dtype)


def read_shard(path: str | os.PathLike, layout: str = "auto") -> np.ndarray:
    """The tokens of a shard as a read-only ``np.memmap`` (validated by :func:`shard_info`)."""
    info = shard_info(path, layout)
    if info.num_tokens == 0:
        return np.zeros((0,), dtype=info.dtype)
    return np.memmap(path, dtype=info.dtype, mode="r", offset=info.offset,
                     shape=(info.num_tokens,))


def write_shard(
    path: str | os.PathLike,
    tokens: np.ndarray,
    layout: str = "nanogpt",
    *,
    version: int = 1,
    overwrite: bool = False,
) -> Path:
    """Write ``tokens`` (1-D integers in ``[0, 2**16)``) as a shard, atomically.

    Args:
      path: destination file; its directory must exist.
      tokens: 1-D integer array.
      layout: ``"nanogpt"`` (raw uint16) or ``"modded"`` (256×int32 header + tokens).
      version: modded layout only: 1 (uint16 tokens) or 2 (uint32, llm.c's LLaMA-3 shards).
      overwrite: replace an existing file (otherwise :class:`FileExistsError`).

    Returns:
      the path written.
    """
    _check_layout(layout, allow_auto=False)
    path = Path(path)
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be 1-D, got shape {tokens.shape}")
    if tokens.size and not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"tokens must be integers, got dtype {tokens.dtype}")
    if layout == "nanogpt" and version != 1:
        raise ValueError("the nanoGPT layout is raw uint16 (version 1 only)")
    if version not in _VERSION_DTYPE:
        raise ValueError(f"version must be 1 (uint16) or 2 (uint32), got {version}")
    dtype = _VERSION_DTYPE[version]
    hi = np.iinfo(dtype).max
    if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) > hi):
        raise ValueError(
            f"token ids must lie in [0, {hi}] to be stored as {dtype.name}, got range "
            f"[{int(tokens.min())}, {int(tokens.max())}]"
        )
    if path.exists() and not overwrite:
        raise FileExistsError(f"{str(path)!r} exists; pass overwrite=True to replace it")
    chunks = []
    if layout == "modded":
        header = np.zeros(HEADER_INTS, dtype="<i4")
        header[:3] = (MODDED_MAGIC, version, tokens.size)
        chunks.append(header.tobytes())
    chunks.append(tokens.astype(dtype).tobytes())
    return atomic_write(path, chunks)


def find_shards(pattern: str | os.PathLike) -> list[Path]:
    """Files matching a glob (``**`` allowed), sorted; none matching is an error."""
    pattern = os.path.expanduser(str(pattern))
    paths = sorted(Path(p) for p in _glob.glob(pattern, recursive=True) if Path(p).is_file())
    if not paths:
        raise DataNotFoundError(
            f"no token shards match {pattern!r}. Write them with `python -m "
            f"jaxspectra.data.prepare --source ... --out DIR`, or use {LM_ALTERNATIVE}."
        )
    return paths
