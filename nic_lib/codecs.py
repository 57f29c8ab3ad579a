"""Classic image codecs behind one small interface: ``encode(img, setting) -> bytes``,
``decode(bytes) -> img``.

Every codec takes and returns 8-bit RGB images as ``numpy`` arrays of shape (H, W, 3),
dtype ``uint8``, and reports the *whole decodable file* as bytes (container headers
included), so bpp = 8 * len(bytes) / (H * W) is the real rate. A codec's ``settings`` is
its default rate sweep on Kodak, listed in increasing-rate order; ``description`` says
exactly how it is configured (it goes into result tables and cache keys).

    image uint8 (H, W, 3) ──encode(img, setting)──► bytes ──decode──► image uint8 (H, W, 3)
                                                      │
    rate_sweep(images, codecs) ── bpp, PSNR, MS-SSIM (nic_lib.metrics) ──► one tidy row each

Codecs built on Pillow's own encoders (always available in the Pillow wheels):

====================  ==========================  =============================================
name                  library                     setting
====================  ==========================  =============================================
``jpeg``              libjpeg-turbo               quality 1..100
``webp``              libwebp                     quality 0..100
``jpeg2000``          OpenJPEG                    target bits per pixel (rate control)
``avif``              libavif + libaom (AV1)      quality 0..100
====================  ==========================  =============================================

Optional codecs, used only when their programs are on ``PATH`` (they are not pip-installable):
``bpg`` (``bpgenc``/``bpgdec``, HEVC intra) and ``vtm`` (VVC reference software
``EncoderAppStatic``/``DecoderAppStatic``); their setting is the quantisation parameter QP,
so their sweeps run from high to low QP.

Each class docstring records what was measured for the alternatives to its configuration
(Kodak, 24 images, BD-rate on mean-bpp / mean-PSNR-RGB curves, Akima, ``nic_lib.rd``;
negative = fewer bits for the same PSNR). With these configurations, BD-rate against
``jpeg2000`` on Kodak is: avif -19.9 %, webp +16.5 %, jpeg +81.5 %; each curve is better than
the published one for the same codec (``benchmarks/classic_codecs_vs_published.py``).

This module wraps the codecs' own libraries and programs; it implements no coding tool
itself. It imports only :mod:`nic_lib.metrics` from the project.
"""

from __future__ import annotations

import abc
import io
import math
import os
import shutil
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import PIL
from PIL import Image, features
from tqdm.auto import tqdm

from nic_lib import metrics

#: Columns of the table rate_sweep returns, one row per image x codec x setting.
SWEEP_COLUMNS = ("image", "codec", "setting", "bytes", "bpp", "psnr_rgb", "ms_ssim", "encode_s", "decode_s")

#: Bits per pixel of the raw 8-bit RGB input; JPEG 2000's rate control takes a compression
#: ratio against it: ratio = 24 / target bpp.
RAW_BPP = 24.0


class CodecUnavailableError(RuntimeError):
    """An optional codec's programs are not installed; the message names what to install."""


# --------------------------------------------------------------------------- validation


def check_image(img: np.ndarray, what: str = "image") -> np.ndarray:
    """Return ``img`` if it is an 8-bit RGB array (H, W, 3), else raise.

    Args:
        img: the array to check.
        what: how to name it in the error message (e.g. ``"image 'kodim01'"``).

    Returns:
        The same array, C-contiguous.

    Raises:
        ValueError: if it is not a ``numpy`` ``uint8`` array of shape (H, W, 3) with H, W >= 1.
    """
    if not isinstance(img, np.ndarray):
        raise ValueError(
            f"{what} must be a numpy array, got {type(img).__name__}; convert a PIL image with "
            "np.asarray(pil_image.convert('RGB')) or load it with nic_lib.data.load_image"
        )
    if img.dtype != np.uint8:
        raise ValueError(
            f"{what} must have dtype uint8, got {img.dtype}; for floats in [0, 1] use "
            "np.clip(np.rint(x * 255), 0, 255).astype(np.uint8), or load images with nic_lib.data.load_image"
        )
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(
            f"{what} must have shape (H, W, 3) (8-bit RGB, channels last), got {img.shape}; "
            "for (3, H, W) use img.transpose(1, 2, 0), for grayscale np.repeat(img[..., None], 3, axis=2), "
            "for RGBA img[..., :3]"
        )
    return np.ascontiguousarray(img)


def _open_image(data: bytes, codec_name: str) -> np.ndarray:
    """Decode ``data`` with Pillow into an RGB uint8 array, or raise a ValueError naming the fix."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"{codec_name}.decode takes bytes, got {type(data).__name__}; pass what encode() returned")
    try:
        with Image.open(io.BytesIO(bytes(data))) as im:
            return np.array(im.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(
            f"{codec_name}: cannot decode {len(data)} bytes ({err}); pass the bytes returned by the same "
            f"codec's encode(), unmodified"
        ) from err


# --------------------------------------------------------------------------- interface


class Codec(abc.ABC):
    """One classic codec: ``encode(img, setting) -> bytes`` and ``decode(bytes) -> img``.

    Subclasses are frozen dataclasses whose fields are the codec's configuration (so a
    variant is ``dataclasses.replace(get_codec("jpeg"), subsampling="4:4:4", name="jpeg-444")``)
    plus ``name`` and ``settings``. They implement :meth:`_encode`, :meth:`decode` and
    :meth:`library`.

    Attributes:
        name: the codec's name in result tables (``"jpeg"``).
        settings: the default rate sweep, in increasing-rate order.
        setting_name: what a setting is (``"quality"``, ``"bpp"``, ``"qp"``).
        setting_range: the smallest and largest valid setting.
        integer_settings: whether settings must be whole numbers.
    """

    name: str
    settings: tuple
    setting_name: ClassVar[str] = "quality"
    setting_range: ClassVar[tuple[float, float]] = (0, 100)
    integer_settings: ClassVar[bool] = True

    # -- the interface

    def encode(self, img: np.ndarray, setting: float) -> bytes:
        """Compress one image at one rate setting.

        Args:
            img: uint8 array (H, W, 3), RGB.
            setting: one rate setting (see :attr:`setting_name` and :attr:`setting_range`).

        Returns:
            The complete decodable file, headers included.

        Raises:
            ValueError: if the image is not uint8 (H, W, 3) or the setting is out of range.
        """
        img = check_image(img)
        return self._encode(img, self.check_setting(setting))

    @abc.abstractmethod
    def decode(self, data: bytes) -> np.ndarray:
        """Decompress what :meth:`encode` returned.

        Args:
            data: the bytes from :meth:`encode`.

        Returns:
            uint8 array (H, W, 3), RGB, the size of the encoded image.

        Raises:
            ValueError: if the bytes cannot be decoded by this codec.
        """

    @abc.abstractmethod
    def _encode(self, img: np.ndarray, setting: float) -> bytes:
        """Encode a checked image at a checked setting."""

    @abc.abstractmethod
    def library(self) -> str:
        """The encoder implementation and its version, e.g. ``"Pillow 11.3.0, libjpeg-turbo 3.1.0"``."""

    # -- helpers shared by every codec

    def check_setting(self, setting: float) -> float:
        """Return ``setting`` if it is valid for this codec (as int for integer settings), else raise.

        Raises:
            ValueError: if it is not a finite number in :attr:`setting_range`, or not whole
                for a codec with integer settings.
        """
        low, high = self.setting_range
        try:
            value = float(setting)
        except (TypeError, ValueError):
            value = float("nan")
        if isinstance(setting, bool) or not math.isfinite(value) or not low <= value <= high:
            raise ValueError(
                f"{self.name}: {self.setting_name} must be a number in [{low}, {high}], got {setting!r}; "
                f"use one of the default sweep get_codec({self.name!r}).settings = {list(self.settings)}"
            )
        if self.integer_settings:
            if value != round(value):
                raise ValueError(
                    f"{self.name}: {self.setting_name} must be a whole number, got {setting!r}; round it, "
                    f"e.g. {round(value)}"
                )
            return int(round(value))
        return value

    @property
    def description(self) -> str:
        """One line saying how the codec is configured: library versions and every option."""
        options = ", ".join(
            f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.name not in ("name", "settings")
        )
        return f"{self.name}: {self.library()}; setting={self.setting_name}; {options}"

    @classmethod
    def is_available(cls) -> bool:
        """Whether this codec can run on this machine (its library or programs are present)."""
        return True

    @classmethod
    def missing_message(cls) -> str:
        """What to install when :meth:`is_available` is False."""
        return ""


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


# --------------------------------------------------------------------------- external programs


class ExternalCodec(Codec):
    """A codec run as command-line programs on temporary files (for codecs Pillow lacks).

    Subclasses name their programs and build the command lines in :meth:`encode_command`
    and :meth:`decode_command` (kept separate so they can be checked without the programs).
    """

    #: Candidate program names per role, first found on PATH wins.
    encoder_programs: ClassVar[tuple[str, ...]]
    decoder_programs: ClassVar[tuple[str, ...]]
    #: Where to get the programs (shown when they are missing).
    install_hint: ClassVar[str]
    #: Seconds before a program run is abandoned (VTM needs minutes per Kodak image at low QP).
    timeout_s: ClassVar[float] = 3600.0

    @staticmethod
    def _which(candidates: Sequence[str]) -> str | None:
        return next((path for path in map(shutil.which, candidates) if path), None)

    @classmethod
    def is_available(cls) -> bool:
        return bool(cls._which(cls.encoder_programs) and cls._which(cls.decoder_programs))

    @classmethod
    def missing_message(cls) -> str:
        missing = [
            " or ".join(programs)
            for programs in (cls.encoder_programs, cls.decoder_programs)
            if not cls._which(programs)
        ]
        return f"codec needs {' and '.join(missing)} on PATH (not found); {cls.install_hint}"

    def _programs(self) -> tuple[str, str]:
        encoder, decoder = self._which(self.encoder_programs), self._which(self.decoder_programs)
        if not (encoder and decoder):
            raise CodecUnavailableError(f"{self.name}: {self.missing_message()}")
        return encoder, decoder

    def _run(self, command: Sequence[str]) -> None:
        """Run one program, raising RuntimeError with its output if it fails."""
        result = subprocess.run(
            [str(c) for c in command], capture_output=True, text=True, timeout=self.timeout_s, check=False
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()[-2000:]
            raise RuntimeError(
                f"{self.name}: `{' '.join(map(str, command))}` exited with {result.returncode}:\n{output}\n"
                "check that the program is the expected build (see this codec's docstring)"
            )

    def library(self) -> str:
        found = [self._which(self.encoder_programs), self._which(self.decoder_programs)]
        return "programs " + ", ".join(path or "(missing)" for path in found)


#: BPG / VTM sweep in QP, high to low QP = increasing rate, meant to span the published
#: bpg444-x265 and vtm Kodak anchors (0.05-1.9 bpp). Not measured here: the programs are
#: not installed on the machines this was written on; check the bpp range on first use.
HEVC_VVC_QPS = (47, 44, 41, 38, 35, 32, 29, 26, 23, 20)


@dataclass(frozen=True)
class BpgCodec(ExternalCodec):
    """BPG (Bellard's HEVC-intra still-image format) through the ``bpgenc``/``bpgdec`` programs.

    Configuration as in the published ``bpg444-x265`` anchor (YCbCr 4:4:4, 8 bits, x265),
    at compression level 9 (bpgenc's slowest and best; its default is 8). The setting is HEVC's QP
    (0..51, lower = more bits). Not measured here: the programs are not installable with pip
    (build from https://bellard.org/bpg/, or ``brew install libbpg`` on macOS).
    """

    name: str = "bpg"
    settings: tuple = HEVC_VVC_QPS
    chroma_format: str = "444"
    color_space: str = "ycbcr"
    bit_depth: int = 8
    hevc_encoder: str = "x265"
    compression_level: int = 9

    setting_name: ClassVar[str] = "qp"
    setting_range: ClassVar[tuple[float, float]] = (0, 51)
    encoder_programs: ClassVar[tuple[str, ...]] = ("bpgenc",)
    decoder_programs: ClassVar[tuple[str, ...]] = ("bpgdec",)
    install_hint: ClassVar[str] = (
        "install libbpg (build it from https://bellard.org/bpg/ with `make`, or `brew install libbpg` "
        "on macOS) and put bpgenc and bpgdec on PATH"
    )

    def encode_command(self, encoder: str, png_path: str, bpg_path: str, qp: int) -> list[str]:
        """The bpgenc command that encodes ``png_path`` into ``bpg_path`` at QP ``qp``."""
        return [
            encoder, "-q", str(qp), "-f", self.chroma_format, "-c", self.color_space,
            "-b", str(self.bit_depth), "-e", self.hevc_encoder, "-m", str(self.compression_level),
            "-o", bpg_path, png_path,
        ]  # fmt: skip

    def decode_command(self, decoder: str, bpg_path: str, png_path: str) -> list[str]:
        """The bpgdec command that decodes ``bpg_path`` into an 8-bit PNG ``png_path``."""
        return [decoder, "-o", png_path, bpg_path]

    def _encode(self, img: np.ndarray, setting: float) -> bytes:
        encoder, _ = self._programs()
        with tempfile.TemporaryDirectory(prefix="nic-bpg-") as tmp:
            png_path, bpg_path = os.path.join(tmp, "in.png"), os.path.join(tmp, "out.bpg")
            Image.fromarray(img).save(png_path)
            self._run(self.encode_command(encoder, png_path, bpg_path, setting))
            return Path(bpg_path).read_bytes()

    def decode(self, data: bytes) -> np.ndarray:
        _, decoder = self._programs()
        with tempfile.TemporaryDirectory(prefix="nic-bpg-") as tmp:
            bpg_path, png_path = os.path.join(tmp, "in.bpg"), os.path.join(tmp, "out.png")
            Path(bpg_path).write_bytes(bytes(data))
            self._run(self.decode_command(decoder, bpg_path, png_path))
            return _open_image(Path(png_path).read_bytes(), self.name)


#: BT.709 luma weights (Kr, Kb), the colour matrix of CompressAI's VTM anchor.
BT709_KR_KB = (0.2126, 0.0722)
#: Environment variable naming VTM's all-intra configuration file.
VTM_CFG_ENV = "NIC_VTM_CFG"
#: The all-intra configuration shipped in VTM's source tree (cfg/encoder_intra_vtm.cfg).
VTM_CFG_NAME = "encoder_intra_vtm.cfg"
#: VTM streams are prefixed with the image height and width (struct format: 2 x uint16,
#: big-endian), counted in the rate: the raw YUV the decoder writes has no header, and
#: 4 bytes cost 8e-5 bpp on a Kodak image.
VTM_SIZE_HEADER = ">HH"


def rgb_to_ycbcr(img: np.ndarray, bit_depth: int) -> np.ndarray:
    """Full-range BT.709 YCbCr of an RGB uint8 image, as planar integers at ``bit_depth`` bits.

    Args:
        img: uint8 array (H, W, 3).
        bit_depth: bits per sample of the output (8 or 10); 10 bits make the conversion
            invertible for 8-bit RGB.

    Returns:
        uint16 array (3, H, W): Y, Cb, Cr.
    """
    kr, kb = BT709_KR_KB
    r, g, b = np.moveaxis(img.astype(np.float64) / 255.0, -1, 0)
    # Y = Kr R + (1 - Kr - Kb) G + Kb B;  Cb = (B - Y) / (2 (1 - Kb)) + 1/2;  Cr = (R - Y) / (2 (1 - Kr)) + 1/2
    y = kr * r + (1.0 - kr - kb) * g + kb * b
    cb = (b - y) / (2.0 * (1.0 - kb)) + 0.5
    cr = (r - y) / (2.0 * (1.0 - kr)) + 0.5
    peak = 2**bit_depth - 1
    return np.clip(np.rint(np.stack([y, cb, cr]) * peak), 0, peak).astype(np.uint16)


def ycbcr_to_rgb(planes: np.ndarray, bit_depth: int) -> np.ndarray:
    """Inverse of :func:`rgb_to_ycbcr`: planar YCbCr integers (3, H, W) -> RGB uint8 (H, W, 3)."""
    kr, kb = BT709_KR_KB
    y, cb, cr = planes.astype(np.float64) / (2**bit_depth - 1)
    # R = Y + 2 (1 - Kr) (Cr - 1/2);  B = Y + 2 (1 - Kb) (Cb - 1/2);  G = (Y - Kr R - Kb B) / (1 - Kr - Kb)
    r = y + 2.0 * (1.0 - kr) * (cr - 0.5)
    b = y + 2.0 * (1.0 - kb) * (cb - 0.5)
    g = (y - kr * r - kb * b) / (1.0 - kr - kb)
    return np.clip(np.rint(np.stack([r, g, b], axis=-1) * 255.0), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class VtmCodec(ExternalCodec):
    """VVC intra through the VTM reference software (``EncoderAppStatic``/``DecoderAppStatic``).

    Configuration: VTM's all-intra configuration file (``encoder_intra_vtm.cfg``), input
    converted to full-range BT.709 YCbCr 4:4:4 at 10 bits (invertible for 8-bit RGB, and
    VTM's usual internal depth), conformance-window padding to VTM's block size. The setting
    is QP (0..63, lower = more bits). The configuration file is found through the
    ``NIC_VTM_CFG`` environment variable, else in ``cfg/`` beside or above the programs'
    folder (VTM's source layout). Not measured here: VTM is built from source
    (https://vcgit.hhi.fraunhofer.de/jvet/VVCSoftware_VTM).
    """

    name: str = "vtm"
    settings: tuple = HEVC_VVC_QPS
    bit_depth: int = 10
    config_path: str | None = None

    setting_name: ClassVar[str] = "qp"
    setting_range: ClassVar[tuple[float, float]] = (0, 63)
    encoder_programs: ClassVar[tuple[str, ...]] = ("EncoderAppStatic", "EncoderApp")
    decoder_programs: ClassVar[tuple[str, ...]] = ("DecoderAppStatic", "DecoderApp")
    install_hint: ClassVar[str] = (
        "build VTM (git clone https://vcgit.hhi.fraunhofer.de/jvet/VVCSoftware_VTM; cmake -B build "
        "-DCMAKE_BUILD_TYPE=Release; cmake --build build) and put its bin/ folder on PATH"
    )

    @classmethod
    def find_config(cls, config_path: str | None = None) -> str | None:
        """The all-intra configuration file: ``config_path``, ``$NIC_VTM_CFG``, or VTM's ``cfg/`` folder."""
        explicit = config_path or os.environ.get(VTM_CFG_ENV)
        if explicit:
            return explicit if os.path.isfile(explicit) else None
        encoder = cls._which(cls.encoder_programs)
        if encoder is None:
            return None
        folder = Path(encoder).resolve().parent
        for base in (folder, *list(folder.parents)[:3]):
            candidate = base / "cfg" / VTM_CFG_NAME
            if candidate.is_file():
                return str(candidate)
        return None

    @classmethod
    def is_available(cls) -> bool:
        return super().is_available() and cls.find_config() is not None

    @classmethod
    def missing_message(cls) -> str:
        if super().is_available():
            return (
                f"VTM's all-intra configuration {VTM_CFG_NAME} was not found; set {VTM_CFG_ENV}="
                f"/path/to/VVCSoftware_VTM/cfg/{VTM_CFG_NAME}"
            )
        return super().missing_message()

    def _config(self) -> str:
        config = self.find_config(self.config_path)
        if config is None:
            raise CodecUnavailableError(f"{self.name}: {self.missing_message()}")
        return config

    def _sample_dtype(self) -> str:
        return "<u2" if self.bit_depth > 8 else "u1"

    def encode_command(
        self, encoder: str, config: str, yuv_path: str, bin_path: str, height: int, width: int, qp: int
    ) -> list[str]:
        """The EncoderApp command that encodes one 4:4:4 YCbCr frame ``yuv_path`` into ``bin_path``."""
        depth = str(self.bit_depth)
        return [
            encoder, "-c", config, "-i", yuv_path, "-b", bin_path, "-o", os.devnull,
            "-wdt", str(width), "-hgt", str(height), "-q", str(qp), "-fr", "1", "-f", "1",
            "--InputChromaFormat=444", f"--InputBitDepth={depth}", f"--InternalBitDepth={depth}",
            f"--OutputBitDepth={depth}", "--ConformanceWindowMode=1",
        ]  # fmt: skip

    def decode_command(self, decoder: str, bin_path: str, yuv_path: str) -> list[str]:
        """The DecoderApp command that decodes ``bin_path`` into raw planar YCbCr ``yuv_path``."""
        return [decoder, "-b", bin_path, "-o", yuv_path, "-d", str(self.bit_depth)]

    def _encode(self, img: np.ndarray, setting: float) -> bytes:
        encoder, _ = self._programs()
        config = self._config()
        height, width = img.shape[:2]
        if max(height, width) > np.iinfo(np.uint16).max:
            raise ValueError(f"vtm: images up to 65535 px a side, got {height}x{width}; crop or tile the image")
        with tempfile.TemporaryDirectory(prefix="nic-vtm-") as tmp:
            yuv_path, bin_path = os.path.join(tmp, "in.yuv"), os.path.join(tmp, "out.bin")
            # VTM's raw files hold one byte per 8-bit sample, a little-endian 16-bit word above 8 bits
            rgb_to_ycbcr(img, self.bit_depth).astype(self._sample_dtype()).tofile(yuv_path)
            self._run(self.encode_command(encoder, config, yuv_path, bin_path, height, width, setting))
            return struct.pack(VTM_SIZE_HEADER, height, width) + Path(bin_path).read_bytes()

    def decode(self, data: bytes) -> np.ndarray:
        _, decoder = self._programs()
        data = bytes(data)
        header = struct.calcsize(VTM_SIZE_HEADER)
        if len(data) <= header:
            raise ValueError(f"vtm: {len(data)} bytes is no VTM stream; pass the bytes returned by encode()")
        height, width = struct.unpack(VTM_SIZE_HEADER, data[:header])
        with tempfile.TemporaryDirectory(prefix="nic-vtm-") as tmp:
            bin_path, yuv_path = os.path.join(tmp, "in.bin"), os.path.join(tmp, "out.yuv")
            Path(bin_path).write_bytes(data[header:])
            self._run(self.decode_command(decoder, bin_path, yuv_path))
            planes = np.fromfile(yuv_path, dtype=self._sample_dtype())
        if planes.size != 3 * height * width:
            raise RuntimeError(
                f"vtm: decoder wrote {planes.size} samples, expected 3 x {height} x {width}; "
                "check that the decoder matches the encoder's VTM version"
            )
        return ycbcr_to_rgb(planes.reshape(3, height, width), self.bit_depth)


# --------------------------------------------------------------------------- registry

#: Every codec this module knows, by name, in its default configuration (frozen: share freely).
CODECS: dict[str, Codec] = {
    codec.name: codec for codec in (JpegCodec(), WebpCodec(), Jpeg2000Codec(), AvifCodec(), BpgCodec(), VtmCodec())
}


def available_codecs() -> list[str]:
    """Names of the codecs that can run on this machine (Pillow's four; ``bpg``/``vtm`` when installed).

    Returns:
        Codec names in :data:`CODECS` order.
    """
    return [name for name, codec in CODECS.items() if codec.is_available()]


def get_codec(name: str) -> Codec:
    """The codec registered under ``name``, in its default configuration.

    Args:
        name: one of :data:`CODECS` (``"jpeg"``, ``"webp"``, ``"jpeg2000"``, ``"avif"``,
            ``"bpg"``, ``"vtm"``).

    Returns:
        A frozen :class:`Codec`; make a variant with ``dataclasses.replace(codec, ...)``.

    Raises:
        ValueError: if no codec has that name (the message lists them).
        CodecUnavailableError: if the codec's library or programs are missing (the message
            names what to install).
    """
    if name not in CODECS:
        raise ValueError(f"unknown codec {name!r}; choose one of {list(CODECS)} (available here: {available_codecs()})")
    codec = CODECS[name]
    if not codec.is_available():
        raise CodecUnavailableError(f"{name}: {codec.missing_message()}")
    return codec


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
