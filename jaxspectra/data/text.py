"""Text sources: WikiText-2, tiny shakespeare, the embedded default corpus, the Python docs.

Each reader returns one ``str``; :func:`load_text` picks a source and a split by name.

Splits:

* ``docs`` (the largest real English text offline: ``<data_dir>/docs-corpus/*.txt.gz``, the Linux
  and Python documentation sources, 39 MB) has no official split either; each file is split
  separately (its first ``1 - val_fraction`` to ``"train"``, its tail to ``"val"``) so both splits
  hold both documents.
* ``tinyshakespeare``, ``default``, ``pydocs`` have no official split: ``"train"`` is the first
  ``1 - val_fraction`` of the characters, ``"val"`` the rest (nanoGPT's ``shakespeare_char``
  split, 0.9/0.1), ``"all"`` everything.
* ``wikitext2`` has files per split: ``"train"``, ``"valid"`` (alias ``"val"``), ``"test"``, joined
  with ``+`` to concatenate (``"valid+test"``: the substitute for the train split where only
  valid/test exist, as in ``../shared/data/``). Word-level files are ``train.txt`` /
  ``valid.txt`` / ``test.txt`` (pytorch/examples) or ``wiki.<split>.tokens`` (the official
  archive); ``raw=True`` reads ``wiki.<split>.raw``.

The **default corpus** (:func:`read_default_corpus`) is the running Python's standard-library
``.py`` sources (no ``test``/``tests``/``idle_test``/``site-packages`` directories), whole files in
sorted relative-path order, each preceded by a ``# file: <relative path>`` line, up to
``max_bytes`` of UTF-8. It exists on every machine with no data directory. Its exact content
depends on the Python version: record :func:`corpus_fingerprint` with results.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
import sysconfig
from pathlib import Path

from jaxspectra.data._paths import (
    LM_ALTERNATIVE,
    DataNotFoundError,
    first_existing,
    resolve_data_dir,
)

DEFAULT_CORPUS_BYTES = 8 * 2**20
PYDOCS_DIR = Path(f"/usr/share/doc/python3.{sys.version_info.minor}/html/_sources")
PYDOCS_FALLBACK_DIRS = (Path("/usr/share/doc/python3.11/html/_sources"),)
_SKIP_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__", "test", "tests",
                        "idle_test"})
TEXT_SOURCES = ("default", "tinyshakespeare", "wikitext2", "pydocs", "docs")
#: ``<data_dir>/docs-corpus/``: the Linux 6.12 and Python 3.11 documentation sources (39 MB).
DOCS_CORPUS_DIR = "docs-corpus"
_WT_SPLITS = {"train": "train", "valid": "valid", "val": "valid", "validation": "valid",
              "test": "test"}


def corpus_fingerprint(text: str) -> str:
    """First 16 hex digits of the SHA-256 of the UTF-8 text (to record what a run trained on)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def split_text(text: str, split: str, val_fraction: float = 0.1) -> str:
    """``"train"``: the first ``1 - val_fraction`` of the characters; ``"val"``: the rest."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    cut = int(len(text) * (1.0 - val_fraction))
    if split == "train":
        return text[:cut]
    if split in ("val", "valid", "validation"):
        return text[cut:]
    if split == "all":
        return text
    raise ValueError(f"split must be 'train', 'val' or 'all' for this source, got {split!r}")


def _read(path: Path) -> str:
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        return f.read()


def read_tinyshakespeare(data_dir: str | os.PathLike | None = None) -> str:
    """Karpathy's tiny shakespeare (``<data_dir>/tinyshakespeare/input.txt``; 1,115,394 chars)."""
    alt = f"Alternative: {LM_ALTERNATIVE}"
    root = resolve_data_dir(data_dir, "tiny shakespeare", LM_ALTERNATIVE)
    if root.is_file():
        return _read(root)
    path = first_existing(
        [root / "tinyshakespeare" / "input.txt", root / "shakespeare_char" / "input.txt",
         root / "shakespeare" / "input.txt", root / "input.txt"],
        "tiny shakespeare (input.txt)", alt)
    return _read(path)


def _wikitext_dirs(root: Path, raw: bool) -> list[Path]:
    names = (["wikitext-2-raw", "wikitext-2-raw-v1", "wikitext-2"] if raw
             else ["wikitext-2", "wikitext-2-v1"])
    return [root / n for n in names] + [root]


def read_wikitext2(
    data_dir: str | os.PathLike | None = None, split: str = "train", raw: bool = False
) -> str:
    """WikiText-2 (word-level ``<unk>`` files, or ``raw=True`` for ``wiki.*.raw``).

    ``split`` is ``train``/``valid``/``val``/``test`` or several joined by ``+`` (concatenated in
    the order given).
    """
    parts = [s.strip() for s in split.split("+")]
    bad = [s for s in parts if s not in _WT_SPLITS]
    if bad or not parts:
        raise ValueError(
            f"WikiText-2 split must be train/valid/test (or 'a+b' to concatenate), got {split!r}"
        )
    root = resolve_data_dir(data_dir, "WikiText-2", LM_ALTERNATIVE)
    texts = []
    for part in parts:
        name = _WT_SPLITS[part]
        files = [f"wiki.{name}.raw"] if raw else [f"{name}.txt", f"wiki.{name}.tokens"]
        candidates = [d / f for d in _wikitext_dirs(root, raw) for f in files]
        hint = f"Alternative: {LM_ALTERNATIVE}"
        if name == "train":
            hint = (
                "Where only the valid/test files exist (as in the shared data directory), train "
                f"on split='valid+test' and say so in the report; or {LM_ALTERNATIVE}"
            )
        elif raw:
            hint = f"The word-level files (raw=False) may be there instead; or {LM_ALTERNATIVE}"
        texts.append(_read(first_existing(candidates, f"WikiText-2 {name} split", hint)))
    return "".join(texts)


def _stdlib_files() -> list[tuple[str, Path]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
        for f in filenames:
            if f.endswith(".py"):
                p = Path(dirpath) / f
                files.append((p.relative_to(root).as_posix(), p))
    files.sort()
    return files


@functools.lru_cache(maxsize=4)
def read_default_corpus(max_bytes: int = DEFAULT_CORPUS_BYTES) -> str:
    """The embedded default corpus: the standard library's ``.py`` files (see module docstring).

    Whole files are added in sorted order while the total stays within ``max_bytes`` UTF-8 bytes
    (the first file is always included, truncated at a character boundary if it alone is larger).
    """
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    chunks: list[str] = []
    total = 0
    for rel, path in _stdlib_files():
        text = f"# file: {rel}\n" + _read(path)
        if not text.endswith("\n"):
            text += "\n"
        n = len(text.encode("utf-8"))
        if total + n > max_bytes:
            if not chunks:
                chunks.append(text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore"))
            break
        chunks.append(text)
        total += n
    if not chunks:  # pragma: no cover - a Python without its sources
        raise DataNotFoundError(
            "the Python standard library sources were not found (a stripped Python?); use "
            "source='synthetic' or a data directory"
        )
    return "".join(chunks)


def read_python_docs(
    root: str | os.PathLike | None = None, max_bytes: int | None = None
) -> str:
    """The Python documentation's reStructuredText sources (Debian's ``python3.X-doc``).

    Reads ``**/*.rst.txt`` under ``root`` (default ``/usr/share/doc/python3.X/html/_sources``) in
    sorted order, each preceded by a ``.. file: <relative path>`` line, up to ``max_bytes``.
    """
    if root is None:
        for candidate in (PYDOCS_DIR, *PYDOCS_FALLBACK_DIRS):
            if candidate.is_dir():
                root = candidate
                break
        else:
            raise DataNotFoundError(
                f"the Python documentation sources are not installed (looked in {str(PYDOCS_DIR)!r}"
                "). Install them with `apt-get install python3.11-doc` (Debian/Ubuntu; about 11 MB "
                f"of English prose), or use {LM_ALTERNATIVE}."
            )
    root = Path(root)
    files = sorted(root.rglob("*.rst.txt")) if root.is_dir() else []
    if not files:
        raise DataNotFoundError(
            f"no *.rst.txt files under {str(root)!r}. Install `python3.11-doc`, or use "
            f"{LM_ALTERNATIVE}."
        )
    chunks, total = [], 0
    for p in files:
        text = f".. file: {p.relative_to(root).as_posix()}\n" + _read(p)
        if not text.endswith("\n"):
            text += "\n"
        n = len(text.encode("utf-8"))
        if max_bytes is not None and total + n > max_bytes and chunks:
            break
        chunks.append(text)
        total += n
    return "".join(chunks)


def read_docs_corpus(
    data_dir: str | os.PathLike | None = None, split: str = "all", val_fraction: float = 0.1,
    max_bytes: int | None = None,
) -> str:
    """The documentation corpus: every ``*.txt`` / ``*.txt.gz`` under ``<data_dir>/docs-corpus/``.

    Files are read in sorted name order; each is split on its own (:func:`split_text`) and the
    pieces concatenated, so ``"train"`` and ``"val"`` both sample every document. ``max_bytes``
    caps each file's text before the split (for quick runs).
    """
    import gzip

    root = resolve_data_dir(data_dir, "the docs corpus", LM_ALTERNATIVE) / DOCS_CORPUS_DIR
    files = sorted([*root.glob("*.txt"), *root.glob("*.txt.gz")]) if root.is_dir() else []
    if not files:
        raise DataNotFoundError(
            f"no *.txt or *.txt.gz files under {str(root)!r} (the docs corpus is "
            f"`{DOCS_CORPUS_DIR}/` in the shared data directory). Alternative: {LM_ALTERNATIVE}."
        )
    parts = []
    for f in files:
        if f.suffix == ".gz":
            with gzip.open(f, "rt", encoding="utf-8", errors="replace") as fh:
                text = fh.read(max_bytes) if max_bytes is not None else fh.read()
        else:
            text = _read(f)[:max_bytes]
        parts.append(split_text(text, split, val_fraction))
    return "".join(parts)


def load_text(
    source: str,
    data_dir: str | os.PathLike | None = None,
    split: str = "train",
    *,
    val_fraction: float = 0.1,
    max_bytes: int | None = None,
    raw: bool = False,
) -> str:
    """The text of ``source`` (one of :data:`TEXT_SOURCES`) for ``split`` (module docstring)."""
    if source == "default":
        text = read_default_corpus(DEFAULT_CORPUS_BYTES if max_bytes is None else max_bytes)
        return split_text(text, split, val_fraction)
    if source == "tinyshakespeare":
        return split_text(read_tinyshakespeare(data_dir), split, val_fraction)
    if source == "pydocs":
        # The installed location (data_dir is not used: call read_python_docs(root) for others).
        return split_text(read_python_docs(None, max_bytes), split, val_fraction)
    if source == "docs":
        return read_docs_corpus(data_dir, split, val_fraction, max_bytes)
    if source in ("wikitext2", "wikitext-2", "wikitext2-raw"):
        return read_wikitext2(data_dir, split, raw=raw or source.endswith("-raw"))
    raise ValueError(f"unknown text source {source!r}; known: {', '.join(TEXT_SOURCES)}")
