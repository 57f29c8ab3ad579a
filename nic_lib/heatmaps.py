"""Fourier heat maps of codecs (Yin et al. 2019, as the OOD-NIC paper runs them).

A Fourier heat map asks, frequency by frequency, what a codec does to a small plane wave
added to its input. For every crop x (uint8, centre crop of side ``crop``) and computed
frequency (i, j)::

    x_tilde = clip(round(255 (x/255 + r eps U_ij)))       r = +-1 at random, the same U in each channel
    x_hat   = codec(x_tilde)

where U_ij is the L2-normalised real Fourier basis image of frequency (i step, j step)
cycles per crop (:func:`fourier_basis`) and eps its norm on the [0, 1] scale. Two errors,
the paper's two measures, in grey levels^2 per pixel and channel::

    generalization  G_ij = MSE(x_hat, x_tilde) - MSE(codec(x), x)     against the perturbed input
    robustness      R_ij = MSE(x_hat, x)       - MSE(codec(x), x)     against the clean image

both relative to the codec's error on the unperturbed crop, and :func:`heatmap_array`
maps them divided by the perturbation's own energy ``E = MSE(x_tilde, x)`` (about
(255 eps)^2 / crop^2: 3.97 grey levels^2 at eps 4 on 512x512). So an identity codec has
G = 0 and R = E (ratio 1); a codec that removes the wave entirely and is otherwise
unchanged has G = E and R = 0; a codec that passes the wave through, as it passes the
image, stays near G = 0, R = 1. PSNR against x_tilde and x is kept in the table as well
(the reference code records PSNR and bpp).

The reference (klieberman/ood_nic) perturbs 512x512 centre crops of every test image at
each of the 64x33 lowest frequencies (the half-plane of the 64x64 window around zero,
mirrored: U_ij = U_-i-j), eps = 4: 2,112 codec runs per image, 50,688 for Kodak.
:class:`HeatmapSetting` names a window, a stride over it and a number of crops, counts
the codec runs and, with :func:`seconds_per_call`, the time; :data:`REFERENCE_SETTING`
is the paper's, and :meth:`HeatmapSetting.versus` says how another differs from it.

Codecs are the codec callables of :mod:`nic_lib.spectral` (:func:`nic_lib.spectral.classic_codec`,
:func:`nic_lib.spectral.nic_codec`). numpy's FFT builds the basis images; the sampling,
bookkeeping and measures are written here because no library does them. This module
imports :mod:`nic_lib.codecs`, :mod:`nic_lib.data`, :mod:`nic_lib.metrics` and
:mod:`nic_lib.spectral` from the project; the figure is :func:`nic_lib.plotting.heatmap_rows`
(kept out of here so that a change to a figure does not invalidate cached maps, whose cache
key holds this module's code).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from nic_lib import codecs, data, metrics
from nic_lib.spectral import CodecFn

#: Fourier heat map grid: 32x32 frequencies (the issue's 32x17 half-plane).
DEFAULT_HEATMAP_GRID = 32
#: Perturbation norm on the [0, 1] image scale, per channel, as in the reference code
#: (eps = 4, Yin et al.'s CIFAR value). Peak amplitude = eps * sqrt(2 / (H W)): on a
#: 256x256 crop 5.6 grey levels, on 512x512 2.8.
DEFAULT_EPS = 4.0
#: Side of the square centre crop of the whole-spectrum map (notebook 03, figure 5). 256: a
#: multiple of 64 (NIC padding), 4x fewer pixels than the reference's 512 so a map fits the
#: CPU budget. The paper-setting map uses :data:`REFERENCE_SETTING`'s 512.
DEFAULT_CROP = 256
#: Seed of the random signs (one per crop x frequency, drawn from (seed, crop, i, j)).
DEFAULT_SEED = 0
#: Perturbed images per codec call: one NIC forward over 16 256x256 crops stays < 1 GB
#: (16 512x512 crops: ~3 GB for the cpu-profile mbt2018).
DEFAULT_BATCH = 16

#: Columns of the tidy table fourier_heatmap returns (one row per crop x frequency). ``mse``
#: is against the perturbed input, ``mse_clean`` against the clean crop, ``mse_perturbation``
#: the energy of the (rounded) perturbation itself, MSE(x_tilde, x).
HEATMAP_COLUMNS = ("crop", "i", "j", "fy", "fx", "radius", "sign", "bpp", "psnr", "psnr_clean",
                   "mse", "mse_clean", "mse_perturbation", "bpp_unperturbed", "psnr_unperturbed",
                   "mse_unperturbed", "step", "size", "eps")

#: The two measures of :func:`add_measures`: column -> what it is in the paper's words.
MEASURES = {"generalization": "generalization: error vs the perturbed input",
            "robustness": "robustness: error vs the clean image"}


# --------------------------------------------------------------------------- frequencies


def fourier_basis(height: int, width: int, fy: int, fx: int) -> np.ndarray:
    """The real Fourier basis image U of frequency (fy, fx) cycles per image, ||U||_2 = 1.

    U = Re(IFFT(delta_(fy,fx) + delta_(-fy,-fx))) / norm, a 2-D cosine of frequency
    (fy/H, fx/W) cycles per pixel (Yin et al. 2019); U_(fy,fx) = U_(-fy,-fx).

    Args:
        height, width: image size.
        fy, fx: integer frequencies (cycles per image height / width), any sign.

    Returns:
        float64 (height, width) with unit L2 norm.
    """
    spec = np.zeros((height, width), dtype=np.complex128)
    spec[fy % height, fx % width] = 1.0
    spec[-fy % height, -fx % width] = 1.0
    u = np.real(np.fft.ifft2(spec))
    return u / np.linalg.norm(u)


def heatmap_frequencies(grid: int = DEFAULT_HEATMAP_GRID, step: int = 1, size: int | None = None
                        ) -> tuple[list[tuple[int, int]], dict[tuple[int, int], tuple[int, int]]]:
    """The half-plane of a grid x grid Fourier heat map: which frequencies to compute.

    The map covers grid indices (i, j) in [-grid/2, grid/2)^2, image frequency
    (i step, j step). Since U_(i,j) = U_(-i,-j), only one of each mirror pair is computed
    (the half-plane, ``grid * (grid/2 + 1)`` frequencies when no two grid points alias:
    32 x 17 = 544 for grid 32) and the map is filled by mirroring.

    Args:
        grid: even number of frequencies per axis.
        step: frequency spacing in cycles per image (1 = the lowest frequencies, as the
            reference code does; ``size // grid`` spreads the grid up to Nyquist).
        size: crop side, for recognising frequencies that alias (None: no aliasing check).

    Returns:
        ``(computed, source)``: the (i, j) to run, and for every map cell (i, j) the
        computed (i, j) whose value it takes.

    Raises:
        ValueError: for an odd or non-positive grid.
    """
    if grid < 2 or grid % 2:
        raise ValueError(f"grid must be an even number >= 2, got {grid}")
    half = grid // 2

    def key(i: int, j: int) -> tuple[int, int]:
        # the basis image's identity: its frequency pair, reduced modulo the image size
        fy, fx = i * step, j * step
        if size:
            fy, fx = fy % size, fx % size
            return min((fy, fx), ((-fy) % size, (-fx) % size))
        return min((fy, fx), (-fy, -fx))

    computed, source, seen = [], {}, {}
    # scan with j >= 0 first so the computed set is the right half-plane where possible
    cells = [(i, j) for j in range(0, half) for i in range(-half, half)] + [(i, -half) for i in range(-half, half)]
    cells += [(i, j) for j in range(-half + 1, 0) for i in range(-half, half)]
    for i, j in cells:
        k = key(i, j)
        if k not in seen:
            seen[k] = (i, j)
            computed.append((i, j))
        source[(i, j)] = seen[k]
    return computed, source


# --------------------------------------------------------------------------- settings and budget


@dataclass(frozen=True)
class HeatmapSetting:
    """Which frequencies and crops a heat map covers, and what that costs in codec calls.

    The map covers the ``window`` x ``window`` lowest frequencies (-window/2 .. window/2 - 1
    cycles per crop on each axis), every ``stride``-th of them: a grid of
    ``window / stride`` cells per axis, at frequencies ``k * stride``.

    Attributes:
        window: lowest frequencies per axis (even multiple of ``stride``).
        stride: computed every ``stride`` cycles per crop (1: every frequency).
        crop: side of the square centre crop.
        images: number of crops averaged.
        eps: perturbation norm on the [0, 1] scale.
    """

    window: int
    stride: int
    crop: int
    images: int
    eps: float = DEFAULT_EPS

    def __post_init__(self):
        if self.stride < 1 or self.window % self.stride or (self.window // self.stride) % 2:
            raise ValueError(f"window {self.window} must be an even multiple of stride {self.stride}")
        if self.window > self.crop:
            raise ValueError(f"window {self.window} exceeds the crop's {self.crop} frequencies")

    @property
    def grid(self) -> int:
        """Cells per axis of the map."""
        return self.window // self.stride

    @property
    def frequencies(self) -> int:
        """Distinct frequencies computed per crop (the half-plane, :func:`heatmap_frequencies`)."""
        return len(heatmap_frequencies(self.grid, self.stride, self.crop)[0])

    @property
    def calls(self) -> int:
        """Codec runs of one map: every computed frequency of every crop, plus each unperturbed crop."""
        return self.images * (self.frequencies + 1)

    @property
    def max_cycles_per_pixel(self) -> float:
        """The window's edge in cycles per pixel: (window / 2) / crop."""
        return self.window / 2 / self.crop

    def seconds(self, seconds_per_call: float) -> float:
        """Time of one map: ``calls * seconds_per_call``."""
        return self.calls * float(seconds_per_call)

    def describe(self) -> str:
        """One line: window, stride, grid, crops, codec runs."""
        every = "every frequency" if self.stride == 1 else f"every {self.stride}nd" if self.stride == 2 else f"every {self.stride}th"
        return (f"{self.window}x{self.window} lowest frequencies (|f| <= {self.max_cycles_per_pixel:.3g} cycles/px), "
                f"{every} ({self.grid}x{self.grid} grid, {self.frequencies} computed), {self.images} crop(s) of "
                f"{self.crop}x{self.crop}, eps {self.eps:g}: {self.calls:,} codec runs")

    def versus(self, reference: "HeatmapSetting") -> str:
        """How this setting differs from ``reference`` (e.g. :data:`REFERENCE_SETTING`), in words."""
        diffs = []
        if self.window != reference.window or self.crop != reference.crop:
            diffs.append(f"window {self.window} of {self.crop} px (reference {reference.window} of {reference.crop}: "
                         f"up to {self.max_cycles_per_pixel:.3g} vs {reference.max_cycles_per_pixel:.3g} cycles/px)")
        if self.stride != reference.stride:
            diffs.append(f"every {self.stride} cycles per crop instead of every {reference.stride} "
                         f"({self.frequencies} frequencies instead of {reference.frequencies})")
        if self.images != reference.images:
            diffs.append(f"{self.images} crop{'s' if self.images != 1 else ''} instead of {reference.images}")
        if self.eps != reference.eps:
            diffs.append(f"eps {self.eps:g} instead of {reference.eps:g}")
        ratio = reference.calls / self.calls
        return ("; ".join(diffs) or "the same setting") + (f": {ratio:.1f}x fewer codec runs" if ratio > 1 else "")


#: The reference code's setting: the 64x64 lowest frequencies (64x33 half-plane) on 512x512
#: centre crops of all 24 Kodak images, eps 4.
REFERENCE_SETTING = HeatmapSetting(window=64, stride=1, crop=512, images=24, eps=DEFAULT_EPS)


def seconds_per_call(codec: CodecFn, image: np.ndarray, crop: int, calls: int = 3) -> float:
    """Wall time of one codec call on one ``crop`` x ``crop`` centre crop (median of ``calls``, after a warm-up).

    What :class:`HeatmapSetting` budgets with; measures this machine now (its load included).

    Args:
        codec: a codec callable. image: uint8 (H, W, 3), at least ``crop`` on both sides.
        crop: side of the centre crop. calls: timed calls.

    Returns:
        Seconds per call (one image per call).
    """
    x = data.centre_crop(codecs.check_image(image), crop)[None]
    codec(x)  # warm-up: a NIC's first call also checks its rate estimate against real bits
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        codec(x)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


# --------------------------------------------------------------------------- the map


def fourier_heatmap(images: Sequence[np.ndarray], codec: CodecFn, grid: int = DEFAULT_HEATMAP_GRID,
                    eps: float = DEFAULT_EPS, crop: int = DEFAULT_CROP, step: int | None = None,
                    seed: int = DEFAULT_SEED, batch: int = DEFAULT_BATCH, progress: bool = False) -> pd.DataFrame:
    """Fourier heat map of a codec (Yin et al. 2019, as in the OOD-NIC paper): one row per crop x frequency.

    For every crop x (centred, ``crop`` x ``crop``) and computed frequency (i, j) of
    :func:`heatmap_frequencies`::

        x_tilde = clip(round(255 * (x/255 + r * eps * U_ij)))     r = +-1 at random, per channel alike
        x_hat, bpp = codec(x_tilde)
        psnr = PSNR(x_hat, x_tilde),   psnr_clean = PSNR(x_hat, x)
        mse  = MSE(x_hat, x_tilde),    mse_clean  = MSE(x_hat, x),   mse_perturbation = MSE(x_tilde, x)

    U_ij is :func:`fourier_basis` at image frequency (i step, j step); eps is its L2 norm on
    the [0, 1] scale in each channel. The unperturbed crop is coded once too
    (``*_unperturbed`` columns) so a map can show the change (:func:`add_measures`).
    Rounding to uint8 is needed by classic codecs; ``mse_perturbation`` is the energy of
    the rounded perturbation, the one the codec saw.

    Args:
        images: uint8 (H, W, 3) images, each at least ``crop`` on both sides.
        codec: a codec callable (:func:`nic_lib.spectral.classic_codec`, :func:`nic_lib.spectral.nic_codec`).
        grid: map size per axis (even). eps: perturbation norm ([0, 1] scale).
        crop: side of the centre crop. step: frequency spacing in cycles per crop;
            None -> ``crop // grid``, so the grid spans the spectrum up to Nyquist
            (step=1 is the reference code's lowest-frequency window; a
            :class:`HeatmapSetting` gives ``grid=setting.grid, step=setting.stride``).
        seed: seed of the random signs. batch: perturbed images per codec call.
        progress: show a tqdm bar.

    Returns:
        DataFrame with :data:`HEATMAP_COLUMNS`; (fy, fx) in cycles per crop, radius in
        Nyquist units. Turn it into a map with :func:`heatmap_array`.

    Raises:
        ValueError: a step below 1 (a crop smaller than the grid).
    """
    from tqdm.auto import tqdm  # a progress bar only where one is drawn

    step = crop // grid if step is None else step
    if step < 1:
        raise ValueError(f"step must be >= 1 (got {step}); use a crop of at least grid={grid} pixels")
    computed, _ = heatmap_frequencies(grid, step, crop)
    crops = [data.centre_crop(codecs.check_image(img), crop).astype(np.float64) / 255.0 for img in images]
    rows = []
    bar = tqdm(total=len(crops) * len(computed), disable=not progress, desc="fourier heat map", unit="run")
    for c, x in enumerate(crops):
        clean_u8 = np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
        base_recon, base_bpp = codec(clean_u8[None])
        base_mse = metrics.mse(clean_u8, base_recon[0])
        base_psnr = metrics.psnr(clean_u8, base_recon[0])
        for start in range(0, len(computed), batch):
            chunk = computed[start : start + batch]
            signs, inputs = [], []
            for i, j in chunk:
                sign = 1.0 if np.random.default_rng([seed, c, i % (2 * grid), j % (2 * grid)]).random() < 0.5 else -1.0
                # x_tilde = x + r eps U_ij, the same U in each channel
                perturbed = x + sign * eps * fourier_basis(crop, crop, i * step, j * step)[..., None]
                inputs.append(np.clip(np.rint(perturbed * 255.0), 0, 255).astype(np.uint8))
                signs.append(sign)
            recons, rates = codec(np.stack(inputs))
            for (i, j), sign, xt, xh, rate in zip(chunk, signs, inputs, recons, rates):
                fy, fx = i * step, j * step
                rows.append({"crop": c, "i": i, "j": j, "fy": fy, "fx": fx,
                             "radius": math.hypot(fy / crop, fx / crop) / 0.5, "sign": sign,
                             "bpp": float(rate), "psnr": metrics.psnr(xt, xh), "psnr_clean": metrics.psnr(clean_u8, xh),
                             "mse": metrics.mse(xt, xh), "mse_clean": metrics.mse(clean_u8, xh),
                             "mse_perturbation": metrics.mse(clean_u8, xt),
                             "bpp_unperturbed": float(base_bpp[0]), "psnr_unperturbed": base_psnr,
                             "mse_unperturbed": base_mse, "step": step, "size": crop, "eps": eps})
            bar.update(len(chunk))
    bar.close()
    return pd.DataFrame(rows, columns=list(HEATMAP_COLUMNS))


def add_measures(table: pd.DataFrame) -> pd.DataFrame:
    """The paper's two measures per row, relative to the unperturbed crop and to the perturbation's energy.

    ::

        generalization = (MSE(x_hat, x_tilde) - MSE(codec(x), x)) / MSE(x_tilde, x)
        robustness     = (MSE(x_hat, x)       - MSE(codec(x), x)) / MSE(x_tilde, x)
        psnr_drop      = PSNR(codec(x), x) - PSNR(x_hat, x_tilde)                       (dB)

    An identity codec gives generalization 0 and robustness 1 everywhere; a codec that
    removes the wave and is otherwise unchanged gives 1 and 0.

    Args:
        table: rows of :func:`fourier_heatmap`.

    Returns:
        A copy with ``generalization``, ``robustness`` (in units of the perturbation's
        energy) and ``psnr_drop`` columns.
    """
    energy = table["mse_perturbation"].where(table["mse_perturbation"] > 0)
    return table.assign(generalization=(table["mse"] - table["mse_unperturbed"]) / energy,
                        robustness=(table["mse_clean"] - table["mse_unperturbed"]) / energy,
                        psnr_drop=table["psnr_unperturbed"] - table["psnr"])


def heatmap_array(table: pd.DataFrame, value: str = "psnr", grid: int | None = None) -> np.ndarray:
    """The full grid x grid map from a :func:`fourier_heatmap` table, mean over crops, mirrored.

    Args:
        table: rows of :func:`fourier_heatmap` (any subset of crops).
        value: column to map (``"psnr"``, ``"psnr_clean"``, ``"bpp"``, or a column of
            :func:`add_measures` such as ``"generalization"``).
        grid: map size; None -> inferred from the table's i range. The frequency step and
            crop size are read from the table's ``step`` and ``size`` columns, so aliased
            cells are mirrored as they were computed.

    Returns:
        float64 (grid, grid); row ``i + grid/2``, column ``j + grid/2`` holds frequency
        (i, j) (zero frequency at [grid/2, grid/2], like ``np.fft.fftshift``); NaN where a
        mirrored source was not computed.
    """
    grid = grid or 2 * int(max(-table["i"].min(), table["i"].max() + 1))
    _, source = heatmap_frequencies(grid, int(table["step"].iloc[0]), int(table["size"].iloc[0]))
    means = table.groupby(["i", "j"])[value].mean().to_dict()
    half = grid // 2
    out = np.full((grid, grid), np.nan)
    for (i, j), src in source.items():
        out[i + half, j + half] = means.get(src, np.nan)
    return out


def heatmap_extent(table: pd.DataFrame, grid: int | None = None) -> tuple[float, float, float, float]:
    """``imshow`` extent (left, right, bottom, top) of :func:`heatmap_array`'s map in cycles per pixel.

    Cell (i, j) is centred on (j step / size, i step / size) cycles per pixel, fy growing
    downwards as in an image; use with ``origin="upper"`` (matplotlib's default).
    """
    grid = grid or 2 * int(max(-table["i"].min(), table["i"].max() + 1))
    d = int(table["step"].iloc[0]) / int(table["size"].iloc[0])  # one cell, in cycles per pixel
    half = grid // 2
    lo, hi = (-half - 0.5) * d, (half - 0.5) * d
    return (lo, hi, hi, lo)
