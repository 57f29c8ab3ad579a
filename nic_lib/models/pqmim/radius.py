r"""PQ-MIM's attention radius: tuning it, and its sidecar ``<checkpoint>.radius.json``.

At inference each token attends to tokens within a radius r
(:func:`~.entropy_model.local_attention_mask`). :func:`tune_attention_radius` measures
the bits of each candidate radius, :func:`save_tuned_radius` writes the best one into the
checkpoint's config (``attention_radius``, which the loaded model codes with) and the
tuning table beside it as a record (``scripts/tune_pqmim_radius.py``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from nic_lib import data, fileio
from nic_lib.coding import pad_to, to_tensor  # images <-> tensors (not .coding: the rANS side)
from nic_lib.models.checkpoints import update_config

from .autoencoder import DOWNSAMPLING
from .coding import bits_per_step
from .entropy_model import GLOBAL_ATTENTION
from .model import PQMIM
from .schedule import DEFAULT_STEPS

#: Candidate radii of :func:`tune_attention_radius` (Chebyshev distance in tokens; 0 =
#: global). The training windows are 12x12 tokens, so radii >= 11 see the whole window.
RADIUS_CANDIDATES = (0, 3, 4, 5, 6, 7, 8, 11)


@torch.no_grad()
def tune_attention_radius(model: PQMIM, images, steps: int = DEFAULT_STEPS,
                          candidates=RADIUS_CANDIDATES) -> pd.DataFrame:
    """Bits of every image's codes under each candidate attention radius (no coding).

    The radius that minimises the total is the model's tuned ``attention_radius``
    (``scripts/tune_pqmim_radius.py`` writes it beside the checkpoint). Tune on images that
    are not the test set: the script uses photos-hr, the benchmark Kodak.

    Args:
        model: PQ-MIM in eval mode.
        images: ``(name, uint8 (H, W, 3))`` pairs (sides padded to multiples of 16).
        steps: S.
        candidates: radii to try (0 = global attention).

    Returns:
        DataFrame with columns ``image, radius, step, bits, positions`` (one row per image,
        radius and coding step; a step's bits do not depend on the radius of other steps,
        since the visible codes are the true ones whatever the radius).
    """
    device = next(model.parameters()).device
    rows = []
    for name, img in images:
        codes = model.codes(pad_to(to_tensor(img), DOWNSAMPLING).to(device))[0]
        for r in candidates:
            for s, bits in enumerate(bits_per_step(model.entropy_model, codes, steps, int(r)), 1):
                rows.append({"image": name, "radius": int(r), "step": s, "bits": bits,
                             "positions": codes.shape[0] * codes.shape[1]})
    return pd.DataFrame(rows, columns=["image", "radius", "step", "bits", "positions"])


def best_radius(table: pd.DataFrame) -> int:
    """The radius of :func:`tune_attention_radius`'s table with the fewest total bits."""
    totals = table.groupby("radius")["bits"].sum()
    return int(totals.idxmin())


def radius_path(checkpoint: str | os.PathLike) -> Path:
    """The tuned attention radius of a checkpoint: ``<name>.radius.json`` beside it."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + ".radius.json")


def save_tuned_radius(checkpoint: str | os.PathLike, table: pd.DataFrame, **info: Any) -> dict:
    """Write the best radius of :func:`tune_attention_radius`'s table into a checkpoint.

    The radius goes into the checkpoint's config (``attention_radius``,
    :func:`nic_lib.models.checkpoints.update_config`), the tuning record beside it.

    Args:
        checkpoint: the checkpoint file; the record goes to :func:`radius_path`.
        table: the tuning table (must include radius 0, global attention).
        **info: provenance stored with it (tuning set, crop, steps, command, ...).

    Returns:
        The record written: ``{"radius", "saving_vs_global" (1 − bits(r)/bits(global)),
        "checkpoint_sha256" (of the checkpoint with the radius written:
        :func:`radius_is_current`), "images", "bits_by_radius", "bits_by_radius_and_step"
        (per coding step), **info}``.

    Raises:
        ValueError: the table lacks radius 0.
    """
    totals = table.groupby("radius")["bits"].sum()
    if GLOBAL_ATTENTION not in totals.index:
        raise ValueError("the tuning table lacks radius 0 (global attention), the reference")
    radius = best_radius(table)
    update_config(checkpoint, attention_radius=radius)
    record = {"radius": radius,
              "saving_vs_global": float(1 - totals[radius] / totals[GLOBAL_ATTENTION]),
              "checkpoint_sha256": data.file_sha256(checkpoint),
              "images": list(dict.fromkeys(table["image"])),
              "bits_by_radius": {str(r): float(b) for r, b in totals.items()},
              "bits_by_radius_and_step": {
                  str(r): [float(b) for b in t.sort_values("step")["bits"]]
                  for r, t in table.groupby(["radius", "step"])["bits"].sum().reset_index()
                  .groupby("radius")}, **info}
    fileio.atomic_write_text(radius_path(checkpoint), json.dumps(record, indent=1) + "\n")
    return record


def radius_is_current(checkpoint: str | os.PathLike) -> bool:
    """Whether the checkpoint has a ``.radius.json`` tuned on this very file (same SHA-256,
    the radius written into it included)."""
    path = radius_path(checkpoint)
    if not path.is_file():
        return False
    try:
        digest = json.loads(path.read_text()).get("checkpoint_sha256")
    except (ValueError, AttributeError):
        return False
    return digest == data.file_sha256(checkpoint)
