"""Figure style and the one way figures leave a notebook: :func:`save_figure`.

A notebook chooses its output folder once (its second cell calls :func:`use_figure_dir`
with the folder its profile implies, see :func:`figure_dir`) and then saves every figure
by name. Only the ``cpu`` profile writes into the committed ``paper_figures/<notebook>/``;
``smoke`` and ``full`` runs write under ``build/`` so a CI run never touches committed
figures. This module imports nothing else from the project but the leaf ``nic_lib.fileio``.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import seaborn as sns

from nic_lib import fileio

#: Repository root (this file lives in <root>/nic_lib/).
REPO_ROOT = Path(__file__).resolve().parent.parent
#: Committed figures, one folder per notebook.
PAPER_FIGURES = REPO_ROOT / "paper_figures"
#: Everything generated that is not committed: smoke runs, executed notebooks, caches.
BUILD_DIR = REPO_ROOT / "build"
#: The profile whose figures are committed (see README: profiles).
COMMITTED_PROFILE = "cpu"
#: PNG resolution: sharp on a laptop screen, small enough to commit (~100-300 kB a figure).
PNG_DPI = 150
#: Formats written by save_figure: PNG for the README/notebooks, PDF for papers and slides.
DEFAULT_FORMATS = ("png", "pdf")

_figure_dir: Path | None = None


def set_style() -> None:
    """Apply the project's plot style (seaborn ``whitegrid``, paper context, colour-blind palette)."""
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind", font_scale=1.2)
    plt.rcParams.update({"figure.dpi": 100, "savefig.bbox": "tight", "axes.titleweight": "bold"})


def figure_dir(notebook: str, profile: str, override: str | os.PathLike | None = None) -> Path:
    """Where a notebook's figures go for a profile.

    Args:
        notebook: notebook stem, e.g. ``"00_classic_codecs"``.
        profile: ``"smoke"``, ``"cpu"`` or ``"full"``.
        override: an explicit folder (the notebook's ``FIGURE_DIR`` parameter) wins.

    Returns:
        ``paper_figures/<notebook>`` for the ``cpu`` profile, else
        ``build/figures/<profile>/<notebook>``.
    """
    if override:
        return Path(override)
    if profile == COMMITTED_PROFILE:
        return PAPER_FIGURES / notebook
    return BUILD_DIR / "figures" / profile / notebook


def use_figure_dir(path: str | os.PathLike) -> Path:
    """Make ``path`` the folder :func:`save_figure` writes into (created if missing)."""
    global _figure_dir
    _figure_dir = Path(path)
    _figure_dir.mkdir(parents=True, exist_ok=True)
    return _figure_dir


def save_figure(fig: matplotlib.figure.Figure, name: str, formats: tuple[str, ...] = DEFAULT_FORMATS) -> list[Path]:
    """Write ``fig`` as ``<figure dir>/<name>.<fmt>`` for each format, atomically.

    Files are written to a temporary name in the same folder and renamed, so an
    interrupted run never leaves a half-written figure. PDF metadata carries no creation
    date, so regenerating an unchanged figure gives an unchanged file.

    Args:
        fig: the matplotlib figure.
        name: file stem, e.g. ``"fig1_rd_psnr"`` (letters, digits, ``-``, ``_``).
        formats: file formats understood by ``fig.savefig``.

    Returns:
        The written paths.

    Raises:
        RuntimeError: if no figure folder was chosen (call :func:`use_figure_dir` first;
            every notebook's second cell does).
        ValueError: if ``name`` contains a path separator or other unsafe characters.
    """
    if _figure_dir is None:
        raise RuntimeError(
            "no figure folder chosen: call nic_lib.plotting.use_figure_dir(figure_dir(NOTEBOOK, PROFILE)) "
            "first (the notebook's second cell does this)"
        )
    if not name or not all(c.isalnum() or c in "-_" for c in name):
        raise ValueError(f"figure name {name!r} must be non-empty and use only letters, digits, '-' and '_'")
    written = []
    for fmt in formats:
        target = _figure_dir / f"{name}.{fmt}"
        metadata = {"CreationDate": None} if fmt == "pdf" else None
        with fileio.atomic_path(target) as tmp:
            fig.savefig(tmp, format=fmt, dpi=PNG_DPI, metadata=metadata, bbox_inches="tight")
        written.append(target)
    return written
