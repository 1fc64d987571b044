"""MNIST from the original idx files (optionally gzipped) or a Keras-style ``mnist.npz``.

The idx format (LeCun's MNIST page): two zero bytes, a type code (``0x08`` uint8, ``0x09`` int8,
``0x0B`` int16, ``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64), the number of dimensions, each
dimension as a big-endian ``uint32``, then the data, big-endian, C order.

:func:`load_mnist` returns ``(images uint8 [N, 28, 28], labels uint8 [N])``. The shared data
directory holds only the 10k test set (``split="test"``); :func:`train_heldout_split` splits it
deterministically into training and held-out parts.

Example:
  >>> import tempfile, numpy as np
  >>> p = tempfile.mkdtemp() + "/x-idx1-ubyte.gz"
  >>> _ = write_idx(p, np.array([7, 2, 1], np.uint8))
  >>> read_idx(p).tolist()
  [7, 2, 1]
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from jaxspectra.data._paths import (
    DataNotFoundError,
    atomic_write,
    first_existing,
    resolve_data_dir,
)

IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {np.dtype(v).newbyteorder("="): k for k, v in IDX_DTYPES.items()}
_PREFIX = {"train": "train", "test": "t10k"}
_MNIST_ALT = (
    "The shared data directory holds the real 10k MNIST test set (mnist/t10k-*-idx?-ubyte.gz): "
    "use split='test' and jaxspectra.data.train_heldout_split for a train/held-out split "
    "(scikit-learn's 8x8 load_digits is a second, tiny source)"
)


class IdxFormatError(ValueError):
    """An idx file's header or size is invalid."""


def _open(path: Path) -> bytes:
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return data


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an idx(.gz) file into a native-endian array (gzip detected from the magic bytes)."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"idx file {str(path)!r} not found. {_MNIST_ALT}.")
    data = _open(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise IdxFormatError(f"{str(path)!r} is not an idx file (bad magic {data[:4]!r})")
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        raise IdxFormatError(f"{str(path)!r}: unknown idx type code 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxFormatError(f"{str(path)!r}: truncated idx header")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise IdxFormatError(
            f"{str(path)!r}: header says shape {shape} ({expected} bytes) but the data has "
            f"{len(data)} bytes (truncated or corrupt)"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write ``array`` as idx (gzipped when the name ends in ``.gz``), atomically."""
    path = Path(path)
    array = np.asarray(array)
    key = array.dtype.newbyteorder("=")
    if key not in _CODES:
        raise ValueError(f"idx cannot store dtype {array.dtype}; use one of {list(_CODES)}")
    code = _CODES[key]
    payload = (
        bytes([0, 0, code, array.ndim])
        + np.asarray(array.shape, dtype=">u4").tobytes()
        + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    )
    if path.suffix == ".gz":
        payload = gzip.compress(payload, mtime=0)
    return atomic_write(path, [payload])


def _idx_candidates(root: Path, prefix: str, kind: str, rank: int) -> list[Path]:
    out = []
    for d in (root / "mnist", root / "MNIST" / "raw", root):
        for stem in (f"{prefix}-{kind}-idx{rank}-ubyte", f"{prefix}-{kind}.idx{rank}-ubyte"):
            out += [d / f"{stem}.gz", d / stem]
    return out


def load_mnist(
    data_dir: str | os.PathLike | None = None, split: str = "test"
) -> tuple[np.ndarray, np.ndarray]:
    """MNIST ``split`` ("train" or "test") as ``(uint8 [N, 28, 28], uint8 [N])``.

    Looks in ``data_dir``, ``data_dir/mnist`` and ``data_dir/MNIST/raw`` for the idx files
    (``t10k-images-idx3-ubyte[.gz]`` …), then for ``mnist.npz`` (keys ``x_train``, ``y_train``,
    ``x_test``, ``y_test``).
    """
    if split not in _PREFIX:
        raise ValueError(f"MNIST split must be 'train' or 'test', got {split!r}")
    root = resolve_data_dir(data_dir, "MNIST", _MNIST_ALT)
    prefix = _PREFIX[split]
    img_c = _idx_candidates(root, prefix, "images", 3)
    lab_c = _idx_candidates(root, prefix, "labels", 1)
    npz_c = [root / "mnist" / "mnist.npz", root / "mnist.npz"]
    if root.is_file() and root.suffix == ".npz":
        npz_c = [root]
    if any(p.is_file() for p in img_c):
        images = read_idx(next(p for p in img_c if p.is_file()))
        alt = _MNIST_ALT if split == "train" else "the labels file must sit beside the images"
        labels = read_idx(first_existing(lab_c, f"MNIST {split} labels", alt))
    elif any(p.is_file() for p in npz_c):
        with np.load(next(p for p in npz_c if p.is_file())) as z:
            key = "train" if split == "train" else "test"
            if f"x_{key}" not in z or f"y_{key}" not in z:
                raise DataNotFoundError(f"mnist.npz has no x_{key}/y_{key}. {_MNIST_ALT}.")
            images, labels = z[f"x_{key}"], z[f"y_{key}"]
    else:
        tried = ", ".join(repr(str(p)) for p in img_c[:2] + npz_c)
        raise DataNotFoundError(f"MNIST {split} split not found (tried {tried}, ...). {_MNIST_ALT}.")
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != (images.shape[0],):
        raise IdxFormatError(
            f"MNIST {split}: expected images [N, 28, 28] and labels [N], got {images.shape} and "
            f"{labels.shape}"
        )
    return images.astype(np.uint8), labels.astype(np.uint8)


def train_heldout_split(
    n: int, held_out: int | float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic disjoint ``(train_idx, held_out_idx)`` covering ``range(n)``, each sorted.

    ``held_out`` is a count or a fraction of ``n``. The permutation sorts raw Philox-4x64 words
    keyed by ``(seed, 0)`` (:func:`jaxspectra.data._rng.philox_permutation`), so the split is
    the same on every machine and NumPy version.
    """
    if isinstance(held_out, float):
        if not 0.0 < held_out < 1.0:
            raise ValueError(f"held_out fraction must lie in (0, 1), got {held_out}")
        held_out = int(round(n * held_out))
    if not 0 < held_out < n:
        raise ValueError(f"held_out must be between 1 and n-1={n - 1}, got {held_out}")
    from jaxspectra.data._rng import philox_permutation

    perm = philox_permutation(n, seed, 0, stream=3)
    return np.sort(perm[held_out:]), np.sort(perm[:held_out])
