"""prepare: shards written from a text source read back equal to tokenising the split directly;
the CLI exactly as documented; nothing written when an input is missing or a file exists."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _data_shared import SHARED, need

from jaxspectra.data import DataNotFoundError, build_lm_dataset, load_text, read_shard, shard_info
from jaxspectra.data.prepare import main, parse_splits, prepare

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    (d / "tinyshakespeare").mkdir(parents=True)
    (d / "tinyshakespeare" / "input.txt").write_text("First Citizen:\nBefore we proceed. " * 50)
    return d


@pytest.mark.parametrize("layout", ["nanogpt", "modded"])
def test_prepare_roundtrip(data_dir, tmp_path, layout):
    out = tmp_path / "shards"
    meta = prepare("tinyshakespeare", out, data_dir=data_dir, layout=layout)
    for name in ("train", "val"):
        text = load_text("tinyshakespeare", data_dir, name)
        got = read_shard(out / f"{name}.bin")
        np.testing.assert_array_equal(got, np.frombuffer(text.encode(), np.uint8))
        assert shard_info(out / f"{name}.bin").layout == layout
        assert meta["splits"][name]["num_tokens"] == got.size
    on_disk = json.loads((out / "meta.json").read_text())
    assert on_disk == meta and meta["vocab_size"] == 256 and meta["tokenizer"] == "byte"
    ds = build_lm_dataset(f"shards:{out}/{{split}}.bin", split="val")
    assert ds.vocab_size == 256 and ds.num_tokens == meta["splits"]["val"]["num_tokens"]


def test_cli_as_documented_and_refuses_to_overwrite(data_dir, tmp_path):
    out = tmp_path / "shards"
    cmd = [sys.executable, "-m", "jaxspectra.data.prepare", "--source", "tinyshakespeare",
           "--data-dir", str(data_dir), "--tokenizer", "byte", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "train.bin" in r.stdout and sorted(os.listdir(out)) == ["meta.json", "train.bin",
                                                                   "val.bin"]
    before = (out / "train.bin").read_bytes()
    assert main(cmd[3:]) == 2  # second run: files exist
    assert (out / "train.bin").read_bytes() == before
    assert main([*cmd[3:], "--overwrite", "--layout", "modded"]) == 0
    assert shard_info(out / "train.bin").layout == "modded"


def test_nothing_written_when_a_split_is_missing(tmp_path, capsys):
    need(SHARED / "wikitext-2" / "valid.txt")
    out = tmp_path / "wt2"
    with pytest.raises(DataNotFoundError, match="valid\\+test"):
        prepare("wikitext2", out, data_dir=SHARED)  # default splits train,val: no train file
    assert not out.exists()
    assert main(["--source", "wikitext2", "--data-dir", str(SHARED), "--out", str(out)]) == 2
    assert "valid+test" in capsys.readouterr().err
    meta = prepare("wikitext2", out, data_dir=SHARED, splits="train=valid+test,val=test")
    assert meta["splits"]["train"]["split"] == "valid+test"
    n_valid = len(load_text("wikitext2", SHARED, "valid").encode())
    n_test = meta["splits"]["val"]["num_tokens"]
    assert meta["splits"]["train"]["num_tokens"] == n_valid + n_test


def test_parse_splits():
    assert parse_splits("train,val") == {"train": "train", "val": "val"}
    assert parse_splits("train=valid+test, val=test") == {"train": "valid+test", "val": "test"}
    for bad in ("", "a,a", "../x=train"):
        with pytest.raises(ValueError):
            parse_splits(bad)
