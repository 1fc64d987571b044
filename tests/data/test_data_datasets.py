"""Datasets: batches as pure functions of (seed, step), checked on token streams whose values
encode their own positions (so every window can be verified against its start), shard
boundaries, host sharding of the global batch, epoch coverage, and the build_lm_dataset sources."""

import json

import numpy as np
import pytest
from _data_shared import SHARED, need

from jaxspectra.data import (
    ByteTokenizer,
    ClassificationDataset,
    DataNotFoundError,
    LMDataset,
    SyntheticLMDataset,
    build_lm_dataset,
    load_text,
    read_shard,
    write_shard,
)

B, T = 4, 8


def _contiguous(x):
    return bool((np.diff(x, axis=1) == 1).all())


def test_batch_is_a_pure_function_of_seed_and_step():
    ds = LMDataset(np.arange(10_000))
    x, y = ds.batch(0, 3, B, T)
    assert x.shape == y.shape == (B, T) and x.dtype == y.dtype == np.int32
    assert _contiguous(x) and (y == x + 1).all()  # windows of the stream, targets shifted by one
    assert x.min() >= 0 and y.max() <= 9_999
    again = LMDataset(np.arange(10_000))  # a fresh object (a resumed run) sees the same batch
    np.testing.assert_array_equal(again.batch(0, 3, B, T)[0], x)
    assert not np.array_equal(ds.batch(0, 4, B, T)[0], x)
    assert not np.array_equal(ds.batch(1, 3, B, T)[0], x)
    # order of requests does not matter (no iterator state)
    seq = [ds.batch(7, s, B, T)[0] for s in range(5)]
    rev = [ds.batch(7, s, B, T)[0] for s in reversed(range(5))][::-1]
    for a, b in zip(seq, rev):
        np.testing.assert_array_equal(a, b)


def test_every_window_start_is_reachable_and_nothing_else():
    n, t = 40, 7  # starts 0..32 (a window needs t + 1 tokens)
    ds = LMDataset(np.arange(n))
    starts = np.concatenate([ds.batch(0, s, 16, t)[0][:, 0] for s in range(200)])
    counts = np.bincount(starts, minlength=n)
    assert set(np.nonzero(counts)[0]) == set(range(n - t))
    expected = starts.size / (n - t)  # uniform: 3200/33 ≈ 97 each
    assert counts[: n - t].min() > 0.6 * expected and counts.max() < 1.4 * expected


def test_windows_stay_inside_their_shard():
    a, b = np.arange(0, 30), np.arange(1000, 1012)  # b has 12 - 8 = 4 starts, a has 22
    ds = LMDataset([a, b])
    xs = np.concatenate([ds.batch(1, s, 8, T)[0] for s in range(100)])
    assert _contiguous(xs)
    in_a = xs[:, -1] < 30
    assert ((xs[:, 0] >= 1000) | in_a).all() and (xs[~in_a, -1] <= 1011).all()
    frac_b = 1 - in_a.mean()
    assert 0.08 < frac_b < 0.22  # 4/26 ≈ 0.15 of the windows come from the short shard
    with pytest.raises(ValueError, match="at least 31 tokens"):
        ds.batch(0, 0, 1, 30)


def test_host_shards_partition_the_global_batch():
    ds = LMDataset(np.arange(5000))
    gx, gy = ds.batch(3, 11, 8, T)
    parts = [ds.batch(3, 11, 8, T, shard_index=i, num_shards=4) for i in range(4)]
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), gx)
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), gy)
    with pytest.raises(ValueError, match="divisible by num_shards=3"):
        ds.batch(0, 0, 8, T, num_shards=3)
    with pytest.raises(ValueError, match="shard_index"):
        ds.batch(0, 0, 8, T, shard_index=4, num_shards=4)


def test_bad_arguments():
    ds = LMDataset(np.arange(100))
    for kw, match in [({"seed": -1}, "seed"), ({"step": 2**64}, "step"), ({"batch_size": 0},
                      "batch_size"), ({"seq_len": 2.0}, "seq_len")]:
        args = {"seed": 0, "step": 0, "batch_size": B, "seq_len": T, **kw}
        with pytest.raises((ValueError, TypeError), match=match):
            ds.batch(**args)
    with pytest.raises(ValueError, match="1-D"):
        LMDataset(np.zeros((2, 3), int))
    with pytest.raises(ValueError, match="no tokens"):
        LMDataset([])
    assert LMDataset([5, 6, 7]).num_tokens == 3  # a plain list of ids is one stream
    with pytest.raises(ValueError, match="vocab_size=50"):
        LMDataset(np.arange(100), vocab_size=50)


def test_eval_batches_are_consecutive_windows():
    ds = LMDataset([np.arange(0, 50), np.arange(100, 120)])  # 49//8=6 + 19//8=2 windows
    assert ds.num_eval_windows(T) == 8
    assert ds.num_eval_batches(3, T) == 2 and ds.num_eval_batches(3, T, drop_remainder=False) == 3
    xs = np.concatenate([x for x, _ in ds.eval_batches(3, T, drop_remainder=False)])
    starts = list(range(0, 48, 8)) + [100, 108]
    assert xs[:, 0].tolist() == starts and _contiguous(xs)
    x1, y1 = ds.eval_batch(1, 3, T)
    np.testing.assert_array_equal(x1, xs[3:6])
    np.testing.assert_array_equal(y1, x1 + 1)
    assert len(list(ds.eval_batches(3, T, max_batches=1))) == 1
    with pytest.raises(IndexError):
        ds.eval_batch(3, 3, T)


def test_memmapped_shard_gives_the_same_batches(tmp_path):
    tokens = (np.arange(3000) * 7) % 50257
    ds_mem = LMDataset(tokens, vocab_size=50257)
    ds_map = LMDataset(read_shard(write_shard(tmp_path / "a.bin", tokens, "modded")), 50257)
    for step in range(3):
        for a, b in zip(ds_mem.batch(5, step, B, T), ds_map.batch(5, step, B, T)):
            np.testing.assert_array_equal(a, b)


def test_synthetic():
    ds = SyntheticLMDataset(vocab_size=11)
    x, y = ds.batch(0, 0, B, T)
    assert x.dtype == np.int32 and x.min() >= 0 and x.max() < 11
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
    np.testing.assert_array_equal(ds.batch(0, 0, B, T)[0], x)
    assert not np.array_equal(ds.batch(0, 1, B, T)[0], x)
    assert np.unique(np.concatenate([ds.batch(0, s, B, T)[0] for s in range(5)])).size == 11
    evals = list(ds.eval_batches(B, T))
    assert len(evals) == 4 and not np.array_equal(evals[0][0], x)
    half = ds.batch(0, 0, B, T, shard_index=1, num_shards=2)[0]
    np.testing.assert_array_equal(half, x[2:])


def test_classification_epochs_cover_every_example_once():
    n = 10
    ds = ClassificationDataset(np.arange(n) * 10, np.arange(n) % 3)
    assert ds.num_classes == 3
    order = np.concatenate([ds.batch(0, s, 4)[0] for s in range(5)])  # 20 = two epochs
    assert sorted(order[:10].tolist()) == sorted(order[10:].tolist()) == list(range(0, 100, 10))
    assert not np.array_equal(order[:10], order[10:])  # reshuffled each epoch
    x, y = ds.batch(0, 2, 4)  # straddles the epoch boundary: positions 8..11
    np.testing.assert_array_equal(x, order[8:12])
    np.testing.assert_array_equal(y, (x // 10) % 3)
    assert not np.array_equal(ds.batch(1, 0, 4)[0], order[:4])
    halves = [ds.batch(0, 2, 4, shard_index=i, num_shards=2)[0] for i in range(2)]
    np.testing.assert_array_equal(np.concatenate(halves), x)
    assert [len(b[0]) for b in ds.eval_batches(4)] == [4, 4, 2]
    imgs = ClassificationDataset(np.full((3, 2, 2), 255, np.uint8), np.zeros(3, int), scale=1 / 255)
    xb, _ = imgs.batch(0, 0, 2)
    assert xb.dtype == np.float32 and np.allclose(xb, 1.0)
    with pytest.raises(ValueError, match="agree"):
        ClassificationDataset(np.zeros((3, 2)), np.zeros(4, int))


def test_build_default_needs_no_data_dir(monkeypatch):
    monkeypatch.delenv("JAXSPECTRA_DATA_DIR", raising=False)
    ds = build_lm_dataset("default", max_bytes=100_000)
    text = load_text("default", split="train", max_bytes=100_000)
    assert ds.vocab_size == 256 and ds.num_tokens == len(text.encode("utf-8"))
    np.testing.assert_array_equal(ds.shards[0], ByteTokenizer().encode(text))
    assert ds.meta["tokenizer"] == "byte" and len(ds.meta["text_sha256_16"]) == 16
    assert isinstance(build_lm_dataset("synthetic", vocab_size=7), SyntheticLMDataset)
    with pytest.raises(ValueError, match="unknown LM source"):
        build_lm_dataset("openwebtext")
    with pytest.raises(DataNotFoundError, match="source='default'"):
        build_lm_dataset("tinyshakespeare")


def test_build_from_shards_with_split_placeholder(tmp_path):
    write_shard(tmp_path / "train.bin", np.arange(500) % 300)
    write_shard(tmp_path / "val.bin", np.arange(100) % 300)
    (tmp_path / "meta.json").write_text(json.dumps({"vocab_size": 300, "tokenizer": "x"}))
    tr = build_lm_dataset("shards:{split}.bin", data_dir=tmp_path, split="train")
    va = build_lm_dataset(f"shards:{tmp_path}/{{split}}.bin", split="val")
    assert tr.num_tokens == 500 and va.num_tokens == 100 and tr.vocab_size == 300
    with pytest.raises(DataNotFoundError, match="prepare"):
        build_lm_dataset("shards:{split}.bin", data_dir=tmp_path, split="test")


def test_build_real_sources():
    need(SHARED / "wikitext-2" / "valid.txt")
    need(SHARED / "tinyshakespeare" / "input.txt")
    ts = build_lm_dataset("tinyshakespeare", SHARED, split="val")
    assert ts.num_tokens == 1_115_394 - int(1_115_394 * 0.9)  # ASCII: one byte per character
    pytest.importorskip("tokenizers")
    wt = build_lm_dataset("wikitext2", SHARED, tokenizer="wordpiece", split="valid")
    assert wt.vocab_size == 30522 and 200_000 < wt.num_tokens < 400_000
    x, _ = wt.batch(0, 0, 2, 16)
    assert x.max() < 30522
