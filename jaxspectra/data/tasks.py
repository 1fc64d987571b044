"""Paper 001 App. K: WikiText-2 chunked into length-64 examples, two CLS-encoder tasks.

App. K's preprocessing: tokenise the split with the distilbert-base-uncased WordPiece tokenizer,
concatenate everything into one token sequence, cut it into non-overlapping chunks of ``L = 64``
(the final partial chunk dropped) — :func:`chunk_tokens`. Tasks on the ``[N, 64]`` chunks:

* ``"next_token"``: input the first 63 tokens, label the 64th (``V`` classes) —
  :func:`next_token_examples`.
* ``"bag_of_words"``: input all 64 tokens, label 1 iff the chunk contains the token ``"the"``
  (its id in the vocabulary) — :func:`contains_token_examples`.

The model prepends its learned [CLS] itself (positions 0..64), so chunks carry no special tokens.
Two choices App. K leaves open, made explicit here: whether the tokenizer added ``[CLS]``/``[SEP]``
per document (Hugging Face's default; ``per_line_specials=True`` reproduces that, one "document"
per line of the file), and the corpus: App. K used ``wikitext-2-raw-v1``'s train split; the shared
data has only the word-level valid/test files, so the default is ``split="valid+test"`` with
``<unk>`` mapped to ``[UNK]`` (:func:`~jaxspectra.data.datasets.encode_for_source`). Say so when
reporting.
"""

from __future__ import annotations

import os

import numpy as np

from jaxspectra.data.datasets import ClassificationDataset, encode_for_source
from jaxspectra.data.text import read_wikitext2
from jaxspectra.data.tokenizer import Tokenizer, WordPieceTokenizer, get_tokenizer

TASKS = ("next_token", "bag_of_words")


def chunk_tokens(tokens: np.ndarray, length: int = 64) -> np.ndarray:
    """Non-overlapping ``[N, length]`` chunks of a 1-D stream; the final partial chunk dropped."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be 1-D, got shape {tokens.shape}")
    if length <= 0:
        raise ValueError(f"length must be positive, got {length}")
    n = tokens.shape[0] // length
    if n == 0:
        raise ValueError(f"{tokens.shape[0]} tokens make no chunk of length {length}")
    return tokens[: n * length].reshape(n, length)


def next_token_examples(chunks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(chunks[:, :-1], chunks[:, -1])``: predict the last token from the others."""
    return chunks[:, :-1], chunks[:, -1]


def contains_token_examples(chunks: np.ndarray, token_id: int) -> tuple[np.ndarray, np.ndarray]:
    """``(chunks, 1[token_id in chunk])``."""
    return chunks, (chunks == token_id).any(axis=1).astype(np.int32)


def wikitext2_cls_dataset(
    task: str,
    data_dir: str | os.PathLike | None = None,
    *,
    split: str = "valid+test",
    tokenizer: str | Tokenizer = "wordpiece",
    length: int = 64,
    per_line_specials: bool = False,
    raw: bool = False,
) -> ClassificationDataset:
    """Paper 001's WikiText-2 task ``task`` as a :class:`ClassificationDataset` of int32 tokens.

    ``num_classes`` is the vocabulary size for ``"next_token"`` and 2 for ``"bag_of_words"``.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    tok = get_tokenizer(tokenizer, data_dir)
    text = read_wikitext2(data_dir, split, raw=raw)
    source = "wikitext2-raw" if raw else "wikitext2"
    if per_line_specials:
        if not isinstance(tok, WordPieceTokenizer):
            raise ValueError("per_line_specials needs a WordPiece tokenizer ([CLS]/[SEP])")
        marker = None if raw else "<unk>"
        ids = np.concatenate([tok.encode(line, add_special_tokens=True, unk_marker=marker)
                              for line in text.split("\n")])
    else:
        ids = encode_for_source(tok, text, source)
    chunks = chunk_tokens(ids.astype(np.int32), length)
    if task == "next_token":
        x, y = next_token_examples(chunks)
        return ClassificationDataset(x, y, num_classes=tok.vocab_size)
    if not isinstance(tok, WordPieceTokenizer):
        raise ValueError("bag_of_words looks up the token 'the': it needs a WordPiece tokenizer")
    x, y = contains_token_examples(chunks, tok.vocab["the"])
    return ClassificationDataset(x, y, num_classes=2)
