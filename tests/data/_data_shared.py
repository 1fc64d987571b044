"""Where the real shared datasets are (``../shared/data`` beside the repo, or $JAXSPECTRA_DATA_DIR)."""

import os
from pathlib import Path

import pytest

SHARED = Path(
    os.environ.get("JAXSPECTRA_DATA_DIR") or Path(__file__).resolve().parents[3] / "shared" / "data"
)
BERT_VOCAB = SHARED / "tokenizers" / "bert-base-uncased-vocab.txt"


def need(path: Path) -> Path:
    """Skip the test when a real shared-data file is absent (CI without ../shared/data)."""
    if not path.exists():
        pytest.skip(f"shared data file {path} not present")
    return path
