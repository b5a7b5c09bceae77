"""Execute notebooks/saliency_explorer.ipynb headless (nbclient) and fail on any cell error.

Environment for the run: WARPADAPT_NB_HEADLESS=1 (no widgets), a smaller static-prior fit and
pixel-share table (WARPADAPT_NB_PRIOR, WARPADAPT_NB_TABLE); docs/ pictures are not rewritten.
"""

import os
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "saliency_explorer.ipynb"


def test_saliency_explorer_runs_headless(monkeypatch):
    monkeypatch.setenv("WARPADAPT_NB_HEADLESS", "1")
    monkeypatch.setenv("WARPADAPT_NB_PRIOR", "40")
    monkeypatch.setenv("WARPADAPT_NB_TABLE", "4")
    monkeypatch.delenv("WARPADAPT_NB_DOCS", raising=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    t = time.perf_counter()
    client.execute()  # raises CellExecutionError on the first failing cell
    elapsed = time.perf_counter() - t
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert images >= 5  # guidance comparison, overview, features, sweep, knob curves
    assert elapsed < 300


def test_committed_notebook_has_small_outputs_and_no_errors():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert NOTEBOOK.stat().st_size < 1_500_000
    outs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert outs, "the committed notebook should carry its executed outputs"
    assert not [o for o in outs if o.output_type == "error"]
