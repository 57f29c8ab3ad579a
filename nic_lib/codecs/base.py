"""The interface every classic codec implements (:class:`Codec`) and the checks it shares.

``encode(img, setting) -> bytes`` and ``decode(bytes) -> img`` on 8-bit RGB arrays (H, W, 3);
:func:`check_image` validates the input, ``_open_image`` decodes a Pillow-readable file.
Part of :mod:`nic_lib.codecs` (the package's docstring describes the codecs).
"""

from __future__ import annotations

import abc
import io
import math
from dataclasses import fields
from typing import ClassVar

import numpy as np
from PIL import Image


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
