"""Where sosd_short_run's data comes from: ``--data-dir`` / ``$JAXSPECTRA_DATA_DIR`` through
``locate_dataset``, and the smoke preset's fallback on a fresh clone (no ../shared, no variable)."""

from __future__ import annotations

import json

import pytest

from jaxspectra import cli
from jaxspectra.data._paths import DATA_DIR_ENV, DataNotFoundError, data_dir_env, locate_dataset
from jaxspectra.experiments import sosd_short_run as ssr


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


def test_module_keeps_no_repo_relative_data_path():
    assert not hasattr(ssr, "DATA_DIR")


def test_smoke_falls_back_full_refuses_on_a_fresh_clone(fresh_clone):
    data, note = ssr.data_section("smoke")
    assert data["source"] == "default" and "fallback" in note and "--data-dir" in note
    with pytest.raises(DataNotFoundError, match="--data-dir"):
        ssr.data_section("full")


def test_configured_directory_is_used_and_never_silently_replaced(shakespeare_dir, tmp_path,
                                                                  monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(shakespeare_dir))
    data, note = ssr.data_section("full")
    assert data == {"source": "tinyshakespeare", "data_dir": str(shakespeare_dir)}
    assert "tiny Shakespeare" in note
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(DATA_DIR_ENV, str(empty))  # configured but without the file: an error
    with pytest.raises(DataNotFoundError, match="tinyshakespeare/input.txt"):
        ssr.data_section("smoke")


def test_missing_data_dir_is_one_clear_line(fresh_clone, tmp_path, capsys):
    missing = tmp_path / "nowhere"
    rc = cli.main(["reproduce", "sosd_short_run", "--preset", "smoke", "--data-dir", str(missing),
                   "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "--data-dir" in err[0] and "nowhere" in err[0]
    assert not (tmp_path / "out").exists()
    rc = cli.main(["reproduce", "sosd_short_run", "--preset", "full", "--out",
                   str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--data-dir" in err[0]


def test_data_dir_env_sets_and_restores(shakespeare_dir, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, "/before")
    with data_dir_env(shakespeare_dir):
        import os

        assert os.environ[DATA_DIR_ENV] == str(shakespeare_dir.resolve())
        assert ssr.data_section("full")[0]["source"] == "tinyshakespeare"
    assert os.environ[DATA_DIR_ENV] == "/before"


@pytest.mark.slow
def test_smoke_entry_runs_on_fallback_data_and_says_so(fresh_clone, tmp_path):
    """The smoke entry itself (shortened) on a fresh clone: trains on the embedded corpus and its
    report and summary name the fallback."""
    out = tmp_path / "out"
    res = ssr.run("smoke", out, {"steps": 60, "every": 5, "warmup": 5})
    report = (out / "report.md").read_text()
    assert "fallback data" in report and "--data-dir" in report
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"]["source"] == "default" and "fallback" in summary["data"]["note"]
    assert res["summary"]["log_points"] > 0
