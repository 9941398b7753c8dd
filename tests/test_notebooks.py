"""Every notebook runs top to bottom with its quick CI settings, and carries no outputs."""

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_has_no_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path.name}: strip outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(path, as_version=4)
    assert any("QUICK = True" in c.source for c in nb.cells if c.cell_type == "code"), \
        "the parameter cell must default to the quick CI settings"
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()


def test_notebook_05_runs_on_the_real_files(tmp_path, monkeypatch):
    """The partner notebook reads the demo files by default (run above); with ``DATA`` set it
    runs on the real CiP-DMD files, when they are present, and refuses their bad rows."""
    from nbclient import NotebookClient

    from tests.conftest import real_cip_dmd_or_skip

    data = real_cip_dmd_or_skip()
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(next(p for p in NOTEBOOKS if p.name == "05_partner_data.ipynb"), as_version=4)
    params = next(c for c in nb.cells if c.cell_type == "code" and "DATA = None" in c.source)
    params.source = params.source.replace("DATA = None", f"DATA = {str(data)!r}")
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    for line in ("sawing: line 138, column 3", "cylinder_bottom: line 46, column 2",
                 "piston_rods: line 155, column 6", "82 measurements on 81 parts out of spec"):
        assert line in printed
