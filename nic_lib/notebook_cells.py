"""A notebook source's cells as the runner reads them: the text format, the cell tagged
``parameters`` and the names it assigns, and the error that names the failing cell by its
number and line in the ``.py`` source (:class:`NotebookExecutionError`). Part of
:mod:`nic_lib.notebooks`; import from there.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import jupytext
import nbformat

from nic_lib.notebook_progress import PROFILE_PARAMETER
from nic_lib.plotting import COMMITTED_PROFILE


#: The text format of the sources (see jupytext.toml).
SOURCE_FORMAT = "py:percent"
#: The profile whose figures are committed, so running a notebook "as is" reproduces them.
DEFAULT_PROFILE = COMMITTED_PROFILE
#: papermill injects parameters right after the cell carrying this tag.
PARAMETERS_TAG = "parameters"
#: How many lines of a failing cell the error message quotes: enough to recognise the cell.
ERROR_SOURCE_LINES = 2
#: A py:percent cell marker: "# %%" alone or followed by a title/metadata.
_CELL_MARKER = re.compile(r"^#\s*%%(\s|$)")


class NotebookExecutionError(RuntimeError):
    """A notebook cell raised (or timed out, or killed the kernel) during :func:`run_notebook`.

    Attributes:
        notebook: the source ``.py`` that failed.
        cell_number: 1-based number of the failing cell in the source notebook (markdown
            cells count, as in JupyterLab), or ``None`` when the failure was in the cell
            papermill injects.
        line: 1-based line of that cell's ``# %%`` marker in the source, when known.
        ename: exception class name raised in the kernel, e.g. ``"ValueError"``.
        evalue: exception message.
        executed_path: the executed notebook holding the outputs and the full traceback.
    """

    def __init__(self, message, *, notebook, cell_number, line, ename, evalue, executed_path):
        super().__init__(message)
        self.notebook = notebook
        self.cell_number = cell_number
        self.line = line
        self.ename = ename
        self.evalue = evalue
        self.executed_path = executed_path


def _parameters_cell(nb: nbformat.NotebookNode, path: Path) -> tuple[int, set[str]]:
    """Index of the one cell tagged ``parameters`` and the names it assigns; errors otherwise."""
    tagged = [i for i, cell in enumerate(nb.cells) if PARAMETERS_TAG in cell.metadata.get("tags", [])]
    example = f'# %% tags=["{PARAMETERS_TAG}"]\n{PROFILE_PARAMETER} = "{DEFAULT_PROFILE}"  # smoke | cpu | full'
    if len(tagged) != 1:
        found = "none" if not tagged else "cells " + ", ".join(str(i + 1) for i in tagged)
        raise ValueError(
            f"{path}: needs exactly one cell tagged '{PARAMETERS_TAG}' (found {found}); papermill injects "
            f"{PROFILE_PARAMETER} and the other parameters right after it. Fix: make the first code cell after "
            f"the imports start with\n{example}"
        )
    index = tagged[0]
    declared = _assigned_names(nb.cells[index].source)
    if PROFILE_PARAMETER not in declared:
        raise ValueError(
            f"{path}: its '{PARAMETERS_TAG}' cell (cell {index + 1}) does not assign {PROFILE_PARAMETER}; "
            f"add the line\n{PROFILE_PARAMETER} = \"{DEFAULT_PROFILE}\"  # smoke | cpu | full"
        )
    return index, declared


def _assigned_names(source: str) -> set[str]:
    """Names assigned at the top level of a cell (``X = ...``, ``X: int = ...``)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:  # e.g. an IPython magic: fall back to reading "NAME =" line starts
        return set(re.findall(r"^([A-Za-z_]\w*)\s*(?::[^=\n]*)?=(?!=)", source, flags=re.MULTILINE))
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def _execution_error(source: Path, params_index: int, cell_index: int, ename: str, evalue: str, executed_path: Path):
    """A :class:`NotebookExecutionError` naming the source cell behind papermill's ``cell_index``."""
    # papermill counts cells of the executed notebook, where the injected-parameters cell
    # sits right after the parameters cell; map back to the source's cells.
    injected_index = params_index + 1
    nb = jupytext.read(source, fmt=SOURCE_FORMAT)
    if cell_index == injected_index:
        cell_number, line, where = None, None, f"the injected-parameters cell (after cell {params_index + 1})"
        quoted = ""
    else:
        source_index = cell_index - 1 if cell_index > injected_index else cell_index
        cell_number = source_index + 1
        line = _cell_marker_line(source, source_index, len(nb.cells))
        where = f"cell {cell_number}" + (f" (line {line})" if line else "")
        lines = [s for s in nb.cells[source_index].source.splitlines() if s.strip()][:ERROR_SOURCE_LINES]
        quoted = "".join(f"\n    {s[:100]}" for s in lines)
    message = (
        f"{source} failed in {where}:{quoted}\n{ename}: {evalue}\n"
        f"The executed notebook, with the outputs and traceback, is {executed_path}"
    )
    return NotebookExecutionError(
        message,
        notebook=source,
        cell_number=cell_number,
        line=line,
        ename=ename,
        evalue=evalue,
        executed_path=executed_path,
    )


def _cell_marker_line(source: Path, cell_index: int, n_cells: int) -> int | None:
    """1-based line of the ``# %%`` marker starting cell ``cell_index``, if markers map one-to-one to cells."""
    markers = [i + 1 for i, text in enumerate(source.read_text().splitlines()) if _CELL_MARKER.match(text)]
    return markers[cell_index] if len(markers) == n_cells else None


def _last_started_cell(running_path: Path) -> int | None:
    """Index of the last cell papermill started in a partly executed notebook, if any."""
    if not running_path.exists():
        return None
    nb = nbformat.read(running_path, as_version=4)
    started = [i for i, cell in enumerate(nb.cells) if cell.metadata.get("papermill", {}).get("start_time")]
    return started[-1] if started else None
