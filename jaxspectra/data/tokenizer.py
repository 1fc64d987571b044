"""Tokenizers: bytes (offline default), BERT-uncased WordPiece, GPT-2 BPE via tiktoken.

Every tokenizer has ``name``, ``vocab_size``, ``eot_id`` (a document separator, or ``None``),
``encode(text) -> np.ndarray[int32]`` and ``decode(ids) -> str``. Token ids of all three fit in
``uint16`` (the shard format of :mod:`jaxspectra.data.shards`).

* :class:`ByteTokenizer`: UTF-8 bytes, vocabulary 256, no files, lossless.
* :class:`WordPieceTokenizer`: BERT-uncased WordPiece (``bert-base-uncased`` and
  ``distilbert-base-uncased`` share the vocabulary; paper 001's tokenizer). Backed by the
  ``tokenizers`` package's ``BertWordPieceTokenizer``; ``backend="python"`` is a slower pure-Python
  transcription of BERT's ``BasicTokenizer`` + ``WordpieceTokenizer`` that gives the same tokens
  (tested against ``tokenizers`` on real text).
* :class:`TiktokenTokenizer`: GPT-2 BPE through ``tiktoken``, only from files already on disk
  (tiktoken's cache, or ``vocab.bpe`` + ``encoder.json`` paths); it never downloads.

Example:
  >>> tok = ByteTokenizer()
  >>> ids = tok.encode("héllo")
  >>> ids.tolist()
  [104, 195, 169, 108, 108, 111]
  >>> tok.decode(ids)
  'héllo'
"""

from __future__ import annotations

import contextlib
import os
import unicodedata
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from jaxspectra.data._paths import DataNotFoundError, resolve_data_dir

BERT_VOCAB_RELPATH = "tokenizers/bert-base-uncased-vocab.txt"


@runtime_checkable
class Tokenizer(Protocol):
    """What the data pipeline needs from a tokenizer."""

    name: str
    vocab_size: int
    eot_id: int | None

    def encode(self, text: str) -> np.ndarray: ...

    def decode(self, ids: Sequence[int] | np.ndarray) -> str: ...


def _as_ids(ids: Sequence[int] | np.ndarray, vocab_size: int, who: str) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ValueError(f"{who}.decode expects a 1-D sequence of ids, got shape {arr.shape}")
    if arr.size and (not np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{who}.decode expects integer ids, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= vocab_size):
        raise ValueError(
            f"{who}.decode: ids must lie in [0, {vocab_size}), got range "
            f"[{arr.min()}, {arr.max()}]"
        )
    return arr


class ByteTokenizer:
    """UTF-8 byte-level tokenizer: id = byte value, vocabulary 256, no special tokens.

    Lossless on any text; ``decode`` replaces invalid UTF-8 (e.g. a window cut mid-character)
    with U+FFFD.
    """

    name = "byte"
    vocab_size = 256
    eot_id: int | None = None

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        arr = _as_ids(ids, 256, "ByteTokenizer")
        return arr.astype(np.uint8).tobytes().decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return "ByteTokenizer()"


# --------------------------------------------------------------------------------------------
# WordPiece (BERT uncased)
# --------------------------------------------------------------------------------------------


def read_wordpiece_vocab(path: str | os.PathLike) -> dict[str, int]:
    """Read a BERT ``vocab.txt`` (one token a line; the id is the 0-based line number)."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(
            f"WordPiece vocabulary {str(path)!r} not found. The BERT/distilbert uncased vocabulary "
            f"is shipped in the shared data directory as {BERT_VOCAB_RELPATH}; or use "
            "tokenizer='byte' (offline, no files)."
        )
    with open(path, encoding="utf-8") as f:
        tokens = [line.rstrip("\n").rstrip("\r") for line in f]
    if tokens and tokens[-1] == "":
        tokens.pop()
    vocab: dict[str, int] = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)
    for special in ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"):
        if special not in vocab:
            raise ValueError(f"{str(path)!r} is not a BERT WordPiece vocabulary: no {special!r}")
    return vocab


def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch).startswith("C")


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


def bert_basic_tokenize(text: str, lowercase: bool = True) -> list[str]:
    """BERT's ``BasicTokenizer``: clean, split CJK, lower-case + strip accents, split punctuation."""
    out = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or _is_control(ch):
            continue
        if _is_whitespace(ch):
            out.append(" ")
        elif _is_cjk(cp):
            out.append(f" {ch} ")
        else:
            out.append(ch)
    text = "".join(out)
    words: list[str] = []
    for word in text.split():
        if lowercase:
            word = unicodedata.normalize("NFD", word)
            word = "".join(c for c in word if unicodedata.category(c) != "Mn").lower()
        current: list[str] = []
        for ch in word:
            if _is_punctuation(ch):
                if current:
                    words.append("".join(current))
                    current = []
                words.append(ch)
            else:
                current.append(ch)
        if current:
            words.append("".join(current))
    return words


def wordpiece_split(
    word: str, vocab: dict[str, int], unk: str = "[UNK]", max_chars: int = 100
) -> list[str]:
    """Greedy longest-match-first WordPiece of one pre-tokenised word (``##`` continuations)."""
    if len(word) > max_chars:
        return [unk]
    pieces = []
    start = 0
    while start < len(word):
        end = len(word)
        piece = None
        while start < end:
            sub = word[start:end] if start == 0 else "##" + word[start:end]
            if sub in vocab:
                piece = sub
                break
            end -= 1
        if piece is None:
            return [unk]
        pieces.append(piece)
        start = end
    return pieces


class WordPieceTokenizer:
    """BERT-uncased WordPiece tokenizer from a ``vocab.txt``.

    Use :meth:`from_vocab`. ``encode(text)`` returns the ids without ``[CLS]``/``[SEP]`` (an LM
    token stream); ``encode(text, add_special_tokens=True)`` wraps them as BERT does. ``eot_id``
    is ``[SEP]`` (the document separator when streams are concatenated).

    Example (the ``vocab.txt`` of ``bert-base-uncased``):
      >>> tok = WordPieceTokenizer.from_vocab(vocab_path)  # doctest: +SKIP
      >>> tok.tokens("Unaffable!")  # doctest: +SKIP
      ['un', '##aff', '##able', '!']
    """

    def __init__(
        self,
        vocab: dict[str, int],
        *,
        lowercase: bool = True,
        backend: str = "tokenizers",
        vocab_path: str | None = None,
    ):
        if backend not in ("tokenizers", "python"):
            raise ValueError(f"backend must be 'tokenizers' or 'python', got {backend!r}")
        self.vocab = vocab
        self.inv_vocab = {i: t for t, i in vocab.items()}
        self.lowercase = lowercase
        self.backend = backend
        self.vocab_path = vocab_path
        self.name = "wordpiece"
        self.vocab_size = max(vocab.values()) + 1
        self.unk_id = vocab["[UNK]"]
        self.cls_id = vocab["[CLS]"]
        self.sep_id = vocab["[SEP]"]
        self.pad_id = vocab["[PAD]"]
        self.eot_id: int | None = self.sep_id
        self._hf: Any = None
        if backend == "tokenizers":
            try:
                from tokenizers import BertWordPieceTokenizer
            except ImportError as e:  # pragma: no cover - depends on the environment
                raise ImportError(
                    "WordPieceTokenizer needs the 'tokenizers' package: pip install tokenizers "
                    "(or pass backend='python' for the slower pure-Python implementation, which "
                    "gives the same tokens)."
                ) from e
            self._hf = BertWordPieceTokenizer(
                vocab,
                unk_token="[UNK]",
                sep_token="[SEP]",
                cls_token="[CLS]",
                pad_token="[PAD]",
                mask_token="[MASK]",
                clean_text=True,
                handle_chinese_chars=True,
                strip_accents=None,
                lowercase=lowercase,
                wordpieces_prefix="##",
            )

    @classmethod
    def from_vocab(
        cls, path: str | os.PathLike, *, lowercase: bool = True, backend: str = "tokenizers"
    ) -> WordPieceTokenizer:
        """Build from a BERT ``vocab.txt`` (e.g. ``bert-base-uncased-vocab.txt``)."""
        return cls(read_wordpiece_vocab(path), lowercase=lowercase, backend=backend,
                   vocab_path=str(path))

    def tokens(self, text: str) -> list[str]:
        """The WordPiece strings of ``text`` (no specials)."""
        if self._hf is not None:
            return list(self._hf.encode(text, add_special_tokens=False).tokens)
        out: list[str] = []
        for word in bert_basic_tokenize(text, self.lowercase):
            out.extend(wordpiece_split(word, self.vocab))
        return out

    def encode(
        self, text: str, add_special_tokens: bool = False, unk_marker: str | None = None
    ) -> np.ndarray:
        """Token ids of ``text``.

        Args:
          text: any text.
          add_special_tokens: wrap as ``[CLS] … [SEP]``.
          unk_marker: a literal (e.g. WikiText's ``"<unk>"``) that becomes one ``[UNK]`` id
            instead of being tokenised as text (``<``, ``un``, ``##k``, ``>``).
        """
        # Lines (and text between markers) are independent under BERT's whitespace and
        # punctuation pre-tokenisation (a marker made of punctuation/letters stays separate):
        # encode the pieces in one batch and put [UNK] between marker-separated pieces.
        pieces: list[str] = []
        unk_after: list[bool] = []
        for line in text.split("\n"):
            parts = line.split(unk_marker) if unk_marker else [line]
            for j, part in enumerate(parts):
                pieces.append(part)
                unk_after.append(j < len(parts) - 1)
        if self._hf is not None:
            encs = self._hf.encode_batch(pieces, add_special_tokens=False)
            encoded = [e.ids for e in encs]
        else:
            encoded = [[self.vocab[t] for t in self.tokens(p)] for p in pieces]
        out: list[int] = []
        for ids_, unk in zip(encoded, unk_after):
            out.extend(ids_)
            if unk:
                out.append(self.unk_id)
        ids = np.asarray(out, dtype=np.int32)
        if add_special_tokens:
            ids = np.concatenate([[self.cls_id], ids, [self.sep_id]]).astype(np.int32)
        return ids

    def decode(self, ids: Sequence[int] | np.ndarray, skip_special_tokens: bool = True) -> str:
        """Join pieces (``##`` glued to the previous one); lossy (lower-cased, spacing)."""
        arr = _as_ids(ids, self.vocab_size, "WordPieceTokenizer")
        specials = {self.cls_id, self.sep_id, self.pad_id, self.vocab["[MASK]"]}
        words: list[str] = []
        for i in arr.tolist():
            if skip_special_tokens and i in specials:
                continue
            t = self.inv_vocab.get(i, "[UNK]")
            if t.startswith("##") and words:
                words[-1] += t[2:]
            else:
                words.append(t)
        return " ".join(words)

    def __repr__(self) -> str:
        return f"WordPieceTokenizer(vocab_size={self.vocab_size}, backend={self.backend!r})"


# --------------------------------------------------------------------------------------------
# GPT-2 BPE (tiktoken)
# --------------------------------------------------------------------------------------------

_TIKTOKEN_MISSING = (
    "GPT-2 BPE needs the 'tiktoken' package (pip install tiktoken) and its encoding files already "
    "on disk. Offline alternative: tokenizer='byte' (UTF-8 bytes, vocabulary 256)."
)


def _import_tiktoken() -> Any:
    try:
        import tiktoken
        import tiktoken.load
    except ImportError as e:
        raise ImportError(_TIKTOKEN_MISSING) from e
    return tiktoken


@contextlib.contextmanager
def _tiktoken_offline(tiktoken: Any, encoding: str) -> Iterator[None]:
    """Make tiktoken read only local files/cache: a cache miss raises instead of downloading."""
    load = tiktoken.load
    if not hasattr(load, "read_file"):  # pragma: no cover - other tiktoken layouts
        raise RuntimeError(
            "this tiktoken version cannot be guarded against downloads; load the GPT-2 files "
            "with TiktokenTokenizer.from_gpt2_files(vocab_bpe, encoder_json) instead"
        )
    original = load.read_file

    def offline_read(blobpath: str) -> bytes:
        if "://" in blobpath:
            cache = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
            raise DataNotFoundError(
                f"tiktoken encoding {encoding!r} is not cached locally (it would download "
                f"{blobpath}; jaxspectra never downloads). Cache dir: "
                f"{cache or 'tiktoken default (~/.cache/tiktoken or $TIKTOKEN_CACHE_DIR)'}. "
                "Copy the cached files there, or use TiktokenTokenizer.from_gpt2_files(vocab.bpe, "
                "encoder.json), or the offline tokenizer='byte'."
            )
        return original(blobpath)

    load.read_file = offline_read
    try:
        yield
    finally:
        load.read_file = original


class TiktokenTokenizer:
    """GPT-2 BPE (or another tiktoken encoding) from files already on disk; never downloads.

    ``eot_id`` is ``<|endoftext|>`` (50256 for GPT-2); ``encode`` treats that string in the text
    as ordinary text (``disallowed_special=()``), as nanoGPT's ``encode_ordinary`` does.
    """

    def __init__(self, encoding: Any):
        self._enc = encoding
        self.name = f"tiktoken:{encoding.name}"
        self.vocab_size = int(encoding.n_vocab)
        self.eot_id: int | None = getattr(encoding, "eot_token", None)

    @classmethod
    def from_cache(cls, encoding: str = "gpt2") -> TiktokenTokenizer:
        """Load a named tiktoken encoding from tiktoken's local cache (no network)."""
        tiktoken = _import_tiktoken()
        with _tiktoken_offline(tiktoken, encoding):
            enc = tiktoken.get_encoding(encoding)
        return cls(enc)

    @classmethod
    def from_gpt2_files(
        cls, vocab_bpe: str | os.PathLike, encoder_json: str | os.PathLike, name: str = "gpt2"
    ) -> TiktokenTokenizer:
        """GPT-2 BPE from OpenAI's ``vocab.bpe`` + ``encoder.json`` (as nanoGPT ships them)."""
        tiktoken = _import_tiktoken()
        for p in (vocab_bpe, encoder_json):
            if not Path(p).is_file():
                raise DataNotFoundError(
                    f"GPT-2 BPE file {str(p)!r} not found. Offline alternative: tokenizer='byte'."
                )
        with _tiktoken_offline(tiktoken, name):
            ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(
                vocab_bpe_file=str(vocab_bpe), encoder_json_file=str(encoder_json)
            )
        n = len(ranks)
        enc = tiktoken.Encoding(
            name=name,
            pat_str=r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
            mergeable_ranks=ranks,
            special_tokens={"<|endoftext|>": n},
        )
        return cls(enc)

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._enc.encode(text, disallowed_special=()), dtype=np.int32)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        arr = _as_ids(ids, self.vocab_size, "TiktokenTokenizer")
        return self._enc.decode(arr.tolist())

    def __repr__(self) -> str:
        return f"TiktokenTokenizer({self._enc.name!r}, vocab_size={self.vocab_size})"


# --------------------------------------------------------------------------------------------
# by name
# --------------------------------------------------------------------------------------------

TOKENIZER_NAMES = ("byte", "wordpiece", "wordpiece:<vocab.txt>", "gpt2", "tiktoken:<encoding>")


def get_tokenizer(spec: str | Tokenizer, data_dir: str | os.PathLike | None = None) -> Tokenizer:
    """A tokenizer by name.

    ``"byte"``; ``"wordpiece"`` (the BERT-uncased vocabulary at
    ``<data_dir>/tokenizers/bert-base-uncased-vocab.txt``) or ``"wordpiece:<path to vocab.txt>"``;
    ``"gpt2"`` / ``"tiktoken:<encoding>"`` (tiktoken's local cache). A :class:`Tokenizer` instance
    is returned unchanged.
    """
    if not isinstance(spec, str):
        if isinstance(spec, Tokenizer):
            return spec
        raise TypeError(f"tokenizer must be a name or a Tokenizer, got {type(spec).__name__}")
    if spec == "byte":
        return ByteTokenizer()
    if spec == "wordpiece":
        root = resolve_data_dir(
            data_dir,
            "tokenizer='wordpiece' (the BERT-uncased vocabulary)",
            "tokenizer='wordpiece:<path to vocab.txt>', or tokenizer='byte' (offline, no files)",
        )
        return WordPieceTokenizer.from_vocab(root / BERT_VOCAB_RELPATH)
    if spec.startswith("wordpiece:"):
        return WordPieceTokenizer.from_vocab(spec.split(":", 1)[1])
    if spec == "gpt2":
        return TiktokenTokenizer.from_cache("gpt2")
    if spec.startswith("tiktoken:"):
        return TiktokenTokenizer.from_cache(spec.split(":", 1)[1])
    raise ValueError(f"unknown tokenizer {spec!r}; known: {', '.join(TOKENIZER_NAMES)}")
