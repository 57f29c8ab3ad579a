"""Every notebook's ``full`` path, at smoke size, against the stand-in zoo (no internet).

The stand-in (:mod:`nic_lib.testing.standin_zoo`) serves state dicts of the zoo's
architectures with random weights, named and hashed as CompressAI names its files, from a
loopback HTTP server; ``$NIC_ZOO_URLS`` points the zoo there and ``$TORCH_HOME`` at a
fresh cache, so each run goes through download, hash check, cache and load. The kernels
that papermill starts inherit this process's environment. Deselect with ``-m "not notebook"``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest

from nic_lib.models import zoo
from nic_lib.notebook_setup import SMOKE_DATASET
from nic_lib.notebooks import list_notebooks, run_notebook
from nic_lib.plotting import PAPER_FIGURES
from nic_lib.testing import standin_zoo

from test_notebooks_smoke import snapshot

#: Seconds one cell of a full-profile smoke run may take. More than the smoke profile's
#: 600 s: notebook 02's Kodak-C grid cell (3 stand-in NIC models and the classic codecs)
#: takes about 2 minutes on an idle 2-core machine, and went past 600 s in a fresh-clone
#: CI run that shared the machine with two training runs (2026-12-06). A cell running this
#: long is hung, not slow.
FULL_SMOKE_CELL_TIMEOUT_S = 1800

#: Smoke sizes per notebook on top of SMOKE=True: the least that still runs every cell
#: of the full path. 02: real bitstreams (the stand-in's variable-rate model has random
#: weights, no entropy model the 2% likelihood check could pass) on one image, three
#: qualities, and 2 of the 8 zoo variants the full grid evaluates: this project's joint
#: model at the zoo's widths (its wavefront coder) and a CompressAI class that is a
#: variable-rate level. Left out, measured (2026-12-07, astronaut 512x512, q3, one thread):
#: cheng2020-anchor, whose CompressAI serial decode took 9.5 s of a 10 s encode + decode
#: against 0.8 s (mbt2018) and 0.5 s (the variable-rate model), i.e. ~3 min of the grid's 7
#: conditions x 3 qualities; tests/test_zoo.py round-trips every zoo model, cheng2020's
#: included. Only the smoke dataset: the second dataset (photos-hr-C, a 512x768 crop) ran
#: the same grid again on a 1.5x larger image (~35 min beside two training runs) through
#: the same code as the first; the smoke profile's run covers its cells (classic codecs).
NOTEBOOK_02_NIC_MODELS = ["mbt2018", "bmshj2018-hyperprior-vbr"]
PARAMETERS = {
    "02_ood_benchmark": {"NIC_RATE": "bitstream", "N_IMAGES": 1, "NIC_QUALITIES": [1, 3, 6],
                         "NIC_MODELS": NOTEBOOK_02_NIC_MODELS, "DATASETS": [SMOKE_DATASET]},
}
#: Notebooks whose full path downloads zoo weights: the files each must have fetched.
EXPECTED_DOWNLOADS = {
    "01_mbt2018": ["bmshj2018-factorized", "bmshj2018-hyperprior", "mbt2018-mean", "mbt2018"],
    "02_ood_benchmark": NOTEBOOK_02_NIC_MODELS,
    "03_spectral_inspection": ["mbt2018", "bmshj2018-hyperprior"],
    "04_spectral_theory": ["mbt2018"],
    "05_pq_mim": ["mbt2018"],
}


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    root = tmp_path_factory.mktemp("full-profile")
    with standin_zoo.serve(root / "zoo") as served:
        saved = {k: os.environ.get(k) for k in (zoo.ZOO_URLS_ENV, "TORCH_HOME")}
        os.environ[zoo.ZOO_URLS_ENV] = str(served.manifest)
        os.environ["TORCH_HOME"] = str(root / "torch-home")
        try:
            yield served
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def _outputs(executed: Path) -> str:
    nb = nbformat.read(executed, as_version=4)
    return "\n".join(json.dumps(o) for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.parametrize("source", list_notebooks(), ids=lambda p: p.stem)
def test_notebook_runs_its_full_path_against_the_standin_zoo(source, standin, tmp_path):
    before = snapshot(PAPER_FIGURES)
    figures = tmp_path / "figures"
    parameters = {"SMOKE": True, "FIGURE_DIR": str(figures), **PARAMETERS.get(source.stem, {})}
    if "RESULTS_DIR =" in source.read_text():
        parameters["RESULTS_DIR"] = str(tmp_path / "results")
    served_before = len(standin.requests)
    executed = run_notebook(source, profile="full", parameters=parameters, out_dir=tmp_path,
                            timeout=FULL_SMOKE_CELL_TIMEOUT_S)
    assert snapshot(PAPER_FIGURES) == before, "a full-profile run wrote into paper_figures/"
    assert list(figures.rglob("*.png")) or list(figures.rglob("*.svg")), f"{source.stem} produced no figure"
    cache = zoo.cache_dir()
    for key in EXPECTED_DOWNLOADS.get(source.stem, []):
        names = standin.names[key][zoo.METRIC]
        names = [names] if isinstance(names, str) else list(names.values())
        assert any((cache / n).is_file() for n in names), f"{source.stem} did not load {key} from the zoo"
    if source.stem not in EXPECTED_DOWNLOADS:
        assert len(standin.requests) == served_before, f"{source.stem} has no zoo model but downloaded one"
    if source.stem == "01_mbt2018":
        text = _outputs(executed)
        assert "CompressAI's published weights" in text and "mbt2018-context (cpu)" in text
