"""The codecs Pillow's own encoders run: JPEG, WebP, JPEG 2000 and AVIF.

Each class docstring records what was measured for the alternatives to its configuration
(the package docstring of :mod:`nic_lib.codecs` says how).
"""

from __future__ import annotations

import abc
import io
import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import PIL
from PIL import Image, features

from nic_lib.codecs.base import Codec, _open_image


#: Bits per pixel of the raw 8-bit RGB input; JPEG 2000's rate control takes a compression
#: ratio against it: ratio = 24 / target bpp.
RAW_BPP = 24.0


class PillowCodec(Codec):
    """A codec run through Pillow's built-in encoder and decoder for one file format."""

    #: Pillow's format name, e.g. "JPEG".
    pillow_format: ClassVar[str]
    #: Pillow feature that must be compiled in, e.g. "jpg" (see PIL.features).
    pillow_feature: ClassVar[str]
    #: (label, PIL.features name) of the library that does the coding, for descriptions.
    coding_library: ClassVar[tuple[str, str]]

    @abc.abstractmethod
    def save_options(self, img: np.ndarray, setting: float) -> dict:
        """Keyword arguments for ``PIL.Image.save`` that encode ``img`` at ``setting``."""

    def _encode(self, img: np.ndarray, setting: float) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(img).save(buffer, format=self.pillow_format, **self.save_options(img, setting))
        return buffer.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        return _open_image(data, self.name)

    def library(self) -> str:
        label, feature = self.coding_library
        return f"Pillow {PIL.__version__}, {label} {features.version(feature)}"

    @classmethod
    def is_available(cls) -> bool:
        return bool(features.check(cls.pillow_feature))

    @classmethod
    def missing_message(cls) -> str:
        return (
            f"this Pillow build lacks {cls.pillow_format} support (PIL.features.check({cls.pillow_feature!r}) "
            "is False); install the official wheel: pip install --force-reinstall 'pillow>=11.3'"
        )


# --------------------------------------------------------------------------- Pillow codecs

#: JPEG sweep: quality 5 is 0.14 bpp on Kodak (23.9 dB) and 90 is 2.3 bpp. JPEG cannot
#: usefully go below ~0.15 bpp: at quality 1 (every quantiser step at its baseline maximum,
#: 255) it still spends 0.09 bpp for 21.5 dB, blocks everywhere.
JPEG_QUALITIES = (5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90)


@dataclass(frozen=True)
class JpegCodec(PillowCodec):
    """JPEG (ITU-T T.81) through Pillow's libjpeg-turbo: 4:2:0, optimised Huffman tables.

    Quality scales the standard IJG quantisation tables. Measured on Kodak over this sweep
    (BD-rate, PSNR-RGB, vs this configuration; + = more bits for the same PSNR):

    - ``subsampling="4:2:0"`` (Pillow's default): 4:4:4 costs +8.2 % (+2.7 % over quality
      50..95 alone). Kodak's chroma is smooth, so full-resolution chroma spends bits that
      buy little RGB PSNR even at 2-3 bpp.
    - ``optimize=True``: image-specific Huffman tables, identical pixels; without them
      +13.1 % (most at low rates: quality 5 takes 0.22 bpp with the standard Huffman
      tables, 0.14 bpp with optimised ones).
    - ``progressive=False``: progressive (which always optimises its tables) costs +1.0 %
      overall: it saves 3.4 % at quality >= 50 but loses more than that at low rates.
    - vs the published ``jpeg-pillow`` curve (Pillow defaults: 4:2:0, no optimisation):
      -15.6 %, nearly all of it from ``optimize``: with Pillow's defaults our curve
      matches the published one to -1.8 %.
    """

    name: str = "jpeg"
    settings: tuple = JPEG_QUALITIES
    subsampling: str = "4:2:0"
    optimize: bool = True
    progressive: bool = False

    setting_name: ClassVar[str] = "quality"
    setting_range: ClassVar[tuple[float, float]] = (1, 100)
    pillow_format: ClassVar[str] = "JPEG"
    pillow_feature: ClassVar[str] = "jpg"
    coding_library: ClassVar[tuple[str, str]] = ("libjpeg-turbo", "libjpeg_turbo")

    def save_options(self, img: np.ndarray, setting: float) -> dict:
        return {
            "quality": setting,
            "subsampling": self.subsampling,
            "optimize": self.optimize,
            "progressive": self.progressive,
        }


#: WebP sweep: quality 0 is 0.10 bpp on Kodak (25.7 dB), 90 is 1.9 bpp (39.4 dB).
WEBP_QUALITIES = (0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90)


@dataclass(frozen=True)
class WebpCodec(PillowCodec):
    """WebP lossy (VP8 intra) through Pillow's libwebp, slowest and best search (``method=6``).

    Measured on Kodak (BD-rate, PSNR-RGB, vs this configuration): ``method=4`` (Pillow's
    default) +2.2 %, ``method=5`` +3.2 %; vs the published ``webp-pillow`` curve (method 4)
    -2.4 %. Encoding takes 0.07-0.12 s per Kodak image (method 4: half that). Lossy WebP is
    always YUV 4:2:0 (the format has no 4:4:4 mode) and Pillow exposes no other lossy
    option (no ``sns_strength``, filter strength, or ``use_sharp_yuv``).
    """

    name: str = "webp"
    settings: tuple = WEBP_QUALITIES
    method: int = 6

    setting_name: ClassVar[str] = "quality"
    setting_range: ClassVar[tuple[float, float]] = (0, 100)
    integer_settings: ClassVar[bool] = False
    pillow_format: ClassVar[str] = "WEBP"
    pillow_feature: ClassVar[str] = "webp"
    coding_library: ClassVar[tuple[str, str]] = ("libwebp", "webp")

    def save_options(self, img: np.ndarray, setting: float) -> dict:
        return {"quality": setting, "method": self.method, "lossless": False}


#: JPEG 2000 sweep in target bpp; rate control lands within 0.5 % of each on Kodak.
JPEG2000_BPPS = (0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0)


@dataclass(frozen=True)
class Jpeg2000Codec(PillowCodec):
    """JPEG 2000 (ITU-T T.800) through Pillow's OpenJPEG, with rate control to a target bpp.

    The setting is the target rate in bits per pixel: OpenJPEG's post-compression
    rate-distortion optimisation truncates the code-block bit-planes to a compression
    ratio of 24 / bpp (``quality_mode="rates"``, one quality layer, no tiling).

    Measured on Kodak (BD-rate, PSNR-RGB, vs this configuration; + = more bits):

    - Pillow's defaults (reversible 5/3 wavelet, no colour transform): +145 %. This is the
      "JPEG 2000 left on its defaults" baseline that makes learned codecs look better.
    - ``irreversible=True`` (CDF 9/7 wavelet): the 5/3 wavelet with the colour transform
      costs +12.8 %.
    - ``mct=1`` (irreversible colour transform RGB -> YCbCr): without it +119 %.
    - ``num_resolutions=6`` (5 decomposition levels, OpenJPEG's default): 4 / 5 / 7 / 8
      resolutions cost +5.6 / +0.6 / +0.2 / +0.5 %.
    - ``codeblock_size=(64, 64)`` (the largest allowed): 32x32 costs +2.6 %.
    - ``no_jp2=True``: a raw J2K codestream (self-contained and decodable); wrapping it in
      JP2 file boxes costs +0.4 %.
    - vs the published ``jpeg2000-ffmpeg`` curve (ffmpeg's libopenjpeg wrapper, YUV 4:4:4):
      -18.8 %.
    """

    name: str = "jpeg2000"
    settings: tuple = JPEG2000_BPPS
    irreversible: bool = True
    mct: int = 1
    num_resolutions: int = 6
    codeblock_size: tuple = (64, 64)
    no_jp2: bool = True

    setting_name: ClassVar[str] = "bpp"
    # 0.01 bpp is ~490 bytes for a Kodak image, far below any useful rate; 24 bpp is ratio 1.
    setting_range: ClassVar[tuple[float, float]] = (0.01, RAW_BPP)
    integer_settings: ClassVar[bool] = False
    pillow_format: ClassVar[str] = "JPEG2000"
    pillow_feature: ClassVar[str] = "jpg_2000"
    coding_library: ClassVar[tuple[str, str]] = ("OpenJPEG", "jpg_2000")

    def save_options(self, img: np.ndarray, setting: float) -> dict:
        # OpenJPEG needs every tile side >= 2^(resolutions - 1); small images get fewer levels.
        min_side = min(img.shape[:2])
        resolutions = max(1, min(self.num_resolutions, int(math.floor(math.log2(min_side))) + 1))
        return {
            # compression ratio = raw bits / coded bits = 24 / bpp
            "quality_mode": "rates",
            "quality_layers": [RAW_BPP / setting],
            "irreversible": self.irreversible,
            "mct": self.mct,
            "num_resolutions": resolutions,
            "codeblock_size": tuple(self.codeblock_size),
            "no_jp2": self.no_jp2,
        }


#: JPEG 2000 codestream markers (ITU-T T.800, Annex A): start of codestream, start of tile
#: part, start of data, end of codestream.
_J2K_SOC, _J2K_SOT, _J2K_SOD, _J2K_EOC = 0xFF4F, 0xFF90, 0xFF93, 0xFFD9


def jpeg2000_header_bytes(codestream: bytes) -> int:
    """Bytes of a raw J2K codestream that are headers, not coded wavelet data.

    The main header (SOC to the first SOT), every tile-part header (SOT to its SOD marker,
    inclusive) and the EOC marker. They are a fixed cost of each file: ~155 bytes for
    :class:`Jpeg2000Codec`'s one-tile streams whatever the image size, so 0.019 bpp on a
    256x256 crop and 0.003 bpp on a Kodak image: an evaluation on small crops charges JPEG
    2000 for them in proportion (notebook 01, section 11).

    Args:
        codestream: a raw codestream (``no_jp2=True``), as :class:`Jpeg2000Codec` writes.

    Returns:
        The number of header bytes; ``len(codestream)`` minus it is the packet data.

    Raises:
        ValueError: not a raw J2K codestream (no SOC marker first: a JP2 file, say), or a
            truncated one.
    """
    def marker(at: int) -> int:
        if at + 2 > len(codestream):
            raise ValueError(f"truncated JPEG 2000 codestream: no marker at byte {at} of {len(codestream)}")
        return int.from_bytes(codestream[at:at + 2], "big")

    if len(codestream) < 2 or marker(0) != _J2K_SOC:
        raise ValueError("not a raw JPEG 2000 codestream (it does not start with the SOC marker FF4F); "
                         "a JP2 file wraps one in boxes: encode with no_jp2=True")
    at = 2
    while marker(at) != _J2K_SOT:  # main header: marker segments, each with its length
        at += 2 + marker(at + 2)
    header = at
    while marker(at) == _J2K_SOT:
        # SOT segment: Lsot (2) Isot (2) Psot (4: the tile part's length from its SOT) ...
        psot = int.from_bytes(codestream[at + 6:at + 10], "big")
        part = at
        at += 2 + marker(at + 2)
        while marker(at) != _J2K_SOD:  # tile-part header segments
            at += 2 + marker(at + 2)
        at += 2
        header += at - part
        if psot == 0:  # the last tile part runs to EOC
            at = len(codestream) - 2
            break
        at = part + psot
    if marker(at) != _J2K_EOC:
        raise ValueError(f"malformed JPEG 2000 codestream: expected EOC at byte {at}, found {marker(at):04X}")
    return header + 2


#: AVIF sweep: quality 10 is 0.11 bpp on Kodak, 80 is 2.0 bpp; denser at low rates, where
#: bpp doubles every ~10 quality steps.
AVIF_QUALITIES = (10, 15, 20, 25, 30, 40, 50, 60, 70, 80)


@dataclass(frozen=True)
class AvifCodec(PillowCodec):
    """AVIF (AV1 intra) through Pillow's libavif: libaom encoder tuned for PSNR, dav1d decoder.

    The setting is libavif's quality 0..100 (mapped linearly onto AV1's quantiser index
    63..0). Measured on Kodak (BD-rate, PSNR-RGB, vs this configuration; + = more bits):

    - ``aom_options=(("tune", "psnr"),)``: libavif's default tuning (identical to
      ``tune=iq``, a perceptual mode for still images) costs +8.0 %; ``tune=ssim`` +0.4 %.
      ``deltaq-mode=0`` on top of ``tune=psnr`` changes nothing (24 images, speed 6).
    - ``subsampling="4:4:4"``: 4:2:0 (Pillow's default) costs +4.3 % (24 images, speed 6).
    - ``range="full"``: limited-range YUV (16..235) costs +1.0 % (24 images, speed 6).
    - ``speed=3``: mean encode time per Kodak image over this sweep and BD-rate vs speed 3
      (8 images, one core, shared machine): speed 2 4.4 s, -0.5 %; speed 3 3.2 s;
      speed 4 1.7 s, +1.6 %; speed 5 1.2 s, +4.2 %; speed 6 0.24 s, +9.6 %. Speed 3 is the
      slowest whose encode stays near 3 s per image (5 s at quality 80); speed 4 halves the
      time for +1.6 %.
    - ``max_threads=1``: encode times comparable with the other, single-threaded, codecs.
    - libaom is the only AV1 encoder in Pillow's wheel (``codec="aom"``; rav1e and SVT-AV1
      are not compiled in).
    """

    name: str = "avif"
    settings: tuple = AVIF_QUALITIES
    subsampling: str = "4:4:4"
    speed: int = 3
    aom_options: tuple = (("tune", "psnr"),)
    range: str = "full"
    max_threads: int = 1

    setting_name: ClassVar[str] = "quality"
    setting_range: ClassVar[tuple[float, float]] = (0, 100)
    pillow_format: ClassVar[str] = "AVIF"
    pillow_feature: ClassVar[str] = "avif"
    coding_library: ClassVar[tuple[str, str]] = ("libavif", "avif")

    def save_options(self, img: np.ndarray, setting: float) -> dict:
        options = {
            "quality": setting,
            "subsampling": self.subsampling,
            "speed": self.speed,
            "range": self.range,
            "max_threads": self.max_threads,
            "codec": "aom",
        }
        if self.aom_options:
            options["advanced"] = tuple((str(key), str(value)) for key, value in self.aom_options)
        return options

    def library(self) -> str:
        from PIL import _avif  # Pillow's libavif binding; reports the AV1 codecs compiled in

        return f"Pillow {PIL.__version__}, libavif {features.version('avif')} ({_avif.codec_versions()})"

    @classmethod
    def is_available(cls) -> bool:
        if not features.check("avif"):
            return False
        from PIL import _avif

        return bool(_avif.encoder_codec_available("aom"))

    @classmethod
    def missing_message(cls) -> str:
        return (
            "this Pillow build lacks AVIF with the aom encoder; install the official wheel: "
            "pip install --force-reinstall 'pillow>=11.3'"
        )
