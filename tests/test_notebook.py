"""The example notebook (docs/notebooks/fleet.ipynb) runs from top to bottom, against a real
embedded hub (its roll-out controller included) and a simulated fleet, and what it shows is
what the story says: a roll-out whose second wave fails, a pause, a rollback, the report."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "notebooks" / "fleet.ipynb"


def _text(cell: nbformat.NotebookNode) -> str:
    parts = []
    for out in cell.get("outputs", []):
        data = out.get("data", {})
        parts += [data.get("text/html", ""), data.get("text/plain", ""), out.get("text", "")]
    return "\n".join(p if isinstance(p, str) else "".join(p) for p in parts)


def test_the_notebook_runs_and_tells_its_story(tmp_path: Path) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={
        "metadata": {"path": str(tmp_path)}
    }).execute()  # fmt: skip
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not [o for c in code for o in c.get("outputs", []) if o.output_type == "error"]
    shown = "\n".join(_text(c) for c in code)
    assert "<table" in shown  # plans, results, clusters render as HTML tables
    # the roll-out spec, as the notebook shows it before creating it
    assert "<b>Rollout</b> retail-1.1.0" in shown
    assert "<b>Wave</b> canary (clusters: store-00)" in shown
    assert "HostsDegraded" in shown  # the failing store's cluster
    # the report after the rollback: the two changed waves back, the failing store not,
    # the rest wave never started
    assert shown.count(" rolled-back ") >= 2
    assert "store-01  ten-percent  rollback-failed" in shown
    assert shown.count("rest          skipped") == 9
    assert "'rolled-back'" in shown  # the roll-out's last event
    assert "image/png" in json.dumps([o for c in code for o in c.get("outputs", [])])


def test_the_committed_notebook_is_executed() -> None:
    """The docs render the notebook with its outputs: every code cell has been run."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code)
    assert not [o for c in code for o in c.get("outputs", []) if o.output_type == "error"]
