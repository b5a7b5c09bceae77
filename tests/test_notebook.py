"""Execute notebooks/saliency_explorer.ipynb headless (nbclient) and fail on any cell error.

Environment for the run: WARPADAPT_NB_HEADLESS=1 (no widgets), a smaller static-prior fit and
pixel-share table (WARPADAPT_NB_PRIOR, WARPADAPT_NB_TABLE); docs/ pictures are not rewritten.
"""

import os
import signal
import threading
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "saliency_explorer.ipynb"
CELL_LIMIT = 300  # s per cell (nbclient's own timeout)
WHOLE_RUN_LIMIT = 600  # s for the whole run, kernel start and shutdown included


def _kill_kernel(client) -> None:
    """Kill the notebook's kernel process (if it started), without waiting for it to answer."""
    provisioner = getattr(getattr(client, "km", None), "provisioner", None)
    pid = getattr(provisioner, "pid", None) or getattr(getattr(provisioner, "process", None), "pid", None)
    if pid:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def execute_with_watchdog(client, limit: float = WHOLE_RUN_LIMIT) -> None:
    """``client.execute()`` with a whole-run time limit: a stuck kernel (idle, never answering, hung at start
    or shutdown) fails the test and is killed instead of stalling CI. Cell errors propagate as raised."""
    done, raised = threading.Event(), []

    def run():
        try:
            client.execute()
        except BaseException as err:  # re-raised in the test's thread
            raised.append(err)
        finally:
            done.set()

    threading.Thread(target=run, name="notebook-execute", daemon=True).start()
    if not done.wait(limit):
        _kill_kernel(client)
        pytest.fail(f"notebook execution did not finish within {limit:g} s (stuck kernel?); its kernel was killed")
    if raised:
        raise raised[0]


def test_saliency_explorer_runs_headless(monkeypatch):
    monkeypatch.setenv("WARPADAPT_NB_HEADLESS", "1")
    monkeypatch.setenv("WARPADAPT_NB_PRIOR", "40")
    monkeypatch.setenv("WARPADAPT_NB_TABLE", "4")
    monkeypatch.delenv("WARPADAPT_NB_DOCS", raising=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_LIMIT, startup_timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    execute_with_watchdog(client)  # raises CellExecutionError on the first failing cell
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert images >= 5  # guidance comparison, overview, features, sweep, knob curves


def test_watchdog_fails_a_stuck_notebook_and_kills_its_kernel():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import time\nwhile True:\n    time.sleep(0.1)")])
    client = nbclient.NotebookClient(nb, timeout=None, startup_timeout=120, kernel_name="python3")
    with pytest.raises(pytest.fail.Exception, match="did not finish within 8 s"):
        execute_with_watchdog(client, limit=8)


def test_committed_notebook_has_small_outputs_and_no_errors():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert NOTEBOOK.stat().st_size < 1_500_000
    outs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert outs, "the committed notebook should carry its executed outputs"
    assert not [o for o in outs if o.output_type == "error"]
