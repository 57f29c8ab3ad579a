"""The first cell after a notebook's parameters: what its profile means, in one call.

Every paper notebook starts the same way. Its ``parameters`` cell (which papermill must
find literally in the notebook) holds the knobs, ``None`` meaning "the profile decides";
the next cell calls :func:`setup`, which turns those knobs into the values the notebook
uses::

    run = notebook_setup.setup("01_mbt2018", PROFILE, smoke=SMOKE, device=DEVICE, dataset=DATASET,
                               n_images=N_IMAGES, figure_dir=FIGURE_DIR, results_dir=RESULTS_DIR)
    smoke, device, dataset, results_dir, fig_dir = run.smoke, run.device, run.dataset, run.results_dir, run.fig_dir

The rules, the same in every notebook:

=============  ==========================================================================
value          rule
=============  ==========================================================================
smoke          ``PROFILE == "smoke"`` unless ``SMOKE`` says otherwise (CI runs the ``full``
               profile's models at smoke sizes with ``SMOKE=True``)
model_profile  ``"full"`` (CompressAI's published weights) under ``PROFILE="full"``, else
               ``"cpu"`` (this project's checkpoints)
device         ``DEVICE``, or a GPU when PyTorch sees one, else the CPU
dataset        ``DATASET``, or the smoke dataset (embedded sample photos, no files needed)
               under smoke, else Kodak
n_images       ``N_IMAGES``, or 2 under smoke, else every image (None)
results_dir    ``RESULTS_DIR``, or ``build/results/<profile>/<notebook>``: the cached tables
fig_dir        ``FIGURE_DIR``, or :func:`nic_lib.plotting.figure_dir`: ``paper_figures/``
               only for the ``cpu`` profile; :func:`nic_lib.plotting.save_figure` writes here
=============  ==========================================================================

Sizes that only one notebook has (crops, grids, training steps) stay in that notebook's
own derived-values lines, after the call.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from nic_lib import plotting
from nic_lib.models import resolve_device

__all__ = ["NotebookRun", "SMOKE_DATASET", "SMOKE_IMAGES", "DEFAULT_DATASET", "setup"]

#: The dataset of a smoke run: scikit-image's sample photos, shipped with the package, so
#: CI needs no data files.
SMOKE_DATASET = "sample"
#: Images of a smoke run: two are the fewest that still make a mean over images.
SMOKE_IMAGES = 2
#: The dataset of every paper's tables and figures.
DEFAULT_DATASET = "kodak"


@dataclass(frozen=True)
class NotebookRun:
    """What a notebook's parameters mean for this run (see the module docstring's table)."""

    notebook: str  # the notebook's stem, e.g. "01_mbt2018"
    profile: str  # "smoke", "cpu" or "full", as given
    smoke: bool  # smoke sizes
    model_profile: str  # whose weights: "full" (published) or "cpu" (this project's)
    device: torch.device  # where the networks run
    dataset: str  # a nic_lib.data dataset name
    n_images: int | None  # the first N images; None: all of them
    results_dir: Path  # cached tables
    fig_dir: Path  # figures and committed tables


def setup(notebook: str, profile: str, *, smoke: bool | None = None, device: str | None = None,
          dataset: str | None = None, n_images: int | None = None,
          figure_dir: str | os.PathLike | None = None, results_dir: str | os.PathLike | None = None,
          smoke_dataset: str = SMOKE_DATASET) -> NotebookRun:
    """Resolve a notebook's profile knobs, apply the plot style and open its figure folder.

    Args:
        notebook: the notebook's stem (names its figure and results folders).
        profile: the ``PROFILE`` parameter.
        smoke: the ``SMOKE`` parameter (None: ``profile == "smoke"``).
        device: the ``DEVICE`` parameter (None: a GPU when there is one).
        dataset: the ``DATASET`` parameter (None: ``smoke_dataset`` under smoke, else Kodak).
        n_images: the ``N_IMAGES`` parameter (None: :data:`SMOKE_IMAGES` under smoke, else all).
        figure_dir: the ``FIGURE_DIR`` parameter (None: by profile).
        results_dir: the ``RESULTS_DIR`` parameter (None: by profile).
        smoke_dataset: the dataset of a smoke run of this notebook (notebook 01 keeps Kodak,
            on crops).

    Returns:
        The resolved values; the figure folder exists and :func:`nic_lib.plotting.save_figure`
        writes into it.

    Raises:
        ValueError: a CUDA ``device`` on a machine without a GPU.
    """
    smoke = profile == "smoke" if smoke is None else bool(smoke)
    plotting.set_style()
    return NotebookRun(
        notebook=notebook,
        profile=profile,
        smoke=smoke,
        model_profile="full" if profile == "full" else "cpu",
        device=resolve_device(device),
        dataset=dataset or (smoke_dataset if smoke else DEFAULT_DATASET),
        n_images=n_images if n_images is not None else (SMOKE_IMAGES if smoke else None),
        results_dir=Path(results_dir) if results_dir else plotting.BUILD_DIR / "results" / profile / notebook,
        fig_dir=plotting.use_figure_dir(plotting.figure_dir(notebook, profile, figure_dir)),
    )
