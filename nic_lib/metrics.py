"""Image-quality and rate metrics: PSNR, MS-SSIM and bits per pixel.

Every function takes 8-bit RGB images as ``numpy`` arrays of shape (H, W, 3) and dtype
``uint8`` (what :func:`nic_lib.data.load_image` returns), or float arrays already on the
0..255 scale. This module imports nothing else from the project.
"""

from __future__ import annotations

import numpy as np
import torch
from pytorch_msssim import ms_ssim as _ms_ssim

#: Peak value of 8-bit images; PSNR and MS-SSIM are computed on the 0..255 scale.
DATA_RANGE = 255.0

#: MS-SSIM downsamples four times by 2 and filters with an 11-tap Gaussian at the
#: coarsest scale, so each side must exceed (11 - 1) * 2**4 = 160 pixels.
MS_SSIM_MIN_SIDE = 161


def _check_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(
            f"images differ in shape: {a.shape} vs {b.shape}; compare a reconstruction with "
            "the image that was encoded (crop or pad both the same way first)"
        )
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(
            f"expected RGB images of shape (H, W, 3), got {a.shape}; load images with "
            "nic_lib.data.load_image, which converts grayscale/RGBA/16-bit to 8-bit RGB"
        )
    return a, b


def mse(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared error over all pixels and the three RGB channels (0..255 scale).

    Args:
        a, b: images of equal shape (H, W, 3).

    Returns:
        MSE = (1 / 3HW) * sum (a - b)^2.

    Raises:
        ValueError: if shapes differ or the images are not RGB.
    """
    a, b = _check_pair(a, b)
    diff = a.astype(np.float64) - b.astype(np.float64)
    return float(np.mean(diff * diff))


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = DATA_RANGE) -> float:
    """Peak signal-to-noise ratio over RGB, as the compression literature reports it.

    PSNR = 10 log10(peak^2 / MSE), with MSE pooled over the three channels of one image
    (not the mean of per-channel PSNRs). Dataset-level PSNR is the mean of per-image PSNR,
    as in CompressAI's and the papers' Kodak numbers.

    Args:
        a, b: images of equal shape (H, W, 3) on the 0..``data_range`` scale.
        data_range: peak value (255 for 8-bit images).

    Returns:
        PSNR in dB; ``inf`` when the images are identical.

    Raises:
        ValueError: if shapes differ or the images are not RGB.
    """
    err = mse(a, b)
    if err == 0.0:
        return float("inf")
    # PSNR = 10 log10(MAX^2 / MSE)
    return float(10.0 * np.log10(data_range**2 / err))


def ms_ssim(a: np.ndarray, b: np.ndarray, data_range: float = DATA_RANGE) -> float:
    """Multi-scale SSIM (Wang et al. 2003) over RGB, computed by ``pytorch-msssim``.

    Uses the standard five scales and weights; the three channels are treated as a batch of
    channels and averaged, the convention of CompressAI's evaluation.

    Args:
        a, b: images of equal shape (H, W, 3), each side at least 161 pixels.
        data_range: peak value (255 for 8-bit images).

    Returns:
        MS-SSIM in [0, 1] (1 for identical images).

    Raises:
        ValueError: if shapes differ, the images are not RGB, or a side is shorter than
            161 pixels (MS-SSIM is undefined there: crop less, or use PSNR).
    """
    a, b = _check_pair(a, b)
    h, w = a.shape[:2]
    if min(h, w) < MS_SSIM_MIN_SIDE:
        raise ValueError(
            f"MS-SSIM needs both sides >= {MS_SSIM_MIN_SIDE} px (5 scales, 11-tap filter), "
            f"got {h}x{w}; use larger images or report PSNR only"
        )
    ta = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).permute(2, 0, 1)[None]
    tb = torch.from_numpy(np.ascontiguousarray(b, dtype=np.float32)).permute(2, 0, 1)[None]
    with torch.no_grad():
        return float(_ms_ssim(ta, tb, data_range=data_range, size_average=True))


def ms_ssim_db(value: float) -> float:
    """MS-SSIM on a decibel scale, -10 log10(1 - MS-SSIM), as plotted in the mbt2018 paper."""
    if value >= 1.0:
        return float("inf")
    return float(-10.0 * np.log10(1.0 - value))


def bpp(num_bytes: int, height: int, width: int) -> float:
    """Bits per pixel of a bitstream: 8 * bytes / (H * W).

    Args:
        num_bytes: length of the real, decodable bitstream (headers included).
        height, width: size of the *original* image (not a padded one).

    Raises:
        ValueError: for non-positive sizes or a negative byte count.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if num_bytes < 0:
        raise ValueError(f"byte count must be >= 0, got {num_bytes}")
    return 8.0 * num_bytes / (height * width)
