"""Power spectra of error images and their summaries: windows, :func:`power_spectrum`,
:func:`mean_power_spectrum`, :func:`error_power_spectrum`, the corruptions' own spectra,
:func:`spectral_centroid`, :func:`radial_profile` and :func:`band_energies`. Part of
:mod:`nic_lib.spectral`, whose docstring draws the maps; import from there.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.signal

from nic_lib import data


#: Window applied before the FFT. Hann: an image is not periodic, so its left/right and
#: top/bottom edges meet as a jump in the DFT, which leaks power along the axes ("the
#: cross"); a Hann taper removes the jump. None or "boxcar" keeps the raw periodogram
#: (exact Parseval).
DEFAULT_WINDOW = "hann"

#: ITU-R BT.601 luma weights, the Y of JPEG's and Pillow's YCbCr: what "luminance" means here.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)

#: What a spectrum is computed on: "luma" (Y of BT.601, one plane), "rgb" (the mean of the
#: three per-channel spectra, so its mean equals metrics.mse) or "per-channel" (3 maps).
CHANNELS = ("luma", "rgb", "per-channel")
#: Default: "rgb", the spectrum whose total is the MSE that PSNR-RGB reports.
DEFAULT_CHANNELS = "rgb"

#: Band edges as fractions of the Nyquist radius: low < 1/8 <= mid < 1/2 <= high.
#: 1/8 of Nyquist is a period of 16 px: slower than that are fog, contrast, brightness and
#: illumination changes; 1/8..1/2 (periods 4..16 px) holds blur kernels, JPEG's 8-px blocks
#: and edges; above 1/2 (periods < 4 px, up to the corner at sqrt(2)) is pixel-level noise
#: and fine texture. Share of the frequency plane: low 1.2 %, mid 18 %, high 80 %.
BAND_EDGES = (0.125, 0.5)
BANDS = ("low", "mid", "high")

#: Radial-profile bins: 32 annuli of width sqrt(2)/32 ~ 0.044 Nyquist; enough to see a
#: 1/f^alpha slope, wide enough that a 64x64 spectrum has pixels in every annulus.
DEFAULT_RADIAL_BINS = 32


# --------------------------------------------------------------------------- power spectra


def landscape(img: np.ndarray) -> np.ndarray:
    """Transpose a portrait image to landscape (the reference code's Kodak preprocessing).

    Spectra can only be averaged over images of one shape; Kodak has 18 landscape and 6
    portrait 768x512 images.

    Args:
        img: array (H, W, ...).

    Returns:
        ``img`` if H <= W, else its transpose (W, H, ...).
    """
    return img if img.shape[0] <= img.shape[1] else np.swapaxes(img, 0, 1)


def one_size_images(images: Iterable[tuple[str, np.ndarray]], crop: int | None = None
                    ) -> list[tuple[str, np.ndarray]]:
    """Images ready to average spectra over: landscape, centre-cropped, of one size.

    Args:
        images: ``(name, image)`` pairs (e.g. :func:`nic_lib.data.load_images`).
        crop: side of a centred square crop of each (None: whole images).

    Returns:
        The pairs turned landscape (:func:`landscape`) and cropped, keeping only those of
        the first one's size (Kodak's 24 images all have one size once landscape).

    Raises:
        ValueError: an image smaller than ``crop``.
    """
    out = [(name, landscape(img)) for name, img in images]
    if crop:
        out = [(name, data.centre_crop(img, crop)) for name, img in out]
    return [(name, img) for name, img in out if img.shape == out[0][1].shape]


def luminance(img: np.ndarray) -> np.ndarray:
    """BT.601 luma Y = 0.299 R + 0.587 G + 0.114 B of an RGB array, as float64.

    Args:
        img: array (H, W, 3) (uint8 or float, or a signed difference image).

    Returns:
        float64 array (H, W), same scale as the input.
    """
    img = np.asarray(img, dtype=np.float64)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an RGB array (H, W, 3), got shape {img.shape}")
    return img @ np.asarray(LUMA_WEIGHTS)


def window_2d(height: int, width: int, window: str | None = DEFAULT_WINDOW) -> np.ndarray:
    """A separable 2-D spectral window scaled to mean(w^2) = 1.

    With that scaling the windowed periodogram of white noise has the same expected level
    as the unwindowed one, so spectra with and without a window share units.

    Args:
        height, width: image size.
        window: a ``scipy.signal.get_window`` name (``"hann"``, ``"hamming"``, ...); None
            or ``"boxcar"`` for no window.

    Returns:
        float64 array (height, width).
    """
    if window is None or window == "boxcar":
        return np.ones((height, width))
    # periodic windows (scipy's default, fftbins=True) are the ones meant for spectra
    w = np.outer(scipy.signal.get_window(window, height), scipy.signal.get_window(window, width))
    # rescale so that mean(w^2) = 1
    return w / np.sqrt(np.mean(w * w))


def _planes(diff: np.ndarray, channels: str) -> np.ndarray:
    diff = np.asarray(diff, dtype=np.float64)
    if channels not in CHANNELS:
        raise ValueError(f"channels must be one of {CHANNELS}, got {channels!r}")
    if diff.ndim == 2:
        return diff[None]
    if diff.ndim != 3 or diff.shape[2] != 3:
        raise ValueError(f"expected an image (H, W) or (H, W, 3), got shape {diff.shape}")
    if channels == "luma":
        return luminance(diff)[None]
    return np.moveaxis(diff, 2, 0)


def power_spectrum(diff: np.ndarray, window: str | None = DEFAULT_WINDOW, channels: str = DEFAULT_CHANNELS
                   ) -> np.ndarray:
    """Power spectrum |F|^2 / (H W) of one (difference) image, zero frequency centred.

    The difference is transformed as it is, in float: **it is not rounded first**. The
    OOD-NIC reference code divides the RGB difference by the dataset's standard deviation
    (about 55 grey levels for natural images), *rounds that normalised difference* (so in
    steps of ~55 grey levels: every error smaller than ~27 grey levels becomes zero), then
    converts it to greyscale and averages the magnitude |F| of its FFT, not the power
    |F|^2. Rounding erases exactly the small, spread-out errors of a good codec (and most
    of a high-frequency error's power), and |F| is not additive over frequencies, so its
    maps have no MSE to add up to. Here: the unrounded difference (a codec's error is
    uint8 - uint8, an integer already; a corruption's shift and the luma mix of an error
    are not), and the power |F|^2, whose mean is the MSE (Parseval, below).

    Normalisation (Parseval, numpy's unnormalised FFT): sum_k |F_k|^2 = H W sum_n |x_n|^2,
    so with P = |F|^2 / (H W) and no window, mean(P) = mean(x^2): the spectrum's mean is
    the MSE, and a band's share of the sum is its share of the MSE.

    Args:
        diff: image or difference image (H, W) or (H, W, 3), any real dtype, 0..255 scale.
        window: see :func:`window_2d` (default Hann; None for the exact periodogram).
        channels: ``"luma"``, ``"rgb"`` (mean of the channel spectra) or ``"per-channel"``
            (ignored for a 2-D input).

    Returns:
        float64 (H, W) for "luma"/"rgb", (3, H, W) for "per-channel"; index [H//2, W//2]
        is the zero frequency (``np.fft.fftshift`` layout).

    Raises:
        ValueError: for a bad shape or an unknown ``channels``.
    """
    planes = _planes(diff, channels)
    h, w = planes.shape[-2:]
    planes = planes * window_2d(h, w, window)
    # P_k = |F_k|^2 / (H W)
    spectra = np.abs(np.fft.fft2(planes)) ** 2 / (h * w)
    spectra = np.fft.fftshift(spectra, axes=(-2, -1))
    if channels == "per-channel" and planes.shape[0] == 3:
        return spectra
    return spectra.mean(axis=0)


def mean_power_spectrum(images: Iterable[np.ndarray], window: str | None = DEFAULT_WINDOW,
                        channels: str = DEFAULT_CHANNELS) -> np.ndarray:
    """Power spectrum averaged over a dataset of (difference) images of one shape.

    Args:
        images: arrays (H, W) or (H, W, 3), all the same shape (use :func:`landscape` for
            Kodak's portrait images, or crop).
        window, channels: as in :func:`power_spectrum`.

    Returns:
        The mean of the per-image spectra.

    Raises:
        ValueError: if there are no images or their shapes differ.
    """
    total, count, shape = None, 0, None
    for img in images:
        spec = power_spectrum(img, window, channels)
        if shape is None:
            shape, total = np.shape(img), np.zeros_like(spec)
        elif np.shape(img) != shape:
            raise ValueError(
                f"images differ in shape ({np.shape(img)} vs {shape}): spectra can only be averaged "
                "over one size; transpose portraits with nic_lib.spectral.landscape or crop all images alike"
            )
        total += spec
        count += 1
    if count == 0:
        raise ValueError("no images given: pass at least one (difference) image")
    return total / count


def _diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}; compare images of one size")
    return a.astype(np.float64) - b.astype(np.float64)


def error_power_spectrum(references: Sequence[np.ndarray], reconstructions: Sequence[np.ndarray],
                         window: str | None = DEFAULT_WINDOW, channels: str = DEFAULT_CHANNELS) -> np.ndarray:
    """Mean power spectrum of ``reconstruction - reference`` over a dataset.

    The clean error spectrum is ``error_power_spectrum(x, x_hat)``; the spectrum of a
    corruption itself is ``error_power_spectrum(x, c_x)``; see :func:`ood_error_spectra`
    for the two OOD maps.

    Args:
        references: images the error is measured against, uint8 (H, W, 3) (one shape).
        reconstructions: the images compared with them, same order and shape.
        window, channels: as in :func:`power_spectrum`.

    Returns:
        float64 spectrum, zero frequency centred (see :func:`power_spectrum`).

    Raises:
        ValueError: if the lists differ in length or images differ in shape.
    """
    if len(references) != len(reconstructions):
        raise ValueError(f"{len(references)} references but {len(reconstructions)} reconstructions; pair them one to one")
    return mean_power_spectrum((_diff(r, x) for x, r in zip(references, reconstructions)), window, channels)


def ood_error_spectra(clean: Sequence[np.ndarray], corrupted: Sequence[np.ndarray],
                      reconstructed: Sequence[np.ndarray], window: str | None = DEFAULT_WINDOW,
                      channels: str = DEFAULT_CHANNELS) -> dict[str, np.ndarray]:
    """The three spectra of a corruption: the shift, the error vs corrupted, the error vs clean.

    Args:
        clean: images x. corrupted: c(x). reconstructed: x_hat(c(x)), the codec's output
            for the corrupted input. All uint8 (H, W, 3) of one shape, same order.
        window, channels: as in :func:`power_spectrum`.

    Returns:
        ``{"shift": P[c(x) - x], "vs_corrupted": P[x_hat(c(x)) - c(x)],
        "vs_clean": P[x_hat(c(x)) - x]}``.
    """
    return {
        "shift": error_power_spectrum(clean, corrupted, window, channels),
        "vs_corrupted": error_power_spectrum(corrupted, reconstructed, window, channels),
        "vs_clean": error_power_spectrum(clean, reconstructed, window, channels),
    }


def corruption_spectra(clean: Sequence[np.ndarray], corrupted: Mapping[str, Sequence[np.ndarray]],
                       window: str | None = DEFAULT_WINDOW, channels: str = DEFAULT_CHANNELS,
                       relative: bool = True) -> dict[str, np.ndarray]:
    """The corruptions' own spectra: the mean power spectrum of ``c(x) − x`` for each corruption.

    The basis of the OOD-NIC paper's low/mid/high grouping (after Yin et al. 2019, who
    average the Fourier spectrum of the same difference over a dataset)::

        S_c(f) = (1/N) Σ_n P[c(x_n) − x_n](f)                  (relative=False)
        S_c(f) / mean_f S_c(f)                                  (relative=True)

    with P of :func:`power_spectrum`. The relative spectrum has mean 1 over the frequency
    plane: white noise is flat at 1 whatever its strength, and corruptions of very different
    MSE share one colour scale, which then shows *where* each one's power lies.

    Args:
        clean: images x, uint8 (H, W, 3) of one shape.
        corrupted: corruption name -> its images c(x), in the order of ``clean``.
        window, channels: as in :func:`power_spectrum`.
        relative: divide each spectrum by its mean (default); False keeps grey levels².

    Returns:
        name -> float64 (H, W) spectrum, zero frequency centred; an all-zero spectrum (a
        corruption that changed nothing) stays zero.
    """
    out = {}
    for name, images in corrupted.items():
        spec = error_power_spectrum(clean, images, window, channels)
        mean = spec.mean()
        out[name] = spec / mean if relative and mean > 0 else spec
    return out


def spectral_centroid(spectrum: np.ndarray) -> float:
    """Power-weighted mean radial frequency of a spectrum, in Nyquist units.

    r̄ = Σ_f r(f) P(f) / Σ_f P(f), with r of :func:`radial_frequency`: one number for
    where a spectrum's power lies (white noise: the plane's mean radius, ~0.77; a
    brightness change: near 0). NaN for an all-zero spectrum.
    """
    spectrum = np.asarray(spectrum, dtype=np.float64)
    total = spectrum.sum()
    if total <= 0:
        return float("nan")
    # r̄ = Σ r P / Σ P
    return float((radial_frequency(spectrum.shape) * spectrum).sum() / total)


# --------------------------------------------------------------------------- summaries


def radial_frequency(shape: tuple[int, int]) -> np.ndarray:
    """Radial frequency of every bin of an fftshift-ed (H, W) spectrum, in units of Nyquist.

    r = sqrt(fy^2 + fx^2) / 0.5 with f in cycles per pixel: 0 at the centre, 1 at the
    edge midpoints, sqrt(2) in the corners.

    Args:
        shape: (H, W) of the spectrum.

    Returns:
        float64 (H, W).
    """
    h, w = shape[-2:]
    fy = np.fft.fftshift(np.fft.fftfreq(h))[:, None]
    fx = np.fft.fftshift(np.fft.fftfreq(w))[None, :]
    return np.sqrt(fy**2 + fx**2) / 0.5


def radial_profile(spectrum: np.ndarray, bins: int = DEFAULT_RADIAL_BINS) -> pd.DataFrame:
    """Mean power in annuli of equal width from 0 to the corner (sqrt(2) Nyquist).

    Args:
        spectrum: (H, W) spectrum, zero frequency centred.
        bins: number of annuli.

    The annuli past radius 1 hold only the corners of the frequency plane (both |fx| and
    |fy| high), fewer bins the closer to sqrt(2); the last one is a few hundred bins around
    the corner (1/2, 1/2) cycles per pixel, a one-pixel checkerboard. Where an image holds a
    faint checkerboard (Kodak's scans do: 100-4000x the power of its neighbours in the
    corner bin) and a codec drops it, that one bin lifts the last annulus's mean: a jump at
    the end of an error profile is the image's, not the codec's.

    Returns:
        DataFrame with columns ``radius`` (annulus centre, Nyquist units), ``power`` (mean
        power in the annulus, in the spectrum's units: grey levels² per frequency bin for
        :func:`power_spectrum`, whose mean over the plane is the MSE; NaN if it holds no
        frequency bin) and ``count`` (bins in it).
    """
    spectrum = np.asarray(spectrum, dtype=np.float64)
    r = radial_frequency(spectrum.shape).ravel()
    edges = np.linspace(0.0, math.sqrt(2.0), bins + 1)
    index = np.clip(np.digitize(r, edges) - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    total = np.bincount(index, weights=spectrum.ravel(), minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        power = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return pd.DataFrame({"radius": (edges[:-1] + edges[1:]) / 2, "power": power, "count": count})


def band_of(radius: np.ndarray, edges: tuple[float, float] = BAND_EDGES) -> np.ndarray:
    """Band index (0 low, 1 mid, 2 high) of radial frequencies in Nyquist units."""
    return np.digitize(radius, edges)


def band_energies(spectrum: np.ndarray, edges: tuple[float, float] = BAND_EDGES) -> dict[str, float]:
    """Each band's contribution to the spectrum's mean (= the MSE for an error spectrum).

    E_band = (1 / (H W)) * sum_{k in band} P_k, so E_low + E_mid + E_high = mean(P), which
    is the MSE of an unwindowed error spectrum (Parseval, see :func:`power_spectrum`).

    Args:
        spectrum: (H, W) spectrum, zero frequency centred.
        edges: (low/mid, mid/high) cut-offs in Nyquist units; default :data:`BAND_EDGES`.

    Returns:
        ``{"low": E_low, "mid": E_mid, "high": E_high}``.
    """
    spectrum = np.asarray(spectrum, dtype=np.float64)
    band = band_of(radial_frequency(spectrum.shape), edges)
    return {name: float(spectrum[band == k].sum() / spectrum.size) for k, name in enumerate(BANDS)}
