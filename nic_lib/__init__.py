"""nic-repro: a notebook-first library for reproducing neural image compression papers.

Modules (see README, "How the code is organised"):

- ``data``: named datasets, look-up order, downloads with checksums, image loading rules.
- ``codecs``: classic codecs (JPEG, WebP, JPEG 2000, AVIF, optional BPG/VTM) behind one interface.
- ``metrics``: PSNR, MS-SSIM, bits per pixel.
- ``rd``: BD-rate / BD-PSNR, RD tables and curves, published Kodak anchors.
- ``plotting``: seaborn style and ``save_figure``.
- ``fileio``: atomic writes (temp file + rename) used by every module that writes.
- ``cache``: tidy result tables on disk, recomputed when their inputs change.
- ``notebooks``: jupytext -> papermill runner with profiles.
- ``models``: the mbt2018 family and ablations on CompressAI; registry, profiles, checkpoints.
- ``training``: one training loop for every learned model (config, data, loss, recipes, runs);
  ``train`` is its command line, ``python -m nic_lib.train``.
"""

__version__ = "0.1.0"
