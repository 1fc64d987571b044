"""One data setting for every command: ``--data-dir`` / ``$JAXSPECTRA_DATA_DIR`` through
``locate_dataset`` and ``data_dir_env``; a missing directory is one clear line from the CLI."""

from __future__ import annotations

import pytest

from jaxspectra import cli
from jaxspectra.data._paths import DATA_DIR_ENV, DataNotFoundError, data_dir_env, locate_dataset


@pytest.fixture
def fresh_clone(tmp_path, monkeypatch):
    """No data directory configured and no ../shared next to the working directory."""
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    work = tmp_path / "clone"
    work.mkdir()
    monkeypatch.chdir(work)
    assert not (work.parent / "shared").exists()
    return work


@pytest.fixture
def shakespeare_dir(tmp_path):
    root = tmp_path / "data"
    (root / "tinyshakespeare").mkdir(parents=True)
    (root / "tinyshakespeare" / "input.txt").write_text("First Citizen:\nBefore we proceed.\n")
    return root


def test_locate_dataset_order_and_errors(shakespeare_dir, monkeypatch, tmp_path):
    rel = "tinyshakespeare/input.txt"
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    assert locate_dataset(rel, shakespeare_dir) == shakespeare_dir / rel  # explicit
    with pytest.raises(DataNotFoundError, match=r"--data-dir.*JAXSPECTRA_DATA_DIR.*Offline"):
        locate_dataset(rel)  # nothing configured
    monkeypatch.setenv(DATA_DIR_ENV, str(shakespeare_dir))
    assert locate_dataset(rel) == shakespeare_dir / rel  # the variable
    empty = tmp_path / "empty"
    empty.mkdir()
    assert locate_dataset(rel, shakespeare_dir) == shakespeare_dir / rel
    with pytest.raises(DataNotFoundError, match=r"not in the data directory.*--data-dir"):
        locate_dataset(rel, empty)  # the explicit directory wins over the variable
    with pytest.raises(DataNotFoundError, match=r"does not exist.*--data-dir"):
        locate_dataset(rel, tmp_path / "missing")








def test_missing_data_dir_is_one_clear_line(fresh_clone, tmp_path, capsys):
    missing = tmp_path / "nowhere"
    rc = cli.main(["reproduce", "sosd_pretrain", "--preset", "smoke", "--data-dir", str(missing),
                   "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "--data-dir" in err[0] and "nowhere" in err[0]
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit, match="--data-dir") as e:  # full needs the real data
        cli.main(["reproduce", "sosd_pretrain", "--preset", "full", "--out", str(tmp_path / "o")])
    assert "\n" not in str(e.value.code)


def test_data_dir_env_sets_and_restores(shakespeare_dir, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, "/before")
    with data_dir_env(shakespeare_dir):
        import os

        assert os.environ[DATA_DIR_ENV] == str(shakespeare_dir.resolve())
        assert locate_dataset("tinyshakespeare/input.txt").parent.parent == shakespeare_dir.resolve()
    assert os.environ[DATA_DIR_ENV] == "/before"


