"""MNIST/idx: the real test set parsed independently (gzip + struct) and compared with the loader,
the README's md5 of the official files, generated idx files of every type, npz, splits, errors."""

import gzip
import hashlib
import struct

import numpy as np
import pytest
from _data_shared import SHARED, need

from jaxspectra.data import (
    DataNotFoundError,
    IdxFormatError,
    load_mnist,
    read_idx,
    train_heldout_split,
    write_idx,
)

MNIST = SHARED / "mnist"


def test_real_mnist_test_set_matches_an_independent_parse():
    img_gz = need(MNIST / "t10k-images-idx3-ubyte.gz")
    lab_gz = need(MNIST / "t10k-labels-idx1-ubyte.gz")
    # README: the official files' md5
    assert hashlib.md5(img_gz.read_bytes()).hexdigest() == "9fb629c4189551a2d022fa330f9573f3"
    assert hashlib.md5(lab_gz.read_bytes()).hexdigest() == "ec29112dd5afa0611ce80d1b7f02629c"
    lab_raw = gzip.decompress(lab_gz.read_bytes())
    img_raw = gzip.decompress(img_gz.read_bytes())
    assert struct.unpack(">II", lab_raw[:8]) == (2049, 10_000)
    assert struct.unpack(">IIII", img_raw[:16]) == (2051, 10_000, 28, 28)
    images, labels = load_mnist(SHARED, "test")
    assert images.shape == (10_000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10_000,) and labels.dtype == np.uint8
    assert labels.tolist() == list(lab_raw[8:])
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # the well-known first digits
    assert images[0].tobytes() == img_raw[16:16 + 784]
    assert images[-1].tobytes() == img_raw[-784:]
    assert np.bincount(labels).tolist() == [lab_raw[8:].count(d) for d in range(10)]
    np.testing.assert_array_equal(load_mnist(MNIST, "test")[1], labels)  # the mnist/ dir itself


def test_real_mnist_has_no_train_split_and_says_what_to_do():
    need(MNIST)
    with pytest.raises(DataNotFoundError, match="split='test'.*train_heldout_split"):
        load_mnist(SHARED, "train")


@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
@pytest.mark.parametrize("gz", [False, True])
def test_idx_roundtrip_every_type(tmp_path, dtype, gz):
    a = (np.arange(2 * 3 * 5) - 7).astype(dtype).reshape(2, 3, 5)
    if dtype == "u1":
        a = a.astype("i4").clip(0).astype("u1")
    p = write_idx(tmp_path / ("a.idx" + (".gz" if gz else "")), a)
    got = read_idx(p)
    assert got.dtype == np.dtype(dtype) and got.shape == a.shape
    np.testing.assert_array_equal(got, a)


def test_idx_from_hand_built_bytes_and_errors(tmp_path):
    # type 0x0B (int16, big-endian), 2 dims (2, 2)
    payload = bytes([0, 0, 0x0B, 2]) + struct.pack(">II", 2, 2) + struct.pack(">4h", 1, -2, 300, 4)
    p = tmp_path / "h.idx"
    p.write_bytes(payload)
    np.testing.assert_array_equal(read_idx(p), [[1, -2], [300, 4]])
    (tmp_path / "cut.idx").write_bytes(payload[:-1])
    with pytest.raises(IdxFormatError, match="truncated"):
        read_idx(tmp_path / "cut.idx")
    (tmp_path / "magic.idx").write_bytes(b"\x01" + payload[1:])
    with pytest.raises(IdxFormatError, match="not an idx"):
        read_idx(tmp_path / "magic.idx")
    (tmp_path / "type.idx").write_bytes(bytes([0, 0, 0x07, 1]) + struct.pack(">I", 0))
    with pytest.raises(IdxFormatError, match="type code 0x07"):
        read_idx(tmp_path / "type.idx")
    with pytest.raises(DataNotFoundError, match="10k MNIST test set"):
        read_idx(tmp_path / "missing.idx")


def test_load_mnist_generated_idx_and_npz(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    y = np.array([3, 1, 4, 1, 5], np.uint8)
    raw = tmp_path / "MNIST" / "raw"  # torchvision's layout
    raw.mkdir(parents=True)
    write_idx(raw / "train-images-idx3-ubyte", x)
    write_idx(raw / "train-labels-idx1-ubyte", y)
    gx, gy = load_mnist(tmp_path, "train")
    np.testing.assert_array_equal(gx, x)
    np.testing.assert_array_equal(gy, y)
    with pytest.raises(DataNotFoundError):
        load_mnist(tmp_path, "test")
    npz_dir = tmp_path / "k"
    npz_dir.mkdir()
    np.savez(npz_dir / "mnist.npz", x_train=x, y_train=y, x_test=x[:2], y_test=y[:2])
    np.testing.assert_array_equal(load_mnist(npz_dir, "test")[1], y[:2])
    write_idx(raw / "t10k-images-idx3-ubyte.gz", x[:, :27])  # wrong image size
    write_idx(raw / "t10k-labels-idx1-ubyte.gz", y)
    with pytest.raises(IdxFormatError, match=r"\[N, 28, 28\]"):
        load_mnist(tmp_path, "test")
    monkeypatch.delenv("JAXSPECTRA_DATA_DIR", raising=False)
    with pytest.raises(DataNotFoundError, match="data_dir"):
        load_mnist(None)
    with pytest.raises(ValueError, match="'train' or 'test'"):
        load_mnist(tmp_path, "val")


def test_train_heldout_split():
    tr, ho = train_heldout_split(100, 0.2, seed=0)
    assert len(ho) == 20 and len(tr) == 80
    assert sorted(np.concatenate([tr, ho]).tolist()) == list(range(100))
    assert (np.diff(tr) > 0).all() and (np.diff(ho) > 0).all()
    tr2, ho2 = train_heldout_split(100, 20, seed=0)
    np.testing.assert_array_equal(ho, ho2)
    np.testing.assert_array_equal(tr, tr2)
    assert not np.array_equal(train_heldout_split(100, 20, seed=1)[1], ho)
    for bad in (0, 100, 1.5):
        with pytest.raises(ValueError):
            train_heldout_split(100, bad)
