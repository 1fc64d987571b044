"""Data pipelines: tokenizers, token shards, text/MNIST loaders, deterministic datasets.

Nothing here downloads. Datasets are read from a data directory (``data_dir=`` / ``--data-dir`` /
``$JAXSPECTRA_DATA_DIR``); a missing file raises :class:`DataNotFoundError` naming the offline
alternative. The ``default`` LM source (the Python standard library's sources) and ``synthetic``
need no data directory.

Modules: :mod:`~jaxspectra.data.tokenizer` (byte, WordPiece, tiktoken),
:mod:`~jaxspectra.data.shards` (``.bin`` shards), :mod:`~jaxspectra.data.text` (text sources),
:mod:`~jaxspectra.data.mnist` (idx/npz), :mod:`~jaxspectra.data.datasets` (``LMDataset``,
``ClassificationDataset``, ``build_lm_dataset``), :mod:`~jaxspectra.data.tasks` (paper 001's
WikiText-2 CLS tasks), :mod:`~jaxspectra.data.prepare` (CLI).

Example:
  >>> from jaxspectra.data import build_lm_dataset
  >>> ds = build_lm_dataset("default", max_bytes=200_000)      # no data directory needed
  >>> x, y = ds.batch(seed=0, step=0, batch_size=2, seq_len=16)
  >>> x.shape, ds.vocab_size
  ((2, 16), 256)
"""

from jaxspectra.data._paths import DATA_DIR_ENV, DataNotFoundError
from jaxspectra.data.datasets import (
    LM_SOURCES,
    ClassificationDataset,
    LMDataset,
    SyntheticLMDataset,
    build_lm_dataset,
)
from jaxspectra.data.mnist import (
    IdxFormatError,
    load_mnist,
    read_idx,
    train_heldout_split,
    write_idx,
)
from jaxspectra.data.shards import (
    MODDED_MAGIC,
    ShardFormatError,
    find_shards,
    read_shard,
    shard_info,
    write_shard,
)
from jaxspectra.data.tasks import chunk_tokens, wikitext2_cls_dataset
from jaxspectra.data.text import (
    corpus_fingerprint,
    load_text,
    read_default_corpus,
    read_python_docs,
    read_tinyshakespeare,
    read_wikitext2,
)
from jaxspectra.data.tokenizer import (
    ByteTokenizer,
    TiktokenTokenizer,
    Tokenizer,
    WordPieceTokenizer,
    get_tokenizer,
)

__all__ = [
    "DATA_DIR_ENV",
    "LM_SOURCES",
    "MODDED_MAGIC",
    "ByteTokenizer",
    "ClassificationDataset",
    "DataNotFoundError",
    "IdxFormatError",
    "LMDataset",
    "ShardFormatError",
    "SyntheticLMDataset",
    "TiktokenTokenizer",
    "Tokenizer",
    "WordPieceTokenizer",
    "build_lm_dataset",
    "chunk_tokens",
    "corpus_fingerprint",
    "find_shards",
    "get_tokenizer",
    "load_mnist",
    "load_text",
    "read_default_corpus",
    "read_idx",
    "read_python_docs",
    "read_shard",
    "read_tinyshakespeare",
    "read_wikitext2",
    "shard_info",
    "train_heldout_split",
    "wikitext2_cls_dataset",
    "write_idx",
    "write_shard",
]
