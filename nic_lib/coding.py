"""Image <-> tensor and padding for the learned codecs: the one place that turns a uint8
image into a model's input and a model's output back into pixels.

A model of :mod:`nic_lib.models` takes (1, 3, H', W') float in [0, 1] whose sides are
multiples of its ``downsampling_factor`` (2^6 = 64 for the hyperprior family: four
stride-2 layers in g_a, two in h_a). The convention here, CompressAI's evaluation's:

- x = uint8 / 255 (:func:`to_tensor`), no other scaling;
- pad on the bottom and the right only, to the next multiple of the factor, by repeating
  the last row and column ("replicate"; :func:`pad_to`, :func:`pad_image`): the padded
  pixels are coded, the metrics use the original crop;
- back to pixels: keep the top-left H x W, v8 = round(255 · clamp(x, 0, 1))
  (:func:`from_tensor`, :func:`crop_to_image`).

Callers: :mod:`nic_lib.container` (the ``.nic`` file), :mod:`nic_lib.neural` (RD
sweeps), :mod:`nic_lib.models.calibration`, :mod:`nic_lib.models.pqmim`.

Callers not yet moved here (issue 27), each with its own rule:

- ``nic_lib.spectral.nic_codec`` pads with **zeros** to ``NIC_PAD_MULTIPLE`` = 64 and
  takes the rate from ``forward()``'s likelihoods, never checked against real bits;
- ``nic_lib.bench.NicCodec._input`` converts and pads by replication to 64 on its own
  (what :func:`pad_to` does), its ``_likelihood_code`` rounds the output on its own;
- ``nic_lib.models.calibration`` pads to a hard-coded 64, not the model's factor;
- the rate is three quantities today: the rANS payload (``neural.code_image``'s
  ``bpp``), the whole file (``container``'s ``NicHeader.bpp``), and ``forward()``'s
  likelihoods (``bench``, ``spectral``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nic_lib.codecs import check_image

__all__ = [
    "CROP_BAND_ROWS",
    "DEFAULT_DOWNSAMPLING_FACTOR",
    "crop_to_image",
    "downsampling_factor",
    "from_tensor",
    "model_device",
    "model_input",
    "pad_image",
    "pad_to",
    "padding",
    "to_tensor",
]

#: Factor assumed for a model that does not state its ``downsampling_factor``: the
#: hyperprior family's 2^6 (the largest stride of the models here).
DEFAULT_DOWNSAMPLING_FACTOR = 64
#: Rows of a decoded image converted to uint8 at a time by :func:`crop_to_image`.
CROP_BAND_ROWS = 256


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float (1, 3, H, W) in [0, 1].

    Raises:
        ValueError: ``img`` is not an (H, W, 3) uint8 array (:func:`nic_lib.codecs.check_image`).
    """
    img = check_image(img)
    # x = v8 / 255; a copy: inputs may be read-only
    return torch.tensor(img).permute(2, 0, 1)[None].float().div(255)


def from_tensor(x: torch.Tensor) -> np.ndarray:
    """float (1, 3, H, W) in [0, 1] -> uint8 (H, W, 3), rounded to nearest.

    For a decoder's output of any size, possibly NaN, use :func:`crop_to_image`.
    """
    # v8 = round(255 * clamp(x, 0, 1))
    return x.clamp(0, 1).mul(255).round().byte()[0].permute(1, 2, 0).cpu().numpy()


def padding(height: int, width: int, factor: int) -> tuple[int, int]:
    """Rows below and columns right of an image that make its sides multiples of ``factor``.

    Returns:
        ``(pad_bottom, pad_right)``, each in 0..factor-1.
    """
    # pad = (-side) mod factor: the distance to the next multiple
    return (-height) % factor, (-width) % factor


def pad_to(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Pad (N, C, H, W) on the bottom/right to multiples of ``factor`` (edge replication)."""
    ph, pw = padding(*x.shape[-2:], factor)
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


def pad_image(img: np.ndarray, factor: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Turn a uint8 image into a model's padded input, and say how much was added.

    Args:
        img: (H, W, 3) uint8 RGB.
        factor: pad H and W up to multiples of this (``model.downsampling_factor``).

    Returns:
        ``(x, (pad_bottom, pad_right))``: x is (1, 3, H + pad_bottom, W + pad_right)
        float32 in [0, 1], padded by repeating the last row and column.

    Raises:
        ValueError: ``img`` is not (H, W, 3) uint8.
    """
    x = to_tensor(img)
    return pad_to(x, factor), padding(*x.shape[-2:], factor)


def crop_to_image(x_hat: torch.Tensor, height: int, width: int) -> np.ndarray:
    """Turn a model's (1, 3, H', W') output into the uint8 image it stands for.

    Converts in bands of :data:`CROP_BAND_ROWS` rows, so the temporaries stay small for
    the largest images a ``.nic`` file may hold.

    Args:
        x_hat: decoder output in [0, 1] (NaN, which only garbage streams produce, -> 0).
        height, width: the unpadded size; the top-left corner is kept.

    Returns:
        (height, width, 3) uint8 RGB, rounded from x_hat * 255.
    """
    out = np.empty((height, width, 3), np.uint8)
    for top in range(0, height, CROP_BAND_ROWS):
        bottom = min(top + CROP_BAND_ROWS, height)
        x = torch.nan_to_num(x_hat[0, :, top:bottom, :width].detach().float().cpu(), nan=0.0)
        # v8 = round(255 * clamp(x, 0, 1))
        out[top:bottom] = (x.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return out


def downsampling_factor(model: nn.Module) -> int:
    """What a model's input sides must be multiples of (:data:`DEFAULT_DOWNSAMPLING_FACTOR`
    for a model that does not say)."""
    return int(getattr(model, "downsampling_factor", DEFAULT_DOWNSAMPLING_FACTOR))


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's parameters (CPU for a model without any)."""
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def model_input(model: nn.Module, img: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> (1, 3, H', W') on the model's device, padded to its factor."""
    return pad_to(to_tensor(img).to(model_device(model)), downsampling_factor(model))
