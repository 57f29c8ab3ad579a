"""Every notebook under notebooks/ runs end to end with the smoke profile.

Parametrized over :func:`nic_lib.notebooks.list_notebooks`, so a notebook added later is
covered without touching this file. Deselect with ``-m "not notebook"``.
"""

from pathlib import Path

import pytest

from nic_lib.notebooks import list_notebooks, run_notebook
from nic_lib.plotting import PAPER_FIGURES

# A smoke run takes seconds per cell; a cell running this long is hung, not slow.
SMOKE_CELL_TIMEOUT_S = 600


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Relative path -> (size, mtime in ns) of every file and folder under ``folder``."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.parametrize("source", list_notebooks(), ids=lambda p: p.stem)
def test_notebook_runs_with_smoke_profile_without_touching_paper_figures(source, tmp_path):
    before = snapshot(PAPER_FIGURES)
    executed = run_notebook(source, profile="smoke", out_dir=tmp_path, timeout=SMOKE_CELL_TIMEOUT_S)
    assert executed.is_file()
    assert snapshot(PAPER_FIGURES) == before, "a smoke run wrote into paper_figures/: open the figure folder with notebook_setup.setup"
