"""Paper 001 App. K tasks: chunking is a reshape with the tail dropped, labels recomputed in plain
Python from the vocabulary file, <unk> -> [UNK], one [CLS]/[SEP] pair per line when asked."""

import numpy as np
import pytest
from _data_shared import BERT_VOCAB, need

from jaxspectra.data import WordPieceTokenizer, build_lm_dataset, chunk_tokens
from jaxspectra.data.tasks import wikitext2_cls_dataset

LINES = [" = Valkyria Chronicles III = ", "", " The <unk> game was released in 2011 . ",
         " Senjō no Valkyria 3 : <unk> Chronicles is a tactical role @-@ playing video game . "]


@pytest.fixture(scope="module")
def tok():
    return WordPieceTokenizer.from_vocab(need(BERT_VOCAB), backend="python")


@pytest.fixture
def wt_dir(tmp_path):
    d = tmp_path / "wikitext-2"
    d.mkdir()
    (d / "valid.txt").write_text("\n".join(LINES * 3) + "\n")
    (d / "test.txt").write_text("\n".join(LINES[::-1] * 2) + "\n")
    return tmp_path


def test_chunk_tokens():
    t = np.arange(130)
    c = chunk_tokens(t, 64)
    assert c.shape == (2, 64) and (c.ravel() == t[:128]).all()
    with pytest.raises(ValueError, match="no chunk"):
        chunk_tokens(np.arange(10), 64)


def test_tasks_on_generated_wikitext(tok, wt_dir):
    vocab = need(BERT_VOCAB).read_text(encoding="utf-8").split("\n")
    the, unk = vocab.index("the"), vocab.index("[UNK]")
    lm = build_lm_dataset("wikitext2", wt_dir, tokenizer=tok, split="valid+test")
    stream = np.asarray(lm.shards[0])
    n_unk = sum(line.count("<unk>") for line in LINES) * 5
    assert (stream == unk).sum() == n_unk  # every <unk> is one [UNK], nothing else is
    L = 16
    nt = wikitext2_cls_dataset("next_token", wt_dir, tokenizer=tok, length=L)
    chunks = stream[: len(stream) // L * L].reshape(-1, L)
    np.testing.assert_array_equal(nt.inputs, chunks[:, :-1])
    np.testing.assert_array_equal(nt.labels, chunks[:, -1])
    assert nt.num_classes == 30522
    bow = wikitext2_cls_dataset("bag_of_words", wt_dir, tokenizer=tok, length=L)
    expected = [int(the in row) for row in chunks.tolist()]
    assert bow.labels.tolist() == expected and 0 < sum(expected) < len(expected)
    assert bow.num_classes == 2
    per_line = wikitext2_cls_dataset("bag_of_words", wt_dir, tokenizer=tok, length=1,
                                     per_line_specials=True).inputs.ravel()  # the whole stream
    text = "\n".join(LINES * 3) + "\n" + "\n".join(LINES[::-1] * 2) + "\n"
    n_lines = len(text.split("\n"))
    cls, sep = vocab.index("[CLS]"), vocab.index("[SEP]")
    assert (per_line == cls).sum() == (per_line == sep).sum() == n_lines
    assert per_line[0] == cls and per_line[-1] == sep
    np.testing.assert_array_equal(per_line[(per_line != cls) & (per_line != sep)], stream)
    with pytest.raises(ValueError, match="task"):
        wikitext2_cls_dataset("mlm", wt_dir, tokenizer=tok)
    with pytest.raises(ValueError, match="WordPiece"):
        wikitext2_cls_dataset("bag_of_words", wt_dir, tokenizer="byte")
