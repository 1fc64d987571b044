"""Tokenizers against independent ground truth: UTF-8 bytes, the vocab file's line numbers, the
published BERT examples, the ``tokenizers`` package vs the pure-Python transcription, and a
hand-built GPT-2-format BPE whose merges are worked out by hand."""

import json
import sys

import numpy as np
import pytest
from _data_shared import BERT_VOCAB, SHARED, need
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxspectra.data import (
    ByteTokenizer,
    DataNotFoundError,
    TiktokenTokenizer,
    Tokenizer,
    WordPieceTokenizer,
    get_tokenizer,
)


# ---------------------------------------------------------------------------------- bytes
@settings(max_examples=40, deadline=None)
@given(st.text())
def test_byte_roundtrip_is_utf8(s):
    tok = ByteTokenizer()
    ids = tok.encode(s)
    assert ids.dtype == np.int32
    assert ids.tolist() == list(s.encode("utf-8"))
    assert tok.decode(ids) == s


def test_byte_decode_rejects_out_of_range_and_replaces_cut_chars():
    tok = ByteTokenizer()
    with pytest.raises(ValueError, match=r"\[0, 256\)"):
        tok.decode([65, 256])
    assert tok.decode(tok.encode("é")[:1]) == "\ufffd"  # a window cut mid-character
    assert isinstance(tok, Tokenizer) and tok.vocab_size == 256 and tok.eot_id is None


# ---------------------------------------------------------------------------------- wordpiece
@pytest.fixture(scope="module")
def vocab_lines():
    with open(need(BERT_VOCAB), encoding="utf-8") as f:
        return [ln.rstrip("\n") for ln in f]


@pytest.fixture(scope="module")
def wp():
    pytest.importorskip("tokenizers")
    return WordPieceTokenizer.from_vocab(need(BERT_VOCAB))


@pytest.fixture(scope="module")
def wp_python():
    return WordPieceTokenizer.from_vocab(need(BERT_VOCAB), backend="python")


@pytest.mark.parametrize("backend", ["wp", "wp_python"])
def test_wordpiece_published_examples(backend, request, vocab_lines):
    tok = request.getfixturevalue(backend)
    assert tok.vocab_size == len(vocab_lines) == 30522
    # The BERT example everybody knows: [CLS] hello world [SEP] = 101 7592 2088 102.
    assert tok.encode("Hello World", add_special_tokens=True).tolist() == [101, 7592, 2088, 102]
    # Hugging Face's tokenizer summary (bert-base-uncased): "I have a new GPU!".
    pieces = tok.tokens("I have a new GPU!")
    assert pieces == ["i", "have", "a", "new", "gp", "##u", "!"]
    # ids are the 0-based line numbers of the vocabulary file
    assert tok.encode("I have a new GPU!").tolist() == [vocab_lines.index(p) for p in pieces]
    assert tok.eot_id == vocab_lines.index("[SEP]")


@pytest.mark.parametrize("backend", ["wp", "wp_python"])
def test_wordpiece_greedy_longest_match_from_the_vocab(backend, request, vocab_lines):
    """'unaffable' (BERT's README example): check the greedy rule directly on the vocab file."""
    wp = request.getfixturevalue(backend)
    vocab = set(vocab_lines)
    word = "unaffable"
    pieces = wp.tokens(word)
    assert "".join(p.removeprefix("##") for p in pieces) == word
    pos = 0
    for i, p in enumerate(pieces):
        assert p.startswith("##") == (i > 0) and p in vocab
        n = len(p.removeprefix("##"))
        for longer in range(pos + n + 1, len(word) + 1):  # no longer piece exists
            assert ("##" if i else "") + word[pos:longer] not in vocab
        pos += n
    assert pieces == ["una", "##ffa", "##ble"]  # what the rule gives with this vocabulary


def test_wordpiece_python_backend_equals_tokenizers_on_real_text(wp, wp_python):
    texts = [
        "Héllo wörld, naïve café! İstanbul straße 日本語テキスト 中文 ½ ﬁ Ⅻ \x00\x07\u200b tab\tend",
        "x" * 101 + " " + "a" * 100,  # over 100 chars -> [UNK]
        "don't stop--(really?) [yes] {no} 3.14 $5 #tag @user e.g. U.S.A.",
    ]
    for name in ("tinyshakespeare/input.txt", "wikitext-2/valid.txt"):
        if (SHARED / name).is_file():
            texts.append((SHARED / name).read_text(encoding="utf-8")[:60_000])
    for t in texts:
        a, b = wp.encode(t), wp_python.encode(t)
        np.testing.assert_array_equal(a, b)
    assert wp.tokens("x" * 101) == ["[UNK]"]
    assert wp.decode(wp.encode("Unaffable things, isn't it?")) == "unaffable things , isn ' t it ?"


def test_wordpiece_errors(tmp_path, monkeypatch):
    with pytest.raises(DataNotFoundError, match="tokenizer='byte'"):
        WordPieceTokenizer.from_vocab(tmp_path / "nope.txt")
    bad = tmp_path / "vocab.txt"
    bad.write_text("a\nb\n")
    with pytest.raises(ValueError, match=r"\[UNK\]"):
        WordPieceTokenizer.from_vocab(bad)
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # as if not installed
    with pytest.raises(ImportError, match="pip install tokenizers"):
        WordPieceTokenizer.from_vocab(need(BERT_VOCAB))
    with pytest.raises(ValueError, match="backend"):
        WordPieceTokenizer({"[UNK]": 0}, backend="rust")


def test_get_tokenizer(monkeypatch):
    assert isinstance(get_tokenizer("byte"), ByteTokenizer)
    with pytest.raises(ValueError, match="unknown tokenizer"):
        get_tokenizer("sentencepiece")
    monkeypatch.delenv("JAXSPECTRA_DATA_DIR", raising=False)
    with pytest.raises(DataNotFoundError, match="data_dir"):
        get_tokenizer("wordpiece")
    pytest.importorskip("tokenizers")
    tok = get_tokenizer("wordpiece", data_dir=need(SHARED / "tokenizers").parent)
    assert tok.vocab_size == 30522


# ---------------------------------------------------------------------------------- tiktoken
def test_tiktoken_missing_package_names_the_alternative(monkeypatch):
    monkeypatch.setitem(sys.modules, "tiktoken", None)
    with pytest.raises(ImportError, match=r"pip install tiktoken.*tokenizer='byte'"):
        get_tokenizer("gpt2")


def test_tiktoken_cache_miss_raises_and_never_downloads(tmp_path, monkeypatch):
    pytest.importorskip("tiktoken")
    import tiktoken.load

    calls = []
    original = tiktoken.load.read_file
    spy = lambda p: calls.append(p) or original(p)
    monkeypatch.setattr(tiktoken.load, "read_file", spy)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))  # an empty cache
    with pytest.raises(DataNotFoundError, match="never downloads"):
        TiktokenTokenizer.from_cache("gpt2")
    assert calls == []  # the remote read was intercepted before the original read_file
    assert tiktoken.load.read_file is spy  # the guard restored what it replaced
    assert list(tmp_path.iterdir()) == []


def _gpt2_byte_to_unicode():
    """GPT-2's bytes_to_unicode (the data-gym alphabet of vocab.bpe / encoder.json)."""
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}, bs


def test_tiktoken_from_gpt2_files_on_a_hand_made_bpe(tmp_path):
    pytest.importorskip("tiktoken")
    b2u, order = _gpt2_byte_to_unicode()
    # byte ranks: printable bytes first (33..126, 161..172, 174..255), then the rest
    encoder = {b2u[b]: r for r, b in enumerate(order)}
    merges = [("h", "e"), ("l", "l"), ("he", "ll")]
    for i, (a, b) in enumerate(merges):
        encoder[a + b] = 256 + i
    (tmp_path / "vocab.bpe").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    (tmp_path / "encoder.json").write_text(json.dumps(encoder), encoding="utf-8")
    tok = TiktokenTokenizer.from_gpt2_files(tmp_path / "vocab.bpe", tmp_path / "encoder.json")
    # "hello": h+e -> he (256), l+l -> ll (257), he+ll -> hell (258), then "o" = rank of byte 111
    assert tok.encode("hello").tolist() == [258, 111 - 33]
    assert tok.decode(tok.encode("hello hell")) == "hello hell"
    assert tok.vocab_size == 260 and tok.eot_id == 259
    with pytest.raises(DataNotFoundError, match="tokenizer='byte'"):
        TiktokenTokenizer.from_gpt2_files(tmp_path / "missing.bpe", tmp_path / "encoder.json")
