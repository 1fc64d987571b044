"""Run a jupytext-paired notebook (``notebooks/<name>.py`` + ``.ipynb``) and return its results.

Contract for a notebook ``notebooks/<name>.py`` (jupytext percent format, paired with
``<name>.ipynb`` through ``jupytext --set-formats ipynb,py:percent``):

* it reads ``JAXSPECTRA_NB_SIZE`` (``"small"`` under the tests, ``"full"`` by default) to pick its
  problem sizes, so the tests run it in seconds;
* it writes the numbers it claims as a JSON object to the path in ``JAXSPECTRA_NB_RESULTS`` when
  that variable is set; the test asserts on them (not only "no cell raised").

:func:`run_notebook` checks that the ``.ipynb`` holds the same code cells as the ``.py`` (the pair
is in sync), executes the ``.py``'s cells with nbclient, and returns the JSON.
"""

from __future__ import annotations

import json
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"


def _code_cells(nb) -> list[str]:
    return [c.source.strip() for c in nb.cells if c.cell_type == "code"]


def run_notebook(name: str, tmp_path: pathlib.Path, monkeypatch, size: str = "small",
                 timeout: int = 120) -> dict:
    """Execute ``notebooks/<name>.py`` at ``size``; return what it wrote to its results file."""
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    py, ipynb = NOTEBOOKS / f"{name}.py", NOTEBOOKS / f"{name}.ipynb"
    assert py.exists(), f"{py} is missing"
    assert ipynb.exists(), f"{ipynb} is missing: run `jupytext --sync {py}`"
    nb = jupytext.read(py)
    assert _code_cells(nb) == _code_cells(jupytext.read(ipynb)), (
        f"{ipynb.name} is out of sync with {py.name}: run `jupytext --sync notebooks/{name}.py`")
    results = tmp_path / "results.json"
    monkeypatch.setenv("JAXSPECTRA_NB_SIZE", size)
    monkeypatch.setenv("JAXSPECTRA_NB_RESULTS", str(results))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("JAX_PLATFORMS", os.environ.get("JAX_PLATFORMS", "cpu"))
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError naming the failing cell
    assert results.exists(), f"notebook {name} wrote no results to JAXSPECTRA_NB_RESULTS"
    return json.loads(results.read_text())
