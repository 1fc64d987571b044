"""Packaging: every package folder is installed, and experiments/benchmarks only under jaxspectra.

The repository keeps ``experiments/`` and ``benchmarks/`` at its root; pyproject's ``package-dir``
installs them as ``jaxspectra.experiments`` / ``jaxspectra.benchmarks`` so that site-packages gets
no generic top-level names (issue 18) and the CLI finds them from a checkout and a wheel alike.
"""

import importlib
import pathlib
import subprocess
import sys
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _setuptools() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["setuptools"]


def test_pyproject_lists_every_package_folder():
    cfg = _setuptools()
    dirs = cfg["package-dir"]
    on_disk = {".".join(p.parent.relative_to(ROOT).parts)
               for p in (ROOT / "jaxspectra").rglob("__init__.py") if "__pycache__" not in p.parts}
    on_disk |= {"jaxspectra.experiments", "jaxspectra.benchmarks"}
    assert set(cfg["packages"]) == on_disk, "update [tool.setuptools] packages in pyproject.toml"
    assert dirs["jaxspectra.experiments"] == "experiments"
    assert dirs["jaxspectra.benchmarks"] == "benchmarks"
    assert not any(p.split(".")[0] in ("experiments", "benchmarks") for p in cfg["packages"])


def test_installed_names():
    code = (
        "import importlib.util as u, jaxspectra.experiments as e, jaxspectra.benchmarks as b;"
        "print(u.find_spec('experiments') is None, u.find_spec('benchmarks') is None,"
        " e.__path__[0].endswith('experiments'), b.__path__[0].endswith('benchmarks'))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True)
    if out.returncode and "No module named 'jaxspectra'" in out.stderr:
        pytest.skip("jaxspectra is not installed (run `pip install -e .`)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True"] * 4, out.stdout


def test_missing_subpackage_is_one_clear_line():
    from jaxspectra import cli

    with pytest.raises(SystemExit, match=r"pip install -e \."):
        cli._subpackage("no_such_folder")


def test_checkout_folder_loads_under_the_package_name(tmp_path, monkeypatch):
    """A checkout whose install does not map experiments/ (PYTHONPATH alone, or setuptools' path
    mode) still runs: the folder is loaded as jaxspectra.<name>, relative imports included."""
    from jaxspectra import cli

    (tmp_path / "exps").mkdir()
    (tmp_path / "exps" / "__init__.py").write_text("")
    (tmp_path / "exps" / "_h.py").write_text("Y = 2\n")
    (tmp_path / "exps" / "a.py").write_text("from ._h import Y\n")
    monkeypatch.delitem(sys.modules, "jaxspectra.exps", raising=False)
    monkeypatch.delitem(sys.modules, "jaxspectra.exps.a", raising=False)
    monkeypatch.delitem(sys.modules, "jaxspectra.exps._h", raising=False)
    assert cli.load_from_checkout("exps", tmp_path).__name__ == "jaxspectra.exps"
    assert importlib.import_module("jaxspectra.exps.a").Y == 2
    assert cli.load_from_checkout("missing", tmp_path) is None
