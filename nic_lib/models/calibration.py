r"""Scale calibration: widen or narrow a hyperprior's predicted scales by one factor per level.

The hyperprior models code each latent with a Gaussian whose scale σ is predicted by the
hyper-synthesis ``h_s``. A model whose σ are systematically too small (overconfident) or too
large pays bits for it, and no amount of coding fixes that. Calibration multiplies the
predicted scales by one positive factor per rate level,

    σ'_l = c_l · σ ,        c_l = argmin_c  Σ_images Σ_latents −log2 P(ŷ | c·σ, μ) ,

fitted on held-out photos (``scripts/calibrate_scales.py``: photos-hr, never Kodak). The
latents ŷ = round(y − μ) + μ do not depend on σ, so distortion is unchanged and only the
rate moves; the encoder and decoder compute the same σ', so coding stays exact. It is the
Gaussian counterpart of temperature scaling (Guo et al., ICML 2017). Measured on the M = 96
cpu-profile checkpoints (git history before the N = 96 generation): the scale hyperprior is overconfident
(c = 1.20-1.31: its short last stage leaves scales too small), the mean-scale hyperprior
underconfident (c = 0.60-0.69), the joint models calibrated already (c ≈ 1, not calibrated).

The factors are part of the model: :func:`apply_calibration` gives it the buffer
``scale_calibration`` (one float64 factor per level, in the state dict), and the model
multiplies σ by the current level's factor itself (``gaussian_parameters`` of
:mod:`nic_lib.models.google`'s hyperprior models, in ``forward`` and in the coder). An
uncalibrated model has no buffer (c = 1). ``scripts/calibrate_scales.py`` writes the fitted
factors into the checkpoint's state dict (:func:`nic_lib.models.checkpoints.write_calibration`)
and its fitting record beside it in ``<name>.calibration.json`` (every candidate factor's
bits; :func:`read_calibration` reads its factors, :func:`nic_lib.models.load_checkpoint` does
not: the model is its state dict). :func:`nic_lib.container.weights_fingerprint`
covers the factor, so a ``.nic`` file coded without calibration is refused by a calibrated
decoder rather than misdecoded.

Supported: ``bmshj2018-hyperprior`` (``h_s`` outputs σ) and ``mbt2018-mean`` (``h_s``
outputs σ then μ). The context models predict σ from ``h_s`` *and* the context model, and
measured calibrated already, so they are not covered.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from nic_lib import coding, data, fileio

from . import variable_rate

__all__ = [
    "BUFFER",
    "CALIBRATED_MODELS",
    "FACTOR_GRID",
    "apply_calibration",
    "best_factors",
    "calibration_factor",
    "calibration_factors",
    "calibration_path",
    "fit_scale_calibration",
    "read_calibration",
    "remove_calibration",
    "save_calibration",
    "supports_calibration",
]

#: Candidate factors of :func:`fit_scale_calibration`: 0.50 ... 2.00 in steps of 0.01.
FACTOR_GRID = tuple(round(0.5 + 0.01 * i, 2) for i in range(151))
#: Sidecar suffix: ``checkpoints/<model>/n96.pt`` -> ``n96.calibration.json``.
SUFFIX = ".calibration.json"
#: The model's buffer of factors (state-dict key), one per rate level.
BUFFER = "scale_calibration"
#: Models whose cpu-profile checkpoints are calibrated after training: the two whose ``h_s``
#: outputs σ directly (the context models fit factors of about 1). ``scripts/calibrate_scales.py``
#: fits these by default and ``scripts/train_cpu_profile.py`` refits them when it ships one.
CALIBRATED_MODELS = ("bmshj2018-hyperprior", "mbt2018-mean")


def supports_calibration(model: nn.Module) -> bool:
    """Whether :func:`apply_calibration` can calibrate this model: a hyperprior model of
    :mod:`nic_lib.models.google` whose σ come straight from ``h_s`` (``scale_factor``);
    not the context models, whose σ also depend on the context."""
    return callable(getattr(model, "scale_factor", None)) and hasattr(model, "h_s")


def calibration_factors(model: nn.Module) -> list[float] | None:
    """The model's factors, one per level (None when it is not calibrated)."""
    factors = getattr(model, "_buffers", {}).get(BUFFER)
    return None if factors is None else [float(c) for c in factors]


def calibration_factor(model: nn.Module) -> float:
    """The factor applied at the model's current level (1.0 when not calibrated)."""
    return model.scale_factor() if supports_calibration(model) else 1.0


def remove_calibration(model: nn.Module) -> nn.Module:
    """Undo :func:`apply_calibration` (no-op for an uncalibrated model); returns the model."""
    if calibration_factors(model) is not None:
        del model._buffers[BUFFER]
    return model


def apply_calibration(model: nn.Module, factors: Sequence[float]) -> nn.Module:
    """Multiply the model's predicted scales by ``factors[level]``, in place.

    Args:
        model: a supported model (:func:`supports_calibration`), fixed- or variable-rate.
        factors: one positive factor per rate level (one for a fixed-rate model).

    Returns:
        The model (a previous calibration is replaced).

    Raises:
        ValueError: unsupported model, wrong number of factors, or a factor that is not
            positive and finite.
    """
    if not supports_calibration(model):
        raise ValueError(f"scale calibration covers models whose h_s predicts the scales "
                         f"(bmshj2018-hyperprior, mbt2018-mean); {type(model).__name__} is not one")
    levels = len(variable_rate.rate_levels(model)) or 1
    factors = [float(c) for c in factors]
    if len(factors) != levels:
        raise ValueError(f"{type(model).__name__} has {levels} rate level(s); got "
                         f"{len(factors)} calibration factors")
    if not all(math.isfinite(c) and c > 0 for c in factors):
        raise ValueError(f"calibration factors must be positive and finite; got {factors}")
    device = next(model.parameters()).device
    # float64: the coder multiplies its float64 σ by exactly the fitted number
    model.register_buffer(BUFFER, torch.tensor(factors, dtype=torch.float64, device=device))
    return model


@torch.no_grad()
def fit_scale_calibration(model: nn.Module, images, factors: Sequence[float] = FACTOR_GRID,
                          levels: Sequence[int] | None = None) -> pd.DataFrame:
    """Estimated bits of the latents y of ``images`` under every candidate factor, per level.

    For each level the model runs once per image (eval-mode ``forward``, uncalibrated); the
    Gaussian conditional's inputs (y, σ, μ) are captured and its likelihood is recomputed
    for each factor c with σ' = c σ: exactly the estimate the model calibrated with c
    gives, since ŷ and μ do not depend on σ. The hyper-latents z are unaffected.

    Args:
        model: a supported model in eval mode (its calibration, if any, is left in place but
            not used).
        images: ``(name, uint8 (H, W, 3))`` pairs; not the test set.
        factors: candidate factors (must include 1.0, the reference).
        levels: rate levels to fit; default every level (level 0 for a fixed-rate model).

    Returns:
        DataFrame ``level, factor, bits`` (Σ −log2 P of every y over the images).

    Raises:
        ValueError: unsupported model, or 1.0 missing from ``factors``.
    """
    if not supports_calibration(model):
        raise ValueError(f"{type(model).__name__} cannot be calibrated (see "
                         "nic_lib.models.calibration)")
    if 1.0 not in [float(c) for c in factors]:
        raise ValueError("the candidate factors must include 1.0 (the uncalibrated model)")
    n_levels = len(variable_rate.rate_levels(model)) or 1
    levels = list(range(n_levels)) if levels is None else [int(v) for v in levels]
    gc = model.gaussian_conditional
    level_before = model.gain.level if n_levels > 1 else 0
    saved = calibration_factors(model)
    if saved is not None:
        remove_calibration(model)
    captured: list[tuple[Tensor, Tensor, Tensor | None]] = []
    capturing = [False]  # the pricing below calls gc too: only the model's calls are captured

    def capture(module, args, kwargs):
        if not capturing[0]:
            return
        inputs, scales = args[0], args[1] if len(args) > 1 else kwargs["scales"]
        means = args[2] if len(args) > 2 else kwargs.get("means")
        captured.append((inputs, scales, means))

    rows = []
    handle = gc.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        for level in levels:
            if n_levels > 1:
                variable_rate.set_rate_level(model, level)
            captured.clear()
            capturing[0] = True
            for _, img in images:
                model(coding.model_input(model, img))
            capturing[0] = False
            for c in factors:
                # bits(c) = Σ −log2 P(ŷ | c σ, μ)  (CompressAI's likelihood, floor included)
                bits = sum(float(-torch.log2(gc(y, s * float(c), means=mu, training=False)[1]).sum())
                           for y, s, mu in captured)
                rows.append({"level": level, "factor": float(c), "bits": bits})
    finally:
        handle.remove()
        if saved is not None:
            apply_calibration(model, saved)
        if n_levels > 1:
            variable_rate.set_rate_level(model, level_before)
    return pd.DataFrame(rows, columns=["level", "factor", "bits"])


def best_factors(table: pd.DataFrame) -> list[float]:
    """Per level, the factor of :func:`fit_scale_calibration`'s table with the fewest bits."""
    return [float(t.loc[t["bits"].idxmin(), "factor"]) for _, t in table.groupby("level")]


def calibration_path(checkpoint: str | os.PathLike) -> Path:
    """``<name>.calibration.json`` beside the checkpoint."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + SUFFIX)


def save_calibration(checkpoint: str | os.PathLike, table: pd.DataFrame, **info: Any) -> dict:
    """Write the best factors of :func:`fit_scale_calibration`'s table beside a checkpoint.

    Args:
        checkpoint: the checkpoint fitted; the record goes to :func:`calibration_path`.
        table: the fitting table (every level, factor 1.0 included).
        **info: provenance stored with it (tuning set, images, command, ...).

    Returns:
        The record written (atomically): ``{"factors"`` (one per level), ``"saving"`` (per
        level, 1 − bits(c)/bits(1) on the fitting images), ``"checkpoint_sha256"``,
        ``"bits_by_factor"`` (per level: factor -> bits), **info}``.
    """
    factors = best_factors(table)
    saving, by_factor = [], {}
    for (level, t), c in zip(table.groupby("level"), factors):
        bits = dict(zip(t["factor"].round(4), t["bits"]))
        saving.append(float(1 - bits[round(c, 4)] / bits[1.0]))
        by_factor[str(level)] = {f"{f:g}": float(b) for f, b in bits.items()}
    record = {"factors": factors, "saving": saving,
              "checkpoint_sha256": data.file_sha256(checkpoint),
              "bits_by_factor": by_factor, **info}
    fileio.atomic_write_text(calibration_path(checkpoint), json.dumps(record, indent=1) + "\n")
    return record


def read_calibration(checkpoint: str | os.PathLike) -> list[float] | None:
    """The fitted factors of a checkpoint, or None (no record, or a stale one: warned).

    A record fitted on another version of the checkpoint is not applied: its factors
    were chosen for other scales.

    Raises:
        ValueError: the record is not what ``scripts/calibrate_scales.py`` writes.
    """
    path = calibration_path(checkpoint)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        factors = [float(c) for c in record["factors"]]
        digest = record["checkpoint_sha256"]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path} does not hold scale-calibration factors ({err}); rewrite it "
                         "with `python scripts/calibrate_scales.py` or delete it") from err
    if not factors or not all(np.isfinite(factors)) or min(factors) <= 0:
        raise ValueError(f"{path}: factors must be positive and finite, got {factors}; rewrite "
                         "it with `python scripts/calibrate_scales.py`")
    if digest != data.file_sha256(checkpoint):
        warnings.warn(f"{path} was fitted on another version of {Path(checkpoint).name}: not "
                      "applied. Refit: python scripts/calibrate_scales.py --checkpoint "
                      f"{checkpoint}", stacklevel=2)
        return None
    return factors
