"""What runs over the codecs: a rate sweep (one tidy row per image x codec x setting),
the setting that meets a target bpp, and the smallest file a codec can write.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from nic_lib import metrics
from nic_lib.codecs.base import Codec, check_image
from nic_lib.codecs.registry import available_codecs, get_codec


#: Columns of the table rate_sweep returns, one row per image x codec x setting.
SWEEP_COLUMNS = ("image", "codec", "setting", "bytes", "bpp", "psnr_rgb", "ms_ssim", "encode_s", "decode_s")


# --------------------------------------------------------------------------- rate sweep


def _resolve_codecs(codecs: str | Codec | Iterable[str | Codec]) -> list[Codec]:
    if isinstance(codecs, (str, Codec)):
        codecs = [codecs]
    resolved = []
    for codec in codecs:
        if isinstance(codec, str):
            codec = get_codec(codec)
        elif not isinstance(codec, Codec):
            raise ValueError(
                f"codecs must be names or nic_lib.codecs.Codec objects, got {type(codec).__name__}; "
                f"use names from available_codecs() = {available_codecs()}"
            )
        resolved.append(codec)
    names = [codec.name for codec in resolved]
    if len(set(names)) != len(names):
        raise ValueError(
            f"codec names repeat in {names}; give variants their own name with dataclasses.replace(codec, name=...)"
        )
    return resolved


def spread_settings(settings: Sequence, count: int) -> list:
    """``count`` settings spread evenly over a sweep, both ends kept: a shorter sweep for smoke runs.

    Args:
        settings: a codec's sweep, in order (e.g. ``get_codec("jpeg").settings``).
        count: how many to keep (4 is the fewest a BD-rate takes).

    Returns:
        The settings at the rounded positions of ``linspace(0, len - 1, count)``.
    """
    return [settings[i] for i in np.linspace(0, len(settings) - 1, count).round().astype(int)]


def rate_sweep(
    images: Iterable[tuple[str, np.ndarray]],
    codecs: str | Codec | Iterable[str | Codec],
    settings: Mapping[str, Sequence[float]] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Encode and decode every image with every codec at every setting; one tidy row each.

    Rate is measured on the real bytes of each decodable file; PSNR over RGB and MS-SSIM
    come from :mod:`nic_lib.metrics`, against the original image. Times are wall-clock
    seconds of one encode and one decode (single call, this machine).

    Args:
        images: ``(name, uint8 array (H, W, 3))`` pairs, e.g. ``nic_lib.data.load_images("kodak")``.
        codecs: codec names (see :func:`available_codecs`) or :class:`Codec` objects.
        settings: ``{codec_name: [settings]}`` replacing a codec's default sweep; codecs not
            named keep theirs.
        progress: show a tqdm progress bar (one step per encode).

    Returns:
        DataFrame with columns :data:`SWEEP_COLUMNS`: image, codec, setting, bytes, bpp,
        psnr_rgb, ms_ssim (NaN when a side is below MS-SSIM's 161-pixel minimum),
        encode_s, decode_s.

    Raises:
        ValueError: for an unknown codec, a settings key naming no codec in ``codecs``,
            a setting out of a codec's range, or an image that is not uint8 (H, W, 3).
        CodecUnavailableError: if a named codec cannot run on this machine.
    """
    codec_list = _resolve_codecs(codecs)
    settings = dict(settings or {})
    unknown = sorted(set(settings) - {codec.name for codec in codec_list})
    if unknown:
        raise ValueError(
            f"settings given for {unknown}, which are not among the codecs {[c.name for c in codec_list]}; "
            "fix the keys of settings="
        )
    # check every setting before the first encode, so a typo fails in seconds, not hours
    sweeps = {
        codec.name: [codec.check_setting(s) for s in settings.get(codec.name, codec.settings)] for codec in codec_list
    }
    steps_per_image = sum(len(sweep) for sweep in sweeps.values())
    total = steps_per_image * len(images) if hasattr(images, "__len__") else None

    rows = []
    with tqdm(total=total, disable=not progress, desc="rate sweep", unit="encode") as bar:
        for image_name, img in images:
            img = check_image(img, what=f"image {image_name!r}")
            height, width = img.shape[:2]
            with_ms_ssim = min(height, width) >= metrics.MS_SSIM_MIN_SIDE
            for codec in codec_list:
                for setting in sweeps[codec.name]:
                    bar.set_postfix_str(f"{image_name} {codec.name} {setting}", refresh=False)
                    start = time.perf_counter()
                    data = codec.encode(img, setting)
                    encoded = time.perf_counter()
                    recon = codec.decode(data)
                    decoded = time.perf_counter()
                    rows.append(
                        {
                            "image": image_name,
                            "codec": codec.name,
                            "setting": setting,
                            "bytes": len(data),
                            "bpp": metrics.bpp(len(data), height, width),
                            "psnr_rgb": metrics.psnr(img, recon),
                            "ms_ssim": metrics.ms_ssim(img, recon) if with_ms_ssim else float("nan"),
                            "encode_s": encoded - start,
                            "decode_s": decoded - encoded,
                        }
                    )
                    bar.update(1)
    return pd.DataFrame(rows, columns=list(SWEEP_COLUMNS))


# --------------------------------------------------------------------------- matched rate

#: Relative bpp error at which the search for a target rate stops early (continuous settings).
MATCH_RTOL = 0.005
#: Bisection steps for continuous settings: the range halves each step, 2^-30 is far finer
#: than any codec's rate control.
MATCH_MAX_STEPS = 30


def encode_at_bpp(codec: str | Codec, img: np.ndarray, target_bpp: float) -> tuple[float, bytes]:
    """Encode ``img`` at the setting whose real bpp is closest to ``target_bpp``.

    Comparisons "at matched bpp" (crops, error spectra) need each codec at the same rate on
    the same image, which a fixed sweep rarely gives. The rate of every codec here is monotone
    in its setting (rising with quality or target bpp, falling with QP), so a bisection over
    the setting range finds the closest rate: ~7 encodes for integer qualities, a few more
    for continuous settings. When the target is outside what the codec can reach (JPEG
    cannot go much below 0.1 bpp), the nearest end of its range is returned.

    Args:
        codec: a codec name or :class:`Codec`.
        img: uint8 (H, W, 3) image.
        target_bpp: the rate to match, > 0.

    Returns:
        ``(setting, stream)``: the chosen setting and its encoded bytes; the achieved rate is
        ``nic_lib.metrics.bpp(len(stream), H, W)``.

    Raises:
        ValueError: for a non-positive target or a bad image.
        CodecUnavailableError: if the codec cannot run here.
    """
    (codec,) = _resolve_codecs(codec)
    img = check_image(img)
    if not (math.isfinite(target_bpp) and target_bpp > 0):
        raise ValueError(f"target_bpp must be a positive number, got {target_bpp!r}")
    h, w = img.shape[:2]
    # rate rises with the setting when the default sweep (in increasing-rate order) rises
    rising = codec.settings[-1] >= codec.settings[0]
    tried: dict[float, bytes] = {}

    def rate(setting: float) -> float:
        if setting not in tried:
            tried[setting] = codec.encode(img, setting)
        return metrics.bpp(len(tried[setting]), h, w)

    low, high = codec.setting_range
    if codec.integer_settings:
        low, high = math.ceil(low), math.floor(high)
        while low <= high:
            mid = (low + high) // 2
            if (rate(mid) < target_bpp) == rising:
                low = mid + 1
            else:
                high = mid - 1
    else:
        for _ in range(MATCH_MAX_STEPS):
            mid = (low + high) / 2
            got = rate(mid)
            if abs(got - target_bpp) <= MATCH_RTOL * target_bpp:
                break
            if (got < target_bpp) == rising:
                low = mid
            else:
                high = mid
    best = min(tried, key=lambda s: (abs(rate(s) - target_bpp), s))
    return best, tried[best]


def smallest(codec: str | Codec, img: np.ndarray, max_bytes: int | None = None) -> dict:
    """The smallest file a codec makes of ``img``, or its best file within ``max_bytes``.

    Every codec's rate is monotone in its setting (see :func:`encode_at_bpp`), so the
    smallest file is the one at the low-rate end of :attr:`Codec.setting_range` (JPEG
    quality 1, WebP and AVIF quality 0, JPEG 2000 0.01 bpp). With a budget, a bisection
    over the setting finds the highest-rate setting whose file still fits (integer
    settings exactly; continuous ones to 2^-30 of the range); when even the smallest file
    is over the budget, that smallest file is returned with ``fits=False``.

    Args:
        codec: a codec name or :class:`Codec`.
        img: uint8 (H, W, 3) image.
        max_bytes: byte budget, or None for the smallest file.

    Returns:
        ``{"codec", "setting", "stream" (bytes), "bytes", "bpp", "fits" (bytes <= max_bytes;
        True without a budget), "min_bytes" (the smallest file's size)}``.

    Raises:
        ValueError: for a bad image or a non-positive budget.
        CodecUnavailableError: if the codec cannot run here.
    """
    (codec,) = _resolve_codecs(codec)
    img = check_image(img)
    if max_bytes is not None and max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes!r}")
    h, w = img.shape[:2]
    rising = codec.settings[-1] >= codec.settings[0]
    low, high = codec.setting_range
    if codec.integer_settings:
        low, high = math.ceil(low), math.floor(high)
    # the setting of the smallest file, and the one of the largest (for the bisection)
    small_end, large_end = (low, high) if rising else (high, low)
    tried: dict[float, bytes] = {small_end: codec.encode(img, small_end)}
    best = small_end
    min_bytes = len(tried[small_end])
    if max_bytes is not None and min_bytes <= max_bytes:
        lo, hi = small_end, large_end  # invariant: lo fits; hi is the far end (may not fit)
        for _ in range(MATCH_MAX_STEPS):
            mid = (lo + hi) // 2 if codec.integer_settings else (lo + hi) / 2
            if mid in (lo, hi) or (codec.integer_settings and abs(hi - lo) <= 1):
                break
            tried[mid] = codec.encode(img, mid)
            if len(tried[mid]) <= max_bytes:
                lo = mid
            else:
                hi = mid
        if codec.integer_settings and hi not in tried:  # the far end itself may fit
            tried[hi] = codec.encode(img, hi)
        fitting = [s for s, b in tried.items() if len(b) <= max_bytes]
        best = max(fitting, key=lambda s: (len(tried[s]), s))
    stream = tried[best]
    return {"codec": codec.name, "setting": best, "stream": stream, "bytes": len(stream),
            "bpp": metrics.bpp(len(stream), h, w),
            "fits": max_bytes is None or len(stream) <= max_bytes, "min_bytes": min_bytes}
