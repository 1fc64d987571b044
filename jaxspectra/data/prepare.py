"""Tokenise a text source into ``.bin`` token shards (run once; carry the shards to the GPU).

Usage::

  python -m jaxspectra.data.prepare --source tinyshakespeare --data-dir ../shared/data \
      --tokenizer byte --out shards/
  python -m jaxspectra.data.prepare --source wikitext2 --data-dir ../shared/data \
      --tokenizer wordpiece --splits train=valid+test,val=test --out shards/wt2
  python -m jaxspectra.data.prepare --source default --out shards/stdlib --layout modded

writes ``<out>/<name>.bin`` for each split (``--splits name=split,...``; a bare ``train`` means
``train=train``) and ``<out>/meta.json`` (tokenizer, vocabulary size, token counts, text
fingerprints). Read them back with
``build_lm_dataset("shards:<out>/{split}.bin", split="train")``. Every file is written atomically;
existing files are kept unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxspectra.data._paths import DataNotFoundError, atomic_write
from jaxspectra.data.datasets import encode_for_source
from jaxspectra.data.shards import LAYOUTS, write_shard
from jaxspectra.data.text import TEXT_SOURCES, corpus_fingerprint, load_text
from jaxspectra.data.tokenizer import Tokenizer, get_tokenizer


def parse_splits(spec: str | Sequence[str]) -> dict[str, str]:
    """``"train,val"`` or ``"train=valid+test,val=test"`` → ``{output name: source split}``."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: dict[str, str] = {}
    for item in items:
        item = item.strip()
        if not item:
            continue
        name, _, split = item.partition("=")
        name, split = name.strip(), (split or name).strip()
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"bad split output name {name!r} in {spec!r}")
        if name in out:
            raise ValueError(f"split output {name!r} given twice in {spec!r}")
        out[name] = split
    if not out:
        raise ValueError(f"no splits in {spec!r}")
    return out


def prepare(
    source: str,
    out: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    tokenizer: str | Tokenizer = "byte",
    splits: str | Sequence[str] = "train,val",
    layout: str = "nanogpt",
    val_fraction: float = 0.1,
    max_bytes: int | None = None,
    overwrite: bool = False,
) -> dict:
    """Write one shard per split and ``meta.json``; returns the metadata written.

    Every input is read and tokenised before anything is written, so a missing split leaves
    ``out`` untouched.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    split_map = parse_splits(splits)
    tok = get_tokenizer(tokenizer, data_dir)
    if tok.vocab_size > 2**16:
        raise ValueError(
            f"tokenizer {tok.name!r} has {tok.vocab_size} ids, more than uint16 shards hold"
        )
    out = Path(out)
    targets = {name: out / f"{name}.bin" for name in split_map}
    if not overwrite:
        existing = [str(p) for p in [*targets.values(), out / "meta.json"] if p.exists()]
        if existing:
            raise FileExistsError(f"{existing} exist; pass --overwrite to replace them")
    encoded: dict[str, tuple[np.ndarray, str, int]] = {}
    for name, split in split_map.items():
        try:
            text = load_text(source, data_dir, split, val_fraction=val_fraction,
                             max_bytes=max_bytes)
        except DataNotFoundError as e:
            if source.startswith("wikitext") and "valid+test" in str(e):
                raise DataNotFoundError(
                    f"{e} With prepare: --splits train=valid+test,val=test (Python: "
                    "splits='train=valid+test,val=test')."
                ) from e
            raise
        encoded[name] = (encode_for_source(tok, text, source), corpus_fingerprint(text), len(text))
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "source": source,
        "tokenizer": tok.name,
        "vocab_size": int(tok.vocab_size),
        "eot_id": tok.eot_id,
        "layout": layout,
        "dtype": "uint16",
        "val_fraction": val_fraction,
        "python": sys.version.split()[0],
        "splits": {},
    }
    for name, (ids, fp, nchars) in encoded.items():
        write_shard(targets[name], ids, layout, overwrite=overwrite)
        meta["splits"][name] = {
            "file": targets[name].name,
            "split": split_map[name],
            "num_tokens": int(ids.size),
            "num_chars": nchars,
            "text_sha256_16": fp,
        }
    atomic_write(out / "meta.json", [(json.dumps(meta, indent=2) + "\n").encode()])
    return meta


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m jaxspectra.data.prepare",
        description="Tokenise a text source into nanoGPT/modded-nanogpt .bin token shards.",
    )
    p.add_argument("--source", required=True, choices=TEXT_SOURCES)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--data-dir", default=None, help="data directory (or $JAXSPECTRA_DATA_DIR)")
    p.add_argument("--tokenizer", default="byte",
                   help="byte | wordpiece | wordpiece:<vocab.txt> | gpt2 | tiktoken:<enc>")
    p.add_argument("--splits", default="train,val",
                   help="comma list of NAME or NAME=SPLIT, e.g. train=valid+test,val=test")
    p.add_argument("--layout", default="nanogpt", choices=LAYOUTS)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--max-bytes", type=int, default=None, help="cap for default/pydocs corpora")
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    try:
        meta = prepare(a.source, a.out, data_dir=a.data_dir, tokenizer=a.tokenizer,
                       splits=a.splits, layout=a.layout, val_fraction=a.val_fraction,
                       max_bytes=a.max_bytes, overwrite=a.overwrite)
    except (FileNotFoundError, FileExistsError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for s in meta["splits"].values():
        print(f"{Path(a.out) / s['file']}: {s['num_tokens']:,} tokens ({s['split']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
