"""Token shards: both layouts written and read back, header/size checked byte by byte with
``struct``/``np.fromfile`` (independent of the reader), validation errors, atomic writes."""

import os
import struct

import numpy as np
import pytest

from jaxspectra.data import (
    MODDED_MAGIC,
    DataNotFoundError,
    ShardFormatError,
    find_shards,
    read_shard,
    shard_info,
    write_shard,
)
from jaxspectra.data import shards as shards_mod


@pytest.fixture
def tokens():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 2**16, size=1001)
    t[:3] = (0, 65535, 50256)
    return t


def test_nanogpt_layout_is_raw_uint16(tmp_path, tokens):
    p = write_shard(tmp_path / "train.bin", tokens)
    assert p.stat().st_size == 2 * tokens.size
    umask = os.umask(0)
    os.umask(umask)
    assert p.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0o600
    np.testing.assert_array_equal(np.fromfile(p, dtype="<u2"), tokens)  # independent read
    got = read_shard(p)
    assert isinstance(got, np.memmap) and got.dtype == np.uint16
    np.testing.assert_array_equal(got, tokens)
    assert shard_info(p) == ("nanogpt", tokens.size, 0, np.dtype("<u2"))


@pytest.mark.parametrize("version,dtype", [(1, "<u2"), (2, "<u4")])
def test_modded_layout_header(tmp_path, tokens, version, dtype):
    if version == 2:
        tokens = tokens.astype(np.int64) * 3  # ids beyond uint16
    p = write_shard(tmp_path / "fineweb_val_000000.bin", tokens, "modded", version=version)
    raw = p.read_bytes()
    assert len(raw) == 1024 + np.dtype(dtype).itemsize * tokens.size
    magic, ver, n = struct.unpack("<3i", raw[:12])
    assert (magic, ver, n) == (20240520, version, tokens.size) and MODDED_MAGIC == 20240520
    assert raw[12:1024] == bytes(1012)  # the rest of the 256 x int32 header is zero
    np.testing.assert_array_equal(np.frombuffer(raw[1024:], dtype=dtype), tokens)
    got = read_shard(p)  # auto-detected
    assert shard_info(p).layout == "modded" and got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, tokens)
    np.testing.assert_array_equal(read_shard(p, "modded"), tokens)


def test_header_validation_errors(tmp_path, tokens):
    raw = write_shard(tmp_path / "raw.bin", tokens)
    with pytest.raises(ShardFormatError, match="layout='nanogpt'"):
        read_shard(raw, "modded")  # wrong magic
    mod = write_shard(tmp_path / "mod.bin", tokens, "modded")
    data = mod.read_bytes()
    cut = tmp_path / "cut.bin"
    cut.write_bytes(data[:-2])  # one token missing
    with pytest.raises(ShardFormatError, match="truncated"):
        read_shard(cut)
    bad_version = tmp_path / "v7.bin"
    bad_version.write_bytes(data[:4] + struct.pack("<i", 7) + data[8:])
    with pytest.raises(ShardFormatError, match="version 7"):
        read_shard(bad_version)
    short = tmp_path / "short.bin"
    short.write_bytes(data[:100])
    with pytest.raises(ShardFormatError, match="header"):
        read_shard(short, "modded")
    odd = tmp_path / "odd.bin"
    odd.write_bytes(b"\x01\x02\x03")
    with pytest.raises(ShardFormatError, match="uint16"):
        read_shard(odd)
    with pytest.raises(DataNotFoundError, match="jaxspectra.data.prepare"):
        read_shard(tmp_path / "missing.bin")
    with pytest.raises(ValueError, match="layout"):
        read_shard(raw, "gpt")
    # A raw shard whose first tokens spell the magic is read as raw when asked to.
    spoof = np.concatenate([np.frombuffer(struct.pack("<i", MODDED_MAGIC), "<u2"), tokens])
    p = write_shard(tmp_path / "spoof.bin", spoof)
    with pytest.raises(ShardFormatError):
        read_shard(p)
    np.testing.assert_array_equal(read_shard(p, "nanogpt"), spoof)


def test_write_rejects_bad_tokens_and_keeps_existing_files(tmp_path, tokens):
    for bad, match in [([0, 65536], "65535"), ([-1], r"\[0, 65535\]"),
                       (np.zeros((2, 2), int), "1-D"), (np.array([0.5]), "integers")]:
        with pytest.raises(ValueError, match=match):
            write_shard(tmp_path / "x.bin", np.asarray(bad))
    with pytest.raises(ValueError, match="version"):
        write_shard(tmp_path / "x.bin", tokens, "nanogpt", version=2)
    p = write_shard(tmp_path / "x.bin", tokens[:5])
    with pytest.raises(FileExistsError, match="overwrite"):
        write_shard(p, tokens)
    np.testing.assert_array_equal(read_shard(p), tokens[:5])
    write_shard(p, tokens, overwrite=True)
    np.testing.assert_array_equal(read_shard(p), tokens)
    assert read_shard(write_shard(tmp_path / "empty.bin", np.zeros(0, int))).shape == (0,)


def test_write_is_atomic(tmp_path, tokens, monkeypatch):
    p = write_shard(tmp_path / "train.bin", tokens[:7])
    before = p.read_bytes()

    def crash(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(shards_mod.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_shard(p, tokens, overwrite=True)
    assert p.read_bytes() == before  # the old shard is untouched
    assert sorted(os.listdir(tmp_path)) == ["train.bin"]  # no temporary left behind


def test_find_shards_sorted_and_missing(tmp_path, tokens):
    for i in (2, 0, 1):
        write_shard(tmp_path / f"fineweb_train_{i:06d}.bin", tokens[:4], "modded")
    got = find_shards(tmp_path / "fineweb_train_*.bin")
    assert [p.name for p in got] == [f"fineweb_train_{i:06d}.bin" for i in range(3)]
    with pytest.raises(DataNotFoundError, match="source='default'"):
        find_shards(tmp_path / "nothing_*.bin")
