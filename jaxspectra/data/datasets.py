"""Datasets whose batches are pure functions of ``(seed, step)``.

* :class:`LMDataset` — a token stream (one array, a memmapped shard, or several shards):
  ``batch(seed, step, batch_size, seq_len) -> (inputs, targets)``, ``int32 [B, T]`` with
  ``targets[:, t] == inputs[:, t + 1]`` inside each window. Window starts are uniform over every
  position where a whole window of ``T + 1`` tokens fits (windows never cross shard boundaries),
  drawn from raw Philox words keyed by ``(seed, step)`` (:mod:`jaxspectra.data._rng`). There is no
  iterator state: a run resumed at step ``k`` asks for ``batch(seed, k, ...)`` and gets exactly the
  batch the uninterrupted run saw. Evaluation reads consecutive non-overlapping windows
  (``eval_batch(i, ...)`` / ``eval_batches(...)``).
* :class:`SyntheticLMDataset` — uniform random tokens generated from ``(seed, step)`` (no storage;
  MaxText's ``dataset_type=synthetic`` smoke data).
* :class:`ClassificationDataset` — images + labels; ``batch(seed, step, batch_size)`` walks
  epoch-wise permutations (each example once per epoch), again a pure function of
  ``(seed, step)``.
* :func:`build_lm_dataset` — by source name: ``default``, ``tinyshakespeare``, ``wikitext2``,
  ``pydocs``, ``shards:<glob>``, ``synthetic``.

All of it is host-side NumPy; the trainer puts batches on devices. For multi-host data
parallelism, ``batch(..., shard_index=i, num_shards=n)`` returns rows ``i*B/n … (i+1)*B/n`` of the
same global batch, so the global batch does not depend on the number of hosts.

Example:
  >>> ds = LMDataset(np.arange(1000) % 256, vocab_size=256)
  >>> x, y = ds.batch(seed=0, step=5, batch_size=4, seq_len=8)
  >>> x.shape, x.dtype.name, bool((x[:, 1:] == y[:, :-1]).all())
  ((4, 8), 'int32', True)
  >>> bool((ds.batch(0, 5, 4, 8)[0] == x).all())
  True
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from jaxspectra.data._rng import (
    STREAM_EPOCH_PERMUTATION,
    STREAM_LM_WINDOWS,
    STREAM_SYNTHETIC,
    philox_integers,
    philox_permutation,
)
from jaxspectra.data.shards import find_shards, read_shard
from jaxspectra.data.text import corpus_fingerprint, load_text
from jaxspectra.data.tokenizer import Tokenizer, get_tokenizer

Batch = tuple[np.ndarray, np.ndarray]
LM_SOURCES = ("default", "tinyshakespeare", "wikitext2", "pydocs", "docs", "shards:<glob>", "synthetic")


def _check_positive(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _local_rows(batch_size: int, shard_index: int, num_shards: int) -> slice:
    _check_positive(num_shards, "num_shards")
    if batch_size % num_shards:
        raise ValueError(
            f"batch_size={batch_size} is not divisible by num_shards={num_shards} (the number of "
            "data-parallel hosts): pick a batch size that is a multiple of it"
        )
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index must lie in [0, {num_shards}), got {shard_index}")
    per = batch_size // num_shards
    return slice(shard_index * per, (shard_index + 1) * per)


class LMDataset:
    """A token stream with deterministic random-window training batches (module docstring).

    Args:
      tokens: a 1-D integer array (a ``np.memmap`` is not loaded), or a sequence of them (shards).
      vocab_size: the tokenizer's vocabulary size (checked against the tokens' maximum when they
        are in memory; the model's vocabulary must be at least this).
      name: a label for logs.
      meta: free-form provenance (source, tokenizer, corpus fingerprint, ...).
    """

    def __init__(
        self,
        tokens: np.ndarray | Sequence[np.ndarray],
        vocab_size: int | None = None,
        *,
        name: str = "tokens",
        meta: dict | None = None,
    ):
        if (isinstance(tokens, Sequence) and not isinstance(tokens, str) and tokens
                and all(np.ndim(t) == 1 for t in tokens)):  # several shards
            shards = [t if isinstance(t, np.ndarray) else np.asarray(t) for t in tokens]
        else:  # one array (a np.memmap stays a memmap)
            shards = [tokens if isinstance(tokens, np.ndarray) else np.asarray(tokens)]
        for i, s in enumerate(shards):
            if s.ndim != 1 or (s.size and not np.issubdtype(s.dtype, np.integer)):
                raise ValueError(
                    f"token array {i} must be 1-D integers, got shape {s.shape} dtype {s.dtype}"
                )
        self.shards = shards
        self.lengths = np.array([s.shape[0] for s in shards], dtype=np.int64)
        if not self.lengths.sum():
            raise ValueError(f"LMDataset {name!r} has no tokens")
        self.name = name
        self.meta = dict(meta or {})
        if vocab_size is not None:
            vocab_size = _check_positive(vocab_size, "vocab_size")
            for i, s in enumerate(shards):
                if not isinstance(s, np.memmap) and s.size and int(s.max()) >= vocab_size:
                    raise ValueError(
                        f"token array {i} has id {int(s.max())} >= vocab_size={vocab_size}"
                    )
        self.vocab_size = vocab_size

    @property
    def num_tokens(self) -> int:
        return int(self.lengths.sum())

    def __len__(self) -> int:
        return self.num_tokens

    def __repr__(self) -> str:
        return (f"LMDataset({self.name!r}, num_tokens={self.num_tokens}, "
                f"shards={len(self.shards)}, vocab_size={self.vocab_size})")

    def _window_counts(self, seq_len: int) -> np.ndarray:
        return np.maximum(self.lengths - seq_len, 0)

    def _gather(self, shard_ids: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
        out = np.empty((starts.shape[0], width), dtype=np.int32)
        offs = np.arange(width, dtype=np.int64)
        for s in np.unique(shard_ids):
            rows = np.nonzero(shard_ids == s)[0]
            idx = starts[rows][:, None] + offs[None, :]
            out[rows] = np.asarray(self.shards[int(s)][idx.ravel()]).reshape(idx.shape)
        return out

    def batch(
        self,
        seed: int,
        step: int,
        batch_size: int,
        seq_len: int,
        *,
        shard_index: int = 0,
        num_shards: int = 1,
    ) -> Batch:
        """Training batch ``step`` of run ``seed``: ``(inputs, targets)``, ``int32 [B, T]``.

        A pure function of its arguments. Each of the ``B`` windows starts uniformly at random
        among all positions with ``T + 1`` tokens ahead in the same shard.
        """
        batch_size = _check_positive(batch_size, "batch_size")
        seq_len = _check_positive(seq_len, "seq_len")
        rows = _local_rows(batch_size, shard_index, num_shards)
        counts = self._window_counts(seq_len)
        total = int(counts.sum())
        if total == 0:
            raise ValueError(
                f"seq_len={seq_len} needs at least {seq_len + 1} tokens in one shard; the "
                f"longest of {self.name!r} has {int(self.lengths.max())}"
            )
        g = philox_integers(total, seed, step, STREAM_LM_WINDOWS, batch_size)[rows]
        bounds = np.cumsum(counts)
        shard_ids = np.searchsorted(bounds, g, side="right")
        starts = g - (bounds[shard_ids] - counts[shard_ids])
        w = self._gather(shard_ids, starts, seq_len + 1)
        return w[:, :-1], w[:, 1:]

    def num_eval_windows(self, seq_len: int) -> int:
        """Non-overlapping windows of ``seq_len`` inputs (+1 target) per shard, summed."""
        seq_len = _check_positive(seq_len, "seq_len")
        return int(np.maximum((self.lengths - 1) // seq_len, 0).sum())

    def num_eval_batches(self, batch_size: int, seq_len: int, drop_remainder: bool = True) -> int:
        n = self.num_eval_windows(seq_len)
        batch_size = _check_positive(batch_size, "batch_size")
        return n // batch_size if drop_remainder else -(-n // batch_size)

    def eval_batch(self, index: int, batch_size: int, seq_len: int) -> Batch:
        """Evaluation batch ``index``: windows ``index*B … index*B+B-1`` of the consecutive
        non-overlapping windows (window ``j`` of a shard starts at token ``j*T``). The last batch
        may be smaller (see :meth:`eval_batches`)."""
        batch_size = _check_positive(batch_size, "batch_size")
        per_shard = np.maximum((self.lengths - 1) // seq_len, 0)
        n = int(per_shard.sum())
        first = index * batch_size
        if not 0 <= first < n:
            raise IndexError(f"eval batch {index} out of range ({-(-n // batch_size)} batches)")
        w = np.arange(first, min(first + batch_size, n), dtype=np.int64)
        bounds = np.cumsum(per_shard)
        shard_ids = np.searchsorted(bounds, w, side="right")
        starts = (w - (bounds[shard_ids] - per_shard[shard_ids])) * seq_len
        out = self._gather(shard_ids, starts, seq_len + 1)
        return out[:, :-1], out[:, 1:]

    def eval_batches(
        self,
        batch_size: int,
        seq_len: int,
        *,
        max_batches: int | None = None,
        drop_remainder: bool = True,
    ) -> Iterator[Batch]:
        """Consecutive evaluation batches (deterministic, no randomness).

        ``drop_remainder=True`` (default) keeps only full batches, so each divides over devices.
        """
        n = self.num_eval_batches(batch_size, seq_len, drop_remainder)
        if max_batches is not None:
            n = min(n, max_batches)
        for i in range(n):
            yield self.eval_batch(i, batch_size, seq_len)


class SyntheticLMDataset:
    """Uniform random tokens in ``[0, vocab_size)``, generated from ``(seed, step)``; no storage.

    ``targets`` are ``inputs`` shifted by one inside a ``T + 1`` window, as for real data; the
    best achievable loss is ``log(vocab_size)``. Evaluation batch ``i`` is ``batch(2**63, i)``, the
    same for every run (no training seed below ``2**63`` sees it).
    """

    def __init__(self, vocab_size: int = 256, *, num_eval_batches: int = 4, name: str = "synthetic"):
        self.vocab_size = _check_positive(vocab_size, "vocab_size")
        self._num_eval_batches = _check_positive(num_eval_batches, "num_eval_batches")
        self.name = name
        self.meta = {"source": "synthetic", "vocab_size": self.vocab_size}

    def __repr__(self) -> str:
        return f"SyntheticLMDataset(vocab_size={self.vocab_size})"

    def batch(
        self,
        seed: int,
        step: int,
        batch_size: int,
        seq_len: int,
        *,
        shard_index: int = 0,
        num_shards: int = 1,
    ) -> Batch:
        batch_size = _check_positive(batch_size, "batch_size")
        seq_len = _check_positive(seq_len, "seq_len")
        rows = _local_rows(batch_size, shard_index, num_shards)
        w = philox_integers(self.vocab_size, seed, step, STREAM_SYNTHETIC,
                            batch_size * (seq_len + 1)).reshape(batch_size, seq_len + 1)
        w = w[rows].astype(np.int32)
        return w[:, :-1], w[:, 1:]

    def num_eval_batches(self, batch_size: int, seq_len: int, drop_remainder: bool = True) -> int:
        return self._num_eval_batches

    def eval_batch(self, index: int, batch_size: int, seq_len: int) -> Batch:
        if not 0 <= index < self._num_eval_batches:
            raise IndexError(f"eval batch {index} out of range ({self._num_eval_batches} batches)")
        return self.batch(2**63, index, batch_size, seq_len)

    def eval_batches(
        self, batch_size: int, seq_len: int, *, max_batches: int | None = None,
        drop_remainder: bool = True,
    ) -> Iterator[Batch]:
        n = self._num_eval_batches if max_batches is None else min(max_batches,
                                                                  self._num_eval_batches)
        for i in range(n):
            yield self.eval_batch(i, batch_size, seq_len)


class ClassificationDataset:
    """Examples + integer labels with ``(seed, step)``-deterministic shuffled batches.

    Training batch ``step`` holds the examples at positions ``step*B … step*B+B-1`` of the
    infinite sequence ``perm(seed, 0) ++ perm(seed, 1) ++ …`` (one Philox permutation per epoch),
    so every example appears once per epoch and a resumed run continues mid-epoch exactly.

    Args:
      inputs: ``[N, ...]`` array (e.g. uint8 images ``[N, 28, 28]``).
      labels: ``[N]`` integers.
      num_classes: defaults to ``labels.max() + 1``.
      scale: if given, inputs are returned as ``float32 * scale`` (``1/255`` for pixels in
        [0, 1]); otherwise as stored.
    """

    def __init__(
        self,
        inputs: np.ndarray,
        labels: np.ndarray,
        num_classes: int | None = None,
        *,
        scale: float | None = None,
    ):
        inputs, labels = np.asarray(inputs), np.asarray(labels)
        if labels.ndim != 1 or inputs.shape[:1] != labels.shape:
            raise ValueError(
                f"inputs [N, ...] and labels [N] must agree, got {inputs.shape} and {labels.shape}"
            )
        if labels.size == 0:
            raise ValueError("ClassificationDataset needs at least one example")
        if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
            raise ValueError("labels must be non-negative integers")
        self.num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
        if labels.max() >= self.num_classes:
            raise ValueError(f"label {labels.max()} >= num_classes={self.num_classes}")
        self.inputs, self.labels, self.scale = inputs, labels.astype(np.int32), scale

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def _take(self, idx: np.ndarray) -> Batch:
        x = self.inputs[idx]
        if self.scale is not None:
            x = x.astype(np.float32) * np.float32(self.scale)
        return x, self.labels[idx]

    def batch(
        self, seed: int, step: int, batch_size: int, *, shard_index: int = 0, num_shards: int = 1
    ) -> Batch:
        batch_size = _check_positive(batch_size, "batch_size")
        rows = _local_rows(batch_size, shard_index, num_shards)
        if step < 0:
            raise ValueError(f"step must be non-negative, got {step}")
        n = len(self)
        pos = int(step) * batch_size + np.arange(batch_size, dtype=np.int64)[rows]
        epochs = pos // n
        idx = np.empty_like(pos)
        for e in np.unique(epochs):
            sel = epochs == e
            idx[sel] = philox_permutation(n, seed, int(e), STREAM_EPOCH_PERMUTATION)[pos[sel] % n]
        return self._take(idx)

    def eval_batches(self, batch_size: int, *, drop_remainder: bool = False) -> Iterator[Batch]:
        """All examples in order, ``batch_size`` at a time (the last batch may be smaller)."""
        batch_size = _check_positive(batch_size, "batch_size")
        n = len(self)
        stop = n - n % batch_size if drop_remainder else n
        for i in range(0, stop, batch_size):
            yield self._take(np.arange(i, min(i + batch_size, n)))


def encode_for_source(tok: Tokenizer, text: str, source: str) -> np.ndarray:
    """``tok.encode(text)``; for word-level WikiText-2 with WordPiece, ``<unk>`` → ``[UNK]``.

    The word-level WikiText files replace rare words by the literal ``<unk>``; WordPiece would
    split it into ``<``, ``un``, ``##k``, ``>``. Mapping it to the vocabulary's ``[UNK]`` id makes
    the stream differ from the raw variant's (paper 001 App. K used ``wikitext-2-raw-v1``) only
    where a rare word was replaced.
    """
    from jaxspectra.data.tokenizer import WordPieceTokenizer

    if isinstance(tok, WordPieceTokenizer) and source in ("wikitext2", "wikitext-2"):
        return tok.encode(text, unk_marker="<unk>")
    return tok.encode(text)


def _shards_meta(paths: list[Path]) -> dict:
    """``meta.json`` written by :mod:`jaxspectra.data.prepare` beside the shards, if any."""
    for d in dict.fromkeys(p.parent for p in paths):
        m = d / "meta.json"
        if m.is_file():
            with open(m) as f:
                return json.load(f)
    return {}


def build_lm_dataset(
    source: str,
    data_dir: str | os.PathLike | None = None,
    tokenizer: str | Tokenizer = "byte",
    split: str = "train",
    *,
    val_fraction: float = 0.1,
    max_bytes: int | None = None,
    vocab_size: int | None = None,
    layout: str = "auto",
) -> LMDataset | SyntheticLMDataset:
    """An LM dataset by source name (tokenised in memory; use ``prepare`` for large corpora).

    Args:
      source: ``"default"`` (stdlib corpus, no data dir), ``"tinyshakespeare"``, ``"wikitext2"``
        (split ``train``/``valid``/``test``/``valid+test``; ``"wikitext2-raw"`` for ``wiki.*.raw``;
        with WordPiece, the word-level files' ``<unk>`` becomes ``[UNK]``: :func:`encode_for_source`),
        ``"pydocs"`` (Debian ``python3.11-doc``), ``"docs"`` (``<data_dir>/docs-corpus/``: the
        Linux and Python documentation, 39 MB, the largest real text offline), ``"shards:<glob>"`` (``.bin`` shards; a
        ``{split}`` in the glob is replaced by ``split``; relative globs are under ``data_dir``
        when given), or ``"synthetic"``.
      data_dir: the data directory (or ``$JAXSPECTRA_DATA_DIR``).
      tokenizer: a name for :func:`~jaxspectra.data.tokenizer.get_tokenizer` or an instance.
      split: see :func:`~jaxspectra.data.text.load_text`; ``"train"``/``"val"`` for shards.
      val_fraction: held-out tail for sources without an official split.
      max_bytes: cap on the default / pydocs corpus.
      vocab_size: synthetic vocabulary (default 256), or the shards' vocabulary when no
        ``meta.json`` lies beside them.
      layout: shard layout (``"auto"``, ``"nanogpt"``, ``"modded"``).
    """
    if source == "synthetic":
        return SyntheticLMDataset(256 if vocab_size is None else vocab_size)
    if source.startswith("shards:"):
        pattern = source.split(":", 1)[1].replace("{split}", split)
        if data_dir is not None and not os.path.isabs(os.path.expanduser(pattern)):
            pattern = str(Path(data_dir) / pattern)
        paths = find_shards(pattern)
        meta = _shards_meta(paths)
        vs = vocab_size if vocab_size is not None else meta.get("vocab_size")
        return LMDataset([read_shard(p, layout) for p in paths], vs,
                         name=f"shards:{pattern}",
                         meta={**meta, "source": source, "files": [str(p) for p in paths]})
    if source in ("tinyshakespeare", "wikitext2", "wikitext-2", "wikitext2-raw", "default",
                  "pydocs", "docs"):
        tok = get_tokenizer(tokenizer, data_dir)
        text = load_text(source, data_dir, split, val_fraction=val_fraction, max_bytes=max_bytes)
        ids = encode_for_source(tok, text, source)
        meta = {"source": source, "split": split, "tokenizer": tok.name,
                "vocab_size": tok.vocab_size, "text_sha256_16": corpus_fingerprint(text),
                "num_chars": len(text)}
        return LMDataset(ids, tok.vocab_size, name=f"{source}/{split}", meta=meta)
    raise ValueError(f"unknown LM source {source!r}; known: {', '.join(LM_SOURCES)}")
