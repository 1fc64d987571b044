"""Text sources: the real shared files checked against the README's sha256/sizes, the embedded
default corpus checked against its definition (headers, sorted order, cap), split arithmetic,
and missing paths raising errors that name the alternative."""

import hashlib
import re

import pytest
from _data_shared import SHARED, need

from jaxspectra.data import (
    DataNotFoundError,
    load_text,
    read_default_corpus,
    read_python_docs,
    read_tinyshakespeare,
    read_wikitext2,
)
from jaxspectra.data import text as text_mod

CAP = 300_000


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_default_corpus_is_the_sorted_stdlib_sources_under_a_cap():
    read_default_corpus.cache_clear()
    a = read_default_corpus(CAP)
    read_default_corpus.cache_clear()
    assert read_default_corpus(CAP) == a  # deterministic
    assert 0 < len(a.encode("utf-8")) <= CAP
    headers = re.findall(r"^# file: (.+)$", a, flags=re.M)
    files = [h for h in headers if h.endswith(".py")]
    assert files and files == sorted(files) and a.startswith("# file: ")
    skip = {"test", "tests", "idle_test", "site-packages"}
    assert not any(skip & set(f.split("/")[:-1]) for f in files)
    # each file's text is the file itself, verbatim
    first = text_mod._stdlib_files()[0][1]
    body = a.split("\n", 1)[1]
    assert body.startswith(first.read_text(encoding="utf-8"))
    # a smaller cap gives a prefix made of whole files
    big = read_default_corpus(3 * CAP)
    assert len(big) > len(a) and big.startswith(a) and big[len(a):].startswith("# file: ")


def test_split_text_partitions_the_corpus():
    full = load_text("default", split="all", max_bytes=CAP)
    tr = load_text("default", split="train", max_bytes=CAP, val_fraction=0.25)
    va = load_text("default", split="val", max_bytes=CAP, val_fraction=0.25)
    assert tr + va == full and len(tr) == int(len(full) * 0.75)
    with pytest.raises(ValueError, match="val_fraction"):
        load_text("default", split="train", max_bytes=CAP, val_fraction=1.0)
    with pytest.raises(ValueError, match="split"):
        load_text("default", split="test", max_bytes=CAP)
    with pytest.raises(ValueError, match="unknown text source"):
        load_text("openwebtext")


def test_tinyshakespeare_real_file_matches_readme():
    path = need(SHARED / "tinyshakespeare" / "input.txt")
    assert _sha(path) == "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
    text = read_tinyshakespeare(SHARED)
    assert len(text) == 1_115_394 and text.startswith("First Citizen:")
    assert read_tinyshakespeare(path) == text  # the file itself is accepted too
    tr = load_text("tinyshakespeare", SHARED, "train")
    assert len(tr) == int(1_115_394 * 0.9)  # nanoGPT's shakespeare_char split


def test_wikitext2_real_splits_and_concatenation():
    valid = need(SHARED / "wikitext-2" / "valid.txt")
    assert _sha(valid) == "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8"
    v = read_wikitext2(SHARED, "valid")
    t = read_wikitext2(SHARED, "test")
    assert v == valid.read_text(encoding="utf-8") and read_wikitext2(SHARED, "val") == v
    assert read_wikitext2(SHARED, "valid+test") == v + t
    assert len((v + t).split()) > 450_000  # README: ~455k words
    with pytest.raises(DataNotFoundError, match="valid\\+test"):
        read_wikitext2(SHARED, "train")  # the train split is not in the shared directory
    with pytest.raises(ValueError, match="train/valid/test"):
        read_wikitext2(SHARED, "dev")


def test_wikitext2_official_and_raw_file_names(tmp_path):
    d = tmp_path / "wikitext-2-raw"
    d.mkdir()
    (d / "wiki.train.raw").write_text(" = A = \nRaw text.\n")
    (tmp_path / "wikitext-2").mkdir()
    (tmp_path / "wikitext-2" / "wiki.train.tokens").write_text(" = A = \n<unk> text .\n")
    assert read_wikitext2(tmp_path, "train", raw=True) == " = A = \nRaw text.\n"
    assert load_text("wikitext2-raw", tmp_path, "train") == " = A = \nRaw text.\n"
    assert read_wikitext2(tmp_path, "train") == " = A = \n<unk> text .\n"
    with pytest.raises(DataNotFoundError, match="raw=False"):
        read_wikitext2(tmp_path, "test", raw=True)


def test_missing_paths_name_the_alternative(tmp_path, monkeypatch):
    monkeypatch.delenv("JAXSPECTRA_DATA_DIR", raising=False)
    with pytest.raises(DataNotFoundError, match="source='default'"):
        read_tinyshakespeare()
    with pytest.raises(DataNotFoundError, match="does not exist.*source='default'"):
        read_tinyshakespeare(tmp_path / "nope")
    with pytest.raises(DataNotFoundError, match="tried.*source='default'"):
        read_tinyshakespeare(tmp_path)
    monkeypatch.setenv("JAXSPECTRA_DATA_DIR", str(tmp_path))
    (tmp_path / "tinyshakespeare").mkdir()
    (tmp_path / "tinyshakespeare" / "input.txt").write_text("To be.")
    assert read_tinyshakespeare() == "To be."  # found through the environment variable


def test_python_docs(tmp_path, monkeypatch):
    monkeypatch.setattr(text_mod, "PYDOCS_DIR", tmp_path / "none")
    monkeypatch.setattr(text_mod, "PYDOCS_FALLBACK_DIRS", ())
    with pytest.raises(DataNotFoundError, match="apt-get install python3.11-doc"):
        load_text("pydocs", split="all")
    (tmp_path / "docs" / "library").mkdir(parents=True)
    (tmp_path / "docs" / "library" / "os.rst.txt").write_text("os\n==\n")
    (tmp_path / "docs" / "about.rst.txt").write_text("About")
    got = read_python_docs(tmp_path / "docs")
    assert got == ".. file: about.rst.txt\nAbout\n.. file: library/os.rst.txt\nos\n==\n"
    with pytest.raises(DataNotFoundError, match="rst.txt"):
        read_python_docs(tmp_path / "none")


def test_python_docs_installed_corpus():
    root = need(text_mod.PYDOCS_DIR)
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.rst.txt"))
    got = read_python_docs(max_bytes=200_000)
    headers = re.findall(r"^\.\. file: (.+)$", got, flags=re.M)
    assert headers == files[: len(headers)] and len(got.encode()) <= 200_000
    if text_mod.PYDOCS_DIR.name == "_sources" and "python3.11" in str(root):
        assert len(files) == 497  # README: 497 *.rst.txt files in Debian's python3.11-doc


def test_docs_corpus_splits_each_file(tmp_path, monkeypatch):
    import gzip

    monkeypatch.delenv("JAXSPECTRA_DATA_DIR", raising=False)
    with pytest.raises(DataNotFoundError, match="--data-dir"):
        load_text("docs")
    (tmp_path / "docs-corpus").mkdir()
    with pytest.raises(DataNotFoundError, match="docs-corpus"):
        load_text("docs", tmp_path)
    with gzip.open(tmp_path / "docs-corpus" / "b.txt.gz", "wt") as f:
        f.write("0123456789")
    (tmp_path / "docs-corpus" / "a.txt").write_text("abcdefghij")
    assert load_text("docs", tmp_path, "all") == "abcdefghij0123456789"
    assert load_text("docs", tmp_path, "train", val_fraction=0.2) == "abcdefgh01234567"
    assert load_text("docs", tmp_path, "val", val_fraction=0.2) == "ij89"
    monkeypatch.setenv("JAXSPECTRA_DATA_DIR", str(tmp_path))
    assert load_text("docs", split="val", val_fraction=0.2, max_bytes=5) == "e4"


def test_docs_corpus_real_files():
    root = need(SHARED / "docs-corpus")
    got = load_text("docs", root.parent, "val", max_bytes=100_000)
    assert len(got) == 2 * 10_000 and "Linux" in load_text("docs", root.parent, "all",
                                                               max_bytes=100_000)
