"""One image, whatever the file held: the loading rules (:func:`load_image`: orientation,
16-bit colour, transparency, greyscale -> (H, W, 3) ``uint8`` RGB), the digest of its pixels
(:func:`pixel_sha256`) and centre crops. Part of :mod:`nic_lib.data`, which re-exports these
names.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from nic_lib.errors import NicReproError


#: 16-bit to 8-bit: v8 = round(v16 / 257) maps 0 -> 0 and 65535 -> 255 exactly (257 = 65535/255).
SCALE_16_TO_8 = 257.0
#: Transparent pixels are composited over white, the background a viewer shows them on.
BACKGROUND = 255.0


class ImageLoadError(NicReproError, OSError):
    """A file exists but cannot be decoded as an image."""


def centre_window(shape: tuple[int, ...], height: int, width: int | None = None,
                  shrink: bool = False) -> tuple[slice, slice]:
    """The rows and columns of the central height x width window of an image.

    The one centre-crop rule of the project: the window starts at ((H - height) // 2,
    (W - width) // 2), so an odd margin leaves its extra pixel at the bottom and right.

    Args:
        shape: the image's shape, (H, W, ...).
        height: rows of the window.
        width: columns of the window; None: ``height`` (a square).
        shrink: a side longer than the image's is cut to the image's (a smaller window)
            instead of raising.

    Returns:
        ``(rows, columns)`` slices: ``img[centre_window(img.shape, 256)]`` is the crop; the
        same slices cut the same window from another image of that size.

    Raises:
        ValueError: the image is smaller than the window and ``shrink`` is off.
    """
    h, w = shape[:2]
    width = height if width is None else width
    if shrink:
        height, width = min(height, h), min(width, w)
    elif h < height or w < width:
        raise ValueError(f"image of {h}x{w} is smaller than the {height}x{width} crop; ask for a "
                         "smaller crop (or shrink=True), or use larger images")
    top, left = (h - height) // 2, (w - width) // 2
    return slice(top, top + height), slice(left, left + width)


def centre_crop(img: np.ndarray, height: int, width: int | None = None,
                shrink: bool = False) -> np.ndarray:
    """The central height x width window of an image (a square when ``width`` is None).

    Args and Raises: as :func:`centre_window`.
    """
    return img[centre_window(img.shape, height, width, shrink)]


def centre_crop_oriented(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """The central height x width window, transposed for a portrait image (height > width).

    Raises:
        ValueError: the image is smaller than the window.
    """
    h, w = img.shape[:2]
    if h > w:
        height, width = width, height
    return centre_crop(img, height, width)


# ---------------------------------------------------------------------------------------
# Image loading rules


def _open_16bit_colour(path: Path) -> Image.Image:
    """Read a 16-bit-per-channel colour file with OpenCV and scale it to 8 bits.

    Pillow decodes 48/64-bit PNGs to 8 bits by dropping the low byte (v >> 8); to apply
    round(v / 257) like every other 16-bit input we need the 16-bit samples, which Pillow
    cannot hold in a colour mode. OpenCV (installed with imagecorruptions) reads them.
    """
    try:
        import cv2  # imported here: only 16-bit colour files need it
    except ImportError as err:
        raise ImageLoadError(f"{path} has 16 bits per channel; reading it needs OpenCV: "
                             "`pip install opencv-python-headless`") from err
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ImageLoadError(f"OpenCV cannot decode the 16-bit image {path}; "
                             "convert it to an 8-bit PNG")
    # v8 = round(v16 / 257)
    arr8 = np.rint(arr.astype(np.float64) / SCALE_16_TO_8).astype(np.uint8)
    if arr8.ndim == 2:
        return Image.fromarray(arr8, "L")
    if arr8.shape[2] == 2:
        return Image.fromarray(arr8, "LA")
    if arr8.shape[2] == 4:  # OpenCV orders channels BGR(A)
        return Image.fromarray(arr8[..., [2, 1, 0, 3]].copy(), "RGBA")
    return Image.fromarray(arr8[..., ::-1].copy(), "RGB")


def _is_16bit_colour(im: Image.Image) -> bool:
    """Pillow opened a colour image from 16-bit samples (its raw mode says ';16')."""
    return im.mode in ("RGB", "RGBA") and any(";16" in str(tile.args) for tile in im.tile)


def _to_rgb(im: Image.Image, path: Path) -> np.ndarray:
    """Apply the mode rules of :func:`load_image` to an oriented Pillow image."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # v8 = round(v16 / 257), clipped to the 16-bit range first
        v = np.clip(np.asarray(im, dtype=np.float64), 0, 65535)
        gray = np.rint(v / SCALE_16_TO_8).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode == "PA":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float64)
        alpha = rgba[..., 3:] / 255.0
        if np.all(alpha == 1.0):
            return rgba[..., :3].astype(np.uint8)
        warnings.warn(f"{path}: has transparent pixels; compositing over white", stacklevel=3)
        # out = a * rgb + (1 - a) * white
        return np.rint(alpha * rgba[..., :3] + (1.0 - alpha) * BACKGROUND).astype(np.uint8)
    if im.mode == "L":
        return np.repeat(np.asarray(im)[..., None], 3, axis=2)
    if im.mode != "RGB":  # CMYK, YCbCr, LAB, 1, F, ...: Pillow's own conversion
        im = im.convert("RGB")
    return np.asarray(im, dtype=np.uint8)


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as 8-bit RGB, following the project's loading rules.

    Rules, in order:

    1. EXIF orientation is applied (the array is what a viewer shows).
    2. 8-bit RGB is returned as stored.
    3. Grayscale (L) is replicated to three channels.
    4. 16-bit samples (I;16 grayscale, 48-bit RGB / 64-bit RGBA PNG) become 8-bit by
       round(v / 257); Pillow's 32-bit ``I`` mode is clipped to 0..65535 first. Pillow
       itself would drop the low byte of 16-bit colour PNGs, so those are read with OpenCV.
    5. Palette (P) images become RGB; with a transparent colour they follow rule 6.
    6. With alpha (RGBA, LA, PA): if any pixel is not fully opaque, the image is
       composited over white (out = a*rgb + (1-a)*255) and a warning names the file;
       a fully opaque alpha channel is dropped silently.
    7. Any other mode (CMYK, YCbCr, ...) goes through Pillow's ``convert("RGB")``.

    Args:
        path: image file (PNG, JPEG, WebP, TIFF, ... anything Pillow opens).

    Returns:
        Array of shape (H, W, 3), dtype ``uint8``, RGB.

    Raises:
        FileNotFoundError: no file at ``path``.
        ImageLoadError: the file is not an image Pillow can decode (or is truncated).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no image file at {path}; check the path (list a dataset's "
                                "files with nic_lib.data.list_images(name))")
    try:
        with Image.open(path) as im:
            if _is_16bit_colour(im):
                orientation = im.getexif().get(ExifTags.Base.Orientation)
                im = _open_16bit_colour(path)
                if orientation:
                    exif = Image.Exif()
                    exif[ExifTags.Base.Orientation] = orientation
                    im.info["exif"] = exif.tobytes()
            oriented = ImageOps.exif_transpose(im)
            return _to_rgb(oriented, path)
    except UnidentifiedImageError as err:
        raise ImageLoadError(f"{path} is not an image Pillow can read ({err}); remove it from "
                             "the dataset folder or convert it to PNG") from None
    except (OSError, SyntaxError, ValueError) as err:
        if isinstance(err, ImageLoadError):
            raise
        raise ImageLoadError(f"cannot decode {path} ({type(err).__name__}: {err}); the file may "
                             "be truncated or corrupt: re-download or re-copy it") from err


def pixel_sha256(pixels: np.ndarray) -> str:
    """SHA-256 of decoded pixels, independent of how the file was encoded.

    Args:
        pixels: (H, W, 3) uint8 array, as :func:`load_image` returns.

    Returns:
        Hex digest of ``b"HxWx3:"`` followed by the C-ordered bytes.
    """
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    h, w, c = pixels.shape
    return hashlib.sha256(f"{h}x{w}x{c}:".encode() + pixels.tobytes()).hexdigest()
