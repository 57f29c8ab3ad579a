"""The scale table of the Gaussian entropy coders: which Gaussians the rANS coder has CDFs for.

A Gaussian conditional (``compressai.entropy_models.GaussianConditional``) cannot code
with the exact scale σ the network predicts for each latent: its coder holds quantized
CDFs for a fixed table of scales and codes each latent with the **smallest table scale
≥ σ** (``build_indexes``). CompressAI's default table has 64 scales, log-spaced from
0.11 to 256, a ratio of (256 / 0.11)^(1/63) ≈ 1.131 between neighbours, so a latent is
coded with a Gaussian up to 13% wider than its model says. The likelihood (the rate
estimate, and the training loss) uses σ itself; the real stream pays for the wider one.

Measured on three Kodak images with this project's cpu-profile models (2026-11-30,
real bitstream vs Σ −log2 p):

====================  =======  ==================  ==================
model                 quality  64 scales (ratio    256 scales (ratio
                               1.131)              1.031)
====================  =======  ==================  ==================
mbt2018-mean          1        +4.13%              +1.00%
mbt2018-mean          6        +0.86%              −0.33%
mbt2018-checkerboard  1        +2.49%              +0.64%
mbt2018               6        +0.43%              +0.00%
====================  =======  ==================  ==================

The gap shrinks with the step, so this project's models use :data:`SCALE_LEVELS` = 256
scales over the same range (:func:`scale_table`; ~3.2 MB of int32 CDFs per Gaussian
conditional in memory instead of 0.8). The CDFs depend on the table alone, not on the
weights, so checkpoints do not store them: :func:`load_checkpoint
<nic_lib.models.checkpoints.load_checkpoint>` builds them, and refuses a file that stores
CDFs built for another table (CompressAI's 64 scales: the M = 96 set, which left the tree
on 2026-12-07). ``.nic`` files of format version 1, written with the 64-scale table, are
refused (:class:`nic_lib.container.NicVersionError` says how to re-encode).

Encoder and decoder must hold the same CDFs (a ``.nic`` file's weights fingerprint covers
them). CompressAI computes them in float32 with ``torch.erfc``, whose last bits may depend
on the CPU's vector instructions; :func:`build_gaussian_tables` computes the same
quantities in float64 (``scipy.special.ndtr``, scalar code) and rounds once to float32
before CompressAI's 16-bit quantization, so two machines disagree only if a probability
lies within ~1e-16 of a float32 rounding boundary.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.special
import scipy.stats
import torch
from compressai._CXX import pmf_to_quantized_cdf as _pmf_to_quantized_cdf
from compressai.entropy_models import GaussianConditional
from compressai.models.base import SCALES_MAX, SCALES_MIN
from torch import Tensor, nn

__all__ = [
    "build_gaussian_tables",
    "SCALE_LEVELS",
    "named_conditionals",
    "scale_table",
    "scale_table_matches",
    "set_scale_table",
]

#: Scales in this project's table (log-spaced, SCALES_MIN = 0.11 .. SCALES_MAX = 256).
SCALE_LEVELS = 256


def scale_table(levels: int = SCALE_LEVELS) -> Tensor:
    """This project's table of coder scales.

    s_i = exp(ln 0.11 + i / (L − 1) · (ln 256 − ln 0.11)),  i = 0 … L − 1

    computed in float64 and rounded once to float32, so that every platform builds the
    same table (the table and its CDFs are part of a ``.nic`` file's weights
    fingerprint).

    Args:
        levels: L, the number of scales (default :data:`SCALE_LEVELS`).

    Returns:
        (L,) float32, increasing.
    """
    if levels < 2:
        raise ValueError(f"a scale table needs at least 2 levels, got {levels}")
    log_s = torch.linspace(math.log(SCALES_MIN), math.log(SCALES_MAX), levels,
                           dtype=torch.float64)
    return torch.exp(log_s).float()


def named_conditionals(model: nn.Module) -> list[tuple[str, GaussianConditional]]:
    """``(name, module)`` of every Gaussian conditional of ``model`` (GMMs' included)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, GaussianConditional)]


def _conditionals(model: nn.Module) -> list[GaussianConditional]:
    return [m for _, m in named_conditionals(model)]


def scale_table_matches(model: nn.Module, table: Tensor) -> bool:
    """True if every Gaussian conditional of ``model`` has CDFs built for ``table``
    (also true for a model with none, e.g. the factorized prior)."""
    for gc in _conditionals(model):
        current = gc.scale_table.detach().cpu().float()
        if (gc._quantized_cdf.numel() == 0 or current.shape != table.shape
                or not torch.equal(current, table.float())):
            return False
    return True


def build_gaussian_tables(gc: GaussianConditional, table: Tensor) -> None:
    """Build a Gaussian conditional's coder tables for a scale table, in float64.

    The quantities of ``GaussianConditional.update`` (CompressAI 1.2.8), for each scale s
    of the table, with the tail mass t (1e-9) and Φ the standard normal CDF:

        c = ⌈s · Φ⁻¹(1 − t/2)⌉                  (the pmf's centre; offset = −c)
        p_k = Φ((½ − |k − c|) / s) − Φ((−½ − |k − c|) / s),   k = 0 … 2c
        tail = 2 Φ((−½ − c) / s)               (mass outside the table: escape symbol)

    then (p_0 … p_2c, tail) quantized to a 16-bit CDF by CompressAI's C++ routine.

    Args:
        gc: the Gaussian conditional; its ``scale_table``, ``_quantized_cdf``,
            ``_offset`` and ``_cdf_length`` buffers are replaced.
        table: the scales, increasing.
    """
    scales = table.detach().cpu().float().double()
    multiplier = -float(scipy.stats.norm.ppf(gc.tail_mass / 2))
    centers = torch.ceil(scales * multiplier).long()
    lengths = 2 * centers + 1
    cdfs = torch.zeros((len(scales), int(lengths.max()) + 2), dtype=torch.int32)
    for i, (s, c) in enumerate(zip(scales.tolist(), centers.tolist())):
        k = np.abs(np.arange(2 * c + 1, dtype=np.float64) - c)
        lower = scipy.special.ndtr((-0.5 - k) / s)
        pmf = scipy.special.ndtr((0.5 - k) / s) - lower
        cdf = _pmf_to_quantized_cdf([*pmf.tolist(), float(2 * lower[0])],
                                    gc.entropy_coder_precision)
        cdfs[i, : len(cdf)] = torch.tensor(cdf, dtype=torch.int32)
    device = gc.scale_table.device
    gc.scale_table = scales.float().to(device)
    gc._quantized_cdf = cdfs.to(device)
    gc._offset = (-centers).int().to(device)
    gc._cdf_length = (lengths + 2).int().to(device)


def set_scale_table(model: nn.Module, table: Tensor | None = None, force: bool = False) -> bool:
    """Rebuild the coder CDFs of every Gaussian conditional of ``model`` for a table.

    Args:
        model: any model; its other entropy models (the factorized density of z, whose
            CDFs depend on the weights) are left as they are.
        table: scales; default :func:`scale_table`; built by :func:`build_gaussian_tables`.
        force: rebuild also where the tables are already built for ``table``.

    Returns:
        True if some Gaussian conditional was rebuilt.
    """
    table = scale_table() if table is None else table
    changed = False
    for gc in _conditionals(model):
        if force or not scale_table_matches(gc, table):
            build_gaussian_tables(gc, table)
            changed = True
    return changed
