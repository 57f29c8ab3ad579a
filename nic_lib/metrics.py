"""Image-quality and rate metrics: PSNR, MS-SSIM and bits per pixel.

Every function takes 8-bit RGB images as ``numpy`` arrays of shape (H, W, 3) and dtype
``uint8`` (what :func:`nic_lib.data.load_image` returns), or float arrays already on the
0..255 scale. This module imports nothing else from the project.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import correlate1d

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
    """Multi-scale SSIM (Wang et al. 2003) over RGB, as ``pytorch-msssim`` computes it.

    Uses the standard five scales and weights; the three channels are treated as a batch of
    channels and averaged, the convention of CompressAI's evaluation. Computed by
    :func:`ms_ssim_many` (equal to ``pytorch_msssim.ms_ssim`` within 1e-5, tested).

    Args:
        a, b: images of equal shape (H, W, 3), each side at least 161 pixels.
        data_range: peak value (255 for 8-bit images).

    Returns:
        MS-SSIM in [0, 1] (1 for identical images).

    Raises:
        ValueError: if shapes differ, the images are not RGB, or a side is shorter than
            161 pixels (MS-SSIM is undefined there: crop less, or use PSNR).
    """
    return ms_ssim_many(a, [b], data_range)[0]


#: MS-SSIM's constants (Wang et al. 2003; pytorch-msssim's defaults): an 11-tap Gaussian
#: window of σ = 1.5, K1 = 0.01, K2 = 0.03, and the five scale weights.
MS_SSIM_WINDOW, MS_SSIM_SIGMA, MS_SSIM_K = 11, 1.5, (0.01, 0.03)
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _gauss_window() -> np.ndarray:
    coords = np.arange(MS_SSIM_WINDOW, dtype=np.float64) - MS_SSIM_WINDOW // 2
    g = np.exp(-(coords**2) / (2 * MS_SSIM_SIGMA**2))
    return g / g.sum()


def _blur(x: np.ndarray) -> np.ndarray:
    """Valid (unpadded) separable Gaussian filtering of (..., H, W) along H and W."""
    g, r = _gauss_window(), MS_SSIM_WINDOW // 2
    out = correlate1d(x, g, axis=-1, mode="constant")[..., r:-r]
    return correlate1d(out, g, axis=-2, mode="constant")[..., r:-r, :]


def _downsample(x: np.ndarray) -> np.ndarray:
    """pytorch-msssim's 2x average pooling (odd sides padded by one, pad counted)."""
    t = torch.from_numpy(x)[None]
    return F.avg_pool2d(t, kernel_size=2, padding=[s % 2 for s in x.shape[1:]])[0].numpy()


def ms_ssim_many(reference: np.ndarray, images, data_range: float = DATA_RANGE) -> list[float]:
    """MS-SSIM of each of ``images`` against one ``reference``, sharing the reference's work.

    The evaluation grids compare several reconstructions (one per rate point) with the same
    input; the reference's local means and variances at every scale are computed once. Per
    scale j (images downsampled j times by 2), with Gaussian-weighted local statistics μ, σ²
    and σ_xy over an 11x11 window (valid region only):

        cs_j   = mean[(2 σ_xy + C2) / (σ_x² + σ_y² + C2)]
        ssim_j = mean[(2 μ_x μ_y + C1) / (μ_x² + μ_y² + C1) · (2 σ_xy + C2) / (σ_x² + σ_y² + C2)]
        MS-SSIM = Π_{j<4} max(cs_j, 0)^{w_j} · max(ssim_4, 0)^{w_4}      per channel, then averaged

    with C1 = (K1·R)², C2 = (K2·R)², R = ``data_range``. Computed in float32 as
    ``pytorch-msssim`` does (whose value it reproduces within 1e-5, tested), but filtering
    through ``scipy.ndimage`` rather than grouped convolutions, which are slow on CPU.

    Args:
        reference: (H, W, 3), each side at least 161 pixels.
        images: iterable of arrays shaped like ``reference``.
        data_range: peak value (255 for 8-bit images).

    Returns:
        One MS-SSIM per image, in order.

    Raises:
        ValueError: as :func:`ms_ssim`.
    """
    images = list(images)
    for b in images:
        _check_pair(reference, b)
    h, w = np.asarray(reference).shape[:2]
    if min(h, w) < MS_SSIM_MIN_SIDE:
        raise ValueError(
            f"MS-SSIM needs both sides >= {MS_SSIM_MIN_SIDE} px (5 scales, 11-tap filter), "
            f"got {h}x{w}; use larger images or report PSNR only"
        )
    c1 = (MS_SSIM_K[0] * data_range) ** 2
    c2 = (MS_SSIM_K[1] * data_range) ** 2
    x = np.ascontiguousarray(np.asarray(reference, dtype=np.float32).transpose(2, 0, 1))
    ys = [np.ascontiguousarray(np.asarray(b, dtype=np.float32).transpose(2, 0, 1)) for b in images]
    levels = len(MS_SSIM_WEIGHTS)
    factors = np.ones((len(ys), 3))
    for j in range(levels):
        mu_x, ex2 = _blur(np.stack([x, x * x]))
        var_x = ex2 - mu_x**2
        for k, y in enumerate(ys):
            mu_y, ey2, exy = _blur(np.stack([y, y * y, x * y]))  # one filtering pass for the three maps
            var_y = ey2 - mu_y**2
            cov = exy - mu_x * mu_y
            cs_map = (2 * cov + c2) / (var_x + var_y + c2)
            if j < levels - 1:
                value = cs_map.mean(axis=(1, 2), dtype=np.float64)
            else:
                luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
                value = (luminance * cs_map).mean(axis=(1, 2), dtype=np.float64)
            factors[k] *= np.maximum(value, 0.0) ** MS_SSIM_WEIGHTS[j]
            if j < levels - 1:
                ys[k] = _downsample(y)
        if j < levels - 1:
            x = _downsample(x)
    return [float(f.mean()) for f in factors]


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
