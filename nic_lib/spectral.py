"""Which frequencies a codec gets wrong: error power spectra, radial profiles, band
energies and Fourier heat maps (Lieberman et al. 2023, Sec. "spectral inspection";
Yin et al. 2019, "A Fourier perspective on model robustness").

Three error images per codec and corruption ``c`` (the OOD-NIC paper's three maps)::

    clean:           x_hat(x)    - x        what the codec loses on clean data
    vs corrupted:    x_hat(c(x)) - c(x)     against the codec's own input
    vs clean:        x_hat(c(x)) - x        against the image one wanted
    shift itself:    c(x)        - x        the corruption's own frequency content

Each is turned into a power spectrum :func:`power_spectrum` (``|F|^2`` of the
*unrounded* difference, optionally windowed; the reference code instead takes ``|F|`` of
a greyscale difference rounded after dividing it by the dataset's standard deviation, see
:func:`power_spectrum`) and averaged over images; a spectrum is
summarised by its :func:`radial_profile` and by its :func:`band_energies` in three bands
(:data:`BAND_EDGES`). Frequencies are in units of the Nyquist frequency (0.5 cycles per
pixel = 1), so a radius r means a period of 2 / r pixels.

Fourier heat maps (Yin et al. 2019) live in :mod:`nic_lib.heatmaps`; they, and
:func:`psnr_at_matched_rate` here, run codecs through a *codec callable*, which maps a
batch of uint8 images (B, H, W, 3) to ``(reconstructions uint8 (B, H, W, 3), bpp (B,))``;
:func:`classic_codec` wraps :mod:`nic_lib.codecs`, :func:`nic_codec` any model with
CompressAI's ``forward`` contract (through :mod:`nic_lib.coding`: its padding, its rate
estimate, checked against real bits).

numpy's FFT and scipy's windows do the transforms; the averaging and banding are written here because no library does them. This module
imports :mod:`nic_lib.metrics`, :mod:`nic_lib.codecs` and :mod:`nic_lib.data` (its centre crop) from the project,
and :mod:`nic_lib.coding` (with torch) for NIC models.

Two files: the spectra and their summaries in :mod:`nic_lib.spectra`, the codec callables
and the experiments that run codecs here; its names are re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from nic_lib import codecs, metrics
from nic_lib.spectra import (  # noqa: F401  re-exported: import them from here
    BAND_EDGES,
    band_energies,
    band_of,
    BANDS,
    CHANNELS,
    corruption_spectra,
    DEFAULT_CHANNELS,
    DEFAULT_RADIAL_BINS,
    DEFAULT_WINDOW,
    _diff,
    error_power_spectrum,
    landscape,
    LUMA_WEIGHTS,
    luminance,
    mean_power_spectrum,
    one_size_images,
    ood_error_spectra,
    power_spectrum,
    radial_frequency,
    radial_profile,
    spectral_centroid,
    window_2d,
)


CodecFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


# --------------------------------------------------------------------------- codec callables


def classic_codec(name: str | codecs.Codec, setting: float | None = None, bpp: float | None = None) -> CodecFn:
    """A codec callable for a classic codec of :mod:`nic_lib.codecs`.

    Args:
        name: codec name (``"jpeg2000"``, ``"jpeg"``, ...) or :class:`nic_lib.codecs.Codec`.
        setting: a fixed setting (quality, or bpp for JPEG 2000's own rate control).
        bpp: a target rate instead: each image is encoded at the setting whose real bpp is
            closest (:func:`nic_lib.codecs.encode_at_bpp`, ~7-30 encodes per image).

    Returns:
        ``f(images uint8 (B, H, W, 3)) -> (reconstructions uint8 (B, H, W, 3), bpp (B,))``,
        bpp from the real byte count.

    Raises:
        ValueError: unless exactly one of ``setting`` and ``bpp`` is given.
    """
    codec = codecs.get_codec(name) if isinstance(name, str) else name
    if (setting is None) == (bpp is None):
        raise ValueError("give exactly one of setting= (fixed) or bpp= (target rate per image)")
    if setting is not None:
        setting = codec.check_setting(setting)

    def run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        recons, rates = [], []
        for img in images:
            stream = codec.encode(img, setting) if setting is not None else codecs.encode_at_bpp(codec, img, bpp)[1]
            recons.append(codec.decode(stream))
            rates.append(metrics.bpp(len(stream), *img.shape[:2]))
        return np.stack(recons), np.asarray(rates)

    run.description = codec.description + (f"; setting={setting}" if setting is not None else f"; target bpp={bpp}")
    return run


def psnr_at_matched_rate(names: Sequence[str], clean: Sequence[np.ndarray], corrupted: Sequence[np.ndarray],
                         rates: Sequence[float], codec: str | codecs.Codec) -> pd.DataFrame:
    """A classic codec at the rate another codec spent on each input: its PSNR against the input and the clean image.

    Comparing two codecs under a corruption needs both at the same rate *on the corrupted
    input*: a learned codec spends more bits on noise and fewer on a low-contrast image
    than on the clean image, so a classic codec held at the clean image's rate would be
    compared at another rate.

    Args:
        names, clean, corrupted: as in :func:`codec_error_spectra`.
        rates: the bpp the other codec spent on each corrupted image, same order.
        codec: the classic codec (name or :class:`nic_lib.codecs.Codec`).

    Returns:
        One row per image: ``image``, ``bpp_target``, ``bpp`` (real), ``psnr_vs_input``,
        ``psnr_vs_clean``.
    """
    rows = []
    for name, x, cx, target in zip(names, clean, corrupted, rates, strict=True):
        recon, bpp = classic_codec(codec, bpp=float(target))(np.asarray(cx)[None])
        rows.append({"image": name, "bpp_target": float(target), "bpp": float(bpp[0]),
                     "psnr_vs_input": metrics.psnr(cx, recon[0]), "psnr_vs_clean": metrics.psnr(x, recon[0])})
    return pd.DataFrame(rows)


def nic_codec(model, device: str = "cpu", check: str | None = "warn", rtol: float | None = None) -> CodecFn:
    """A codec callable for a learned codec with CompressAI's ``forward`` contract.

    One ``model.forward`` over the batch in eval mode (latents rounded, as at test time),
    through :mod:`nic_lib.coding`'s fast path (:func:`nic_lib.coding.forward_images`):
    inputs padded by replication to the model's ``downsampling_factor``, the
    reconstruction ``out["x_hat"]`` cropped back and rounded, and the rate the estimate
    ``bpp_est`` = Σ −log2 p / (H W) per image, with no entropy coding.

    The estimate is checked once against real bits: on the first call the first image is
    also coded with ``compress`` (:func:`nic_lib.coding.encode`) and its payload bits
    compared with its estimate (:func:`nic_lib.coding.check_estimate`, tolerance
    ``rtol``, default :data:`nic_lib.coding.ESTIMATE_RTOL`). The context models' forward
    rounds differently from their coder, so for them the check fails. It warns by default
    rather than raising: the coder's fixed costs weigh more on small crops (cpu-profile
    mbt2018 q3, Kodak: the estimate is 0.4-1.1% under the real bits on whole images,
    0.9-1.4% on 256-px crops, 0.5-9.5% on 128-px crops, the smoke profile's size).

    Args:
        model: a model whose ``forward(x)`` returns ``{"x_hat", "likelihoods": {name:
            tensor}}`` for x in [0, 1], shape (B, 3, H, W), with coder tables built
            (``get_model`` gives one; ``update(force=True)`` builds them) unless
            ``check`` is None.
        device: where to run it.
        check: what a failed check does: ``"warn"`` (default,
            :class:`nic_lib.coding.RateEstimateWarning`), ``"raise"``
            (:class:`nic_lib.coding.RateEstimateError`), or None: no check
            (the rate is then an unchecked estimate, e.g. for an untrained model).
        rtol: tolerance of the check.

    Returns:
        ``f(images uint8 (B, H, W, 3)) -> (reconstructions uint8 (B, H, W, 3), bpp (B,))``.
    """
    # imported here, like torch: a classic-codec figure never loads the models' stack
    from nic_lib import coding

    model = model.to(device).eval()
    rtol = coding.ESTIMATE_RTOL if rtol is None else float(rtol)
    pending = [check is not None]

    def run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        recon, bpp = coding.forward_images(model, images)
        if pending[0]:
            img = np.asarray(images)[0]
            bits = coding.encode(model, img, estimate=False)["bits"]
            h, w = img.shape[:2]
            coding.check_estimate(bits, float(bpp[0]) * h * w, rtol, action=check,
                                  what=f"{type(model).__name__} on a {h}x{w} image")
            pending[0] = False
        return recon, bpp

    run.description = (f"{type(model).__name__} (forward in eval mode, likelihood bpp"
                       f"{'' if check is None else f', checked against real bits within {rtol:.0%}'})")
    return run


# --------------------------------------------------------------------------- one experiment

#: Columns of the tidy table codec_error_spectra returns (one row per image x error kind x band).
SPECTRA_COLUMNS = ("image", "kind", "band", "energy", "bpp", "psnr")

#: The error kinds: the corruption itself, the error vs the codec's input, vs the clean image.
KINDS = ("shift", "vs_corrupted", "vs_clean")


def codec_error_spectra(names: Sequence[str], clean: Sequence[np.ndarray], corrupted: Sequence[np.ndarray],
                        codec: CodecFn, window: str | None = DEFAULT_WINDOW, channels: str = DEFAULT_CHANNELS
                        ) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Code each (corrupted) image once; the three mean spectra and a tidy band-energy table.

    For clean data pass ``corrupted = clean``: then "vs_corrupted" and "vs_clean" are both
    the clean error spectrum and "shift" is zero.

    Args:
        names: image names. clean: images x. corrupted: c(x), the codec's inputs (uint8,
            one shape for all, same order).
        codec: a codec callable (:func:`classic_codec`, :func:`nic_codec`).
        window, channels: as in :func:`power_spectrum`.

    Returns:
        ``(maps, table)``: maps ``{"shift", "vs_corrupted", "vs_clean"}`` averaged over
        images; table with :data:`SPECTRA_COLUMNS`, one row per image x kind x band (energy
        as in :func:`band_energies`; bpp of the coded image; PSNR of the kind's pair, NaN
        for "shift" of a clean image).
    """
    sums = {kind: None for kind in KINDS}
    rows = []
    for name, x, cx in zip(names, clean, corrupted, strict=True):
        recon, rate = codec(np.asarray(cx)[None])
        pairs = {"shift": (x, cx), "vs_corrupted": (cx, recon[0]), "vs_clean": (x, recon[0])}
        for kind, (ref, other) in pairs.items():
            spec = power_spectrum(_diff(other, ref), window, channels)
            sums[kind] = spec if sums[kind] is None else sums[kind] + spec
            quality = metrics.psnr(ref, other)
            for band, energy in band_energies(spec).items():
                rows.append({"image": name, "kind": kind, "band": band, "energy": energy, "bpp": float(rate[0]),
                             "psnr": quality if np.isfinite(quality) else np.nan})
    maps = {kind: total / len(names) for kind, total in sums.items()}
    return maps, pd.DataFrame(rows, columns=list(SPECTRA_COLUMNS))


def condition_spectra(names: Sequence[str], clean: Sequence[np.ndarray], corrupted: Mapping[str, Sequence[np.ndarray]],
                      codecs_per_image: Sequence[CodecFn], window: str | None = DEFAULT_WINDOW,
                      channels: str = DEFAULT_CHANNELS) -> tuple[dict[str, dict[str, np.ndarray]], pd.DataFrame]:
    """:func:`codec_error_spectra` for every condition, with one codec callable per image.

    A per-image callable lets a classic codec be held at each image's own target rate (the
    bpp a NIC spent on it); the same callable codes the image under every condition.

    Args:
        names, clean: as in :func:`codec_error_spectra`.
        corrupted: condition -> its images, in the order of ``clean`` (``"clean"`` -> ``clean``).
        codecs_per_image: one codec callable per image.
        window, channels: as in :func:`power_spectrum`.

    Returns:
        ``(maps, table)``: maps ``{condition: {kind: mean spectrum}}``; the tables of
        :func:`codec_error_spectra` stacked, with a ``condition`` column.
    """
    if len(codecs_per_image) != len(names):
        raise ValueError(f"{len(codecs_per_image)} codec callables for {len(names)} images; pass one per image")
    maps, tables = {}, []
    for cond, images in corrupted.items():
        sums, parts = None, []
        for name, x, cx, codec in zip(names, clean, images, codecs_per_image, strict=True):
            m, t = codec_error_spectra([name], [x], [cx], codec, window, channels)
            sums = m if sums is None else {kind: sums[kind] + m[kind] for kind in m}
            parts.append(t)
        maps[cond] = {kind: v / len(names) for kind, v in sums.items()}
        tables.append(pd.concat(parts, ignore_index=True).assign(condition=cond))
    return maps, pd.concat(tables, ignore_index=True)


def relative_band_energies(table: pd.DataFrame, reference: str, by: Sequence[str] = ("condition", "kind")
                           ) -> pd.DataFrame:
    """Each codec's mean band energy divided by a reference codec's, within groups of ``by``.

    ratio(codec, group, band) = mean E_codec / mean E_reference (means over the images), so
    1 is "as the reference", > 1 more error energy in that band, < 1 less.

    Args:
        table: :func:`condition_spectra`'s rows with a ``codec`` column (several codecs).
        reference: the codec every other one is divided by (left out of the result).
        by: the columns whose groups are compared (default: condition and error kind).

    Returns:
        Index (codec, *by), columns :data:`BANDS`: the ratios.

    Raises:
        KeyError: ``reference`` is not a codec of ``table``.
    """
    if reference not in set(table["codec"]):
        raise KeyError(f"reference codec {reference!r} is not in the table (codecs: {sorted(set(table['codec']))})")
    mean = table.groupby([*by, "band", "codec"])["energy"].mean().unstack("codec")
    # E_codec / E_reference, per group and band
    ratio = mean.drop(columns=reference).div(mean[reference], axis=0)
    ratio = ratio.stack().rename("ratio").unstack("band")[list(BANDS)]
    return ratio.reorder_levels(["codec", *by]).sort_index()


def pool_spectra(parts: Sequence[tuple[int, Mapping[str, Mapping[str, np.ndarray]]]]
                 ) -> dict[str, dict[str, np.ndarray]]:
    """The mean over all images of :func:`condition_spectra` maps computed on disjoint image sets.

    S = Σ_p n_p S_p / Σ_p n_p, for parts (n_p images, maps S_p); parts with n_p = 0 are skipped.

    Raises:
        ValueError: no part holds an image.
    """
    parts = [(n, m) for n, m in parts if n > 0]
    if not parts:
        raise ValueError("no images in any part: pass (count, maps) pairs with count > 0")
    total = sum(n for n, _ in parts)
    # S = Σ n_p S_p / Σ n_p, per condition and kind
    return {cond: {kind: sum(n * m[cond][kind] for n, m in parts) / total for kind in parts[0][1][cond]}
            for cond in parts[0][1]}
