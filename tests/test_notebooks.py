"""Execute every notebook in ``notebooks/`` top to bottom (nbclient, kernel ``python3``).

A notebook passes when no cell raises; each is limited to 120 s per cell. Skips cleanly when
there are no notebooks or nbclient/nbformat/ipykernel are not installed (the notebooks extra).
"""

from __future__ import annotations

import os
import pathlib

import pytest

# notebooks with a jupytext pair (``<name>.py``) are run, with their outputs asserted, by their own
# tests under tests/notebooks/ (tests/notebooks/_nbrun.py); this file runs the unpaired ones
NOTEBOOKS = sorted(p for p in (pathlib.Path(__file__).resolve().parents[1] / "notebooks").glob(
    "*.ipynb") if not p.with_suffix(".py").exists())


@pytest.mark.skipif(not NOTEBOOKS, reason="no notebooks in notebooks/")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("JAX_PLATFORMS", os.environ.get("JAX_PLATFORMS", "cpu"))
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError naming the failing cell
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
