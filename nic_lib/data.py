"""Named image datasets: where they are found, how they are downloaded, how pixels are read.

Every experiment starts here: ``load_images("kodak")`` gives ``(name, pixels)`` pairs,
pixels as (H, W, 3) ``uint8`` RGB whatever the file held (see :func:`load_image`).

Datasets (the registry :data:`DATASETS`; ``python -m nic_lib.data list`` prints it):

- ``kodak``: the 24 Kodak Lossless True Color images kodim01..kodim24 (public; downloadable).
- ``photos-hr``: 25 high-resolution photographs that exist only in the shared folder
  beside this project (no public source).
- ``clic2020-test``: the CLIC 2020 professional test images (public archive, 891 MB).
- ``train``: the training folders ``train/bsd200``, ``train/div2k-crops``,
  ``train/urban100-crops``, ``train/imagenet-sample`` (each also a dataset by that name).
- ``sample``: four colour photos shipped inside scikit-image (astronaut, chelsea, coffee,
  rocket); needs no download and no network, for offline demos and CI smoke runs.

Look-up order of :func:`dataset_dir` (the first place whose ``<dataset>/`` folder holds any
of the dataset's images wins; if that folder is incomplete it is an error, never a silently
partial dataset; empty folders are passed over):

1. the explicit ``root`` argument: a folder containing ``<dataset>/``, or the dataset
   folder itself. When given, nothing else is searched.
2. ``$NIC_DATA_DIR/<dataset>``: a folder of your own holding ``<dataset>/`` subfolders.
3. the project cache ``$NIC_CACHE_DIR/data/<dataset>`` (default ``~/.cache/nic-repro``),
   where downloads go.
4. the shared folder ``<repo>/../shared/data/<dataset>``, where ``<repo>`` is the folder
   holding the ``nic_lib`` package (``$NIC_SHARED_DATA`` points elsewhere).
5. with ``download=True``, a download into the cache where a public source exists.

Downloads (:func:`download_dataset`, or ``python -m nic_lib.data download kodak``) check the
SHA-256 of every file, write each file atomically (temporary file + ``os.replace``), skip
files already present and verified, and delete a file whose checksum does not match.

This module imports nothing else from the project but the leaf ``nic_lib.fileio``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import urllib.error
import urllib.request
import warnings
import zipfile
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from nic_lib import fileio
from nic_lib.errors import NicReproError

#: Repository root: the folder holding the ``nic_lib`` package.
REPO_ROOT = Path(__file__).resolve().parent.parent
#: Data shipped beside the repository on the project's machines (read-only).
DEFAULT_SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
#: Project cache when ``NIC_CACHE_DIR`` is unset; ``~/.cache`` is where users expect caches.
DEFAULT_CACHE_DIR = Path("~/.cache/nic-repro")

ENV_DATA_DIR = "NIC_DATA_DIR"
ENV_CACHE_DIR = "NIC_CACHE_DIR"
ENV_SHARED_DATA = "NIC_SHARED_DATA"

#: File types counted as images in folders without a fixed file list (training sets are
#: PNG or JPEG; users may bring the others).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".ppm")
#: 16-bit to 8-bit: v8 = round(v16 / 257) maps 0 -> 0 and 65535 -> 255 exactly (257 = 65535/255).
SCALE_16_TO_8 = 257.0
#: Transparent pixels are composited over white, the background a viewer shows them on.
BACKGROUND = 255.0
#: Seconds without data before a download gives up; generous for slow academic servers.
DOWNLOAD_TIMEOUT_S = 60
#: Bytes read at a time while downloading and hashing (1 MiB: few syscalls, little memory).
CHUNK_BYTES = 1 << 20
#: Some servers refuse Python's default user agent; say who we are instead.
USER_AGENT = "nic-repro/0.1 (dataset download; Python urllib)"
#: Pinned checksums (file SHA-256 and pixel SHA-256, see :func:`pixel_sha256`).
CHECKSUMS_RESOURCE = "checksums.json"


class DatasetNotFoundError(NicReproError, FileNotFoundError):
    """A dataset is in none of the places looked; the message lists them and the fix."""


class DatasetIncompleteError(DatasetNotFoundError):
    """A dataset folder exists but lacks files; the message names them and the fix."""


class ChecksumError(NicReproError, OSError):
    """A downloaded file does not match its pinned SHA-256; the file was not kept."""


class DownloadError(NicReproError, OSError):
    """A download could not be fetched (network, proxy, missing file on the server)."""


class ImageLoadError(NicReproError, OSError):
    """A file exists but cannot be decoded as an image."""


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What a dataset is and how to check and fetch it.

    Attributes:
        name: registry key, also the folder name below a data root (``train/bsd200``).
        description: one line for humans.
        source: where it comes from and how to get it (shown in errors).
        files: the exact file names expected, when they are fixed (Kodak).
        min_count: otherwise, the least number of images a complete folder holds.
        sha256: file name -> SHA-256 of the file's bytes, where known.
        pixel_sha256: file name -> :func:`pixel_sha256` of its decoded pixels, where known;
            a file matching either hash is accepted (a re-encoded PNG keeps its pixels).
        base_url: per-file download: file ``f`` is fetched from ``base_url + f``.
        archive_url: whole-set download: a zip whose images are extracted flat.
        archive_sha256: SHA-256 of that zip.
        subsets: for an umbrella dataset (``train``), the datasets it is made of.
        embedded: shipped inside an installed package; never searched for or downloaded.
    """

    name: str
    description: str
    source: str
    files: tuple[str, ...] = ()
    min_count: int | None = None
    sha256: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False)
    pixel_sha256: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False)
    base_url: str | None = None
    archive_url: str | None = None
    archive_sha256: str | None = None
    subsets: tuple[str, ...] = ()
    embedded: bool = False

    @property
    def downloadable(self) -> bool:
        """Whether :func:`download_dataset` can fetch this dataset."""
        return bool(self.base_url or self.archive_url)


def _load_checksums() -> dict[str, dict[str, dict[str, str]]]:
    text = resources.files("nic_lib").joinpath("resources", CHECKSUMS_RESOURCE).read_text()
    return {k: v for k, v in json.loads(text).items() if not k.startswith("_")}


def _pinned(name: str, checksums: dict) -> dict:
    """Fields of a DatasetSpec pinning the files listed under ``name`` in checksums.json."""
    entries = checksums[name]
    return {
        "files": tuple(sorted(entries)),
        "sha256": {f: e["sha256"] for f, e in entries.items()},
        "pixel_sha256": {f: e["pixel_sha256"] for f, e in entries.items()},
    }


def _registry() -> dict[str, DatasetSpec]:
    sums = _load_checksums()
    train = {  # training folders and how many images each holds in the shared copy
        "bsd200": (200, "Berkeley Segmentation Dataset training images, 481x321 PNG"),
        "div2k-crops": (100, "256x256 PNG crops of DIV2K validation images"),
        "urban100-crops": (100, "256x256 PNG crops of Urban100"),
        "imagenet-sample": (600, "one ImageNet validation-style JPEG per class"),
    }
    shared_only = "found only in the shared folder beside the project (no public download)"
    specs = [
        DatasetSpec(
            "kodak",
            "Kodak Lossless True Color Image Suite: 24 PNG, 768x512 (6 portrait)",
            source="http://r0k.us/graphics/kodak/ "
            "(public; `python -m nic_lib.data download kodak`)",
            base_url="http://r0k.us/graphics/kodak/kodak/",
            **_pinned("kodak", sums),
        ),
        DatasetSpec(
            "photos-hr",
            "25 photographs of about 1.0-1.4 megapixels (Wikimedia Commons, downsampled)",
            source="no public source: a folder of 25 PNG " + shared_only,
            **_pinned("photos-hr", sums),
        ),
        DatasetSpec(
            "clic2020-test",
            "CLIC 2020 professional test images (PNG)",
            source="https://www.compression.cc/ (CLIC 2020); archive "
            "CLIC2020Professional_test.zip, 891,643,809 bytes; "
            "`python -m nic_lib.data download clic2020-test` fetches and unpacks it",
            # 250 professional test images (as public loaders count them); with the 178
            # mobile ones they make the 428 CLIC 2020 test images of the OOD-NIC paper.
            min_count=250,
            archive_url="https://data.vision.ee.ethz.ch/cvl/clic/test/"
            "CLIC2020Professional_test.zip",
            # SHA-256 as pinned by TensorFlow Datasets (url_checksums/clic.txt).
            archive_sha256="857df244fc2bfa5da28d4c66bf0db16ee99bfc79eb807be8afa89cd507852884",
        ),
        DatasetSpec(
            "train",
            "all training folders: " + ", ".join(f"train/{s}" for s in train),
            source="training images " + shared_only,
            subsets=tuple(f"train/{s}" for s in train),
        ),
        *(
            DatasetSpec(f"train/{s}", desc, source=f"{desc}, {shared_only}", min_count=n)
            for s, (n, desc) in train.items()
        ),
        DatasetSpec(
            "sample",
            "4 colour photos bundled in scikit-image: astronaut, chelsea, coffee, rocket",
            source="the scikit-image package (installed with nic-repro)",
            files=("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg"),
            embedded=True,
        ),
    ]
    return {s.name: s for s in specs}


#: Every dataset by name.
DATASETS: dict[str, DatasetSpec] = _registry()


# ---------------------------------------------------------------------------------------
# Where datasets live


def cache_dir() -> Path:
    """The project cache: ``$NIC_CACHE_DIR``, default ``~/.cache/nic-repro``.

    Returns:
        The cache folder (not created here).
    """
    return Path(os.environ.get(ENV_CACHE_DIR) or DEFAULT_CACHE_DIR).expanduser()


def data_cache_dir() -> Path:
    """Where downloaded datasets go: ``<cache_dir()>/data``.

    Returns:
        The folder holding one ``<dataset>/`` subfolder per downloaded dataset.
    """
    return cache_dir() / "data"


def shared_data_dir() -> Path:
    """The shared data folder: ``$NIC_SHARED_DATA``, default ``<repo>/../shared/data``.

    Returns:
        That folder (it may not exist on a user's machine).
    """
    return Path(os.environ.get(ENV_SHARED_DATA) or DEFAULT_SHARED_DATA).expanduser()


def get_spec(name: str) -> DatasetSpec:
    """The registry entry for a dataset name.

    Args:
        name: a key of :data:`DATASETS`, e.g. ``"kodak"`` or ``"train/bsd200"``.

    Returns:
        Its :class:`DatasetSpec`.

    Raises:
        KeyError: for an unknown name; the message lists the known ones.
    """
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join(DATASETS)
        raise KeyError(f"unknown dataset {name!r}; known datasets: {known}") from None


def _embedded_dir() -> Path:
    import skimage.data  # imported here: only the sample set needs it

    return Path(skimage.data.__file__).parent


def is_image_file(path: Path) -> bool:
    """Whether ``path`` is a file this module loads as an image: a known suffix
    (:data:`IMAGE_SUFFIXES`) and not hidden (our own ``.part`` downloads, macOS ``._`` files)."""
    hidden = path.name.startswith(".")  # e.g. our own .part files, macOS ._ files
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not hidden


def _missing(spec: DatasetSpec, folder: Path) -> list[str]:
    """What a folder lacks to hold the complete dataset ([] when complete)."""
    if spec.subsets:
        gaps = []
        for sub in spec.subsets:
            sub_dir = folder / Path(sub).name
            if not sub_dir.is_dir():
                gaps.append(f"{Path(sub).name}/ (no such folder)")
            else:
                gaps += [f"{Path(sub).name}/{m}" for m in _missing(DATASETS[sub], sub_dir)]
        return gaps
    if spec.files:
        return [f for f in spec.files if not (folder / f).is_file()]
    found = sum(1 for p in folder.iterdir() if is_image_file(p))
    if spec.min_count and found < spec.min_count:
        return [f"{spec.min_count - found} of {spec.min_count} images (found {found})"]
    return []


def _looks_like_dataset(spec: DatasetSpec, folder: Path) -> bool:
    """Whether ``folder`` holds any of the dataset's files (empty folders count as absent)."""
    if not folder.is_dir():
        return False
    if spec.subsets:
        return any((folder / Path(s).name).is_dir() for s in spec.subsets)
    return any(is_image_file(p) for p in folder.iterdir())


def _candidates(spec: DatasetSpec, root: str | os.PathLike | None) -> list[tuple[str, Path]]:
    """(label, folder) pairs in look-up order, download destination excluded."""
    if root is not None:
        root = Path(root).expanduser()
        return [("root argument", root / spec.name), ("root argument, as the dataset folder", root)]
    places = []
    if os.environ.get(ENV_DATA_DIR):
        places.append((f"${ENV_DATA_DIR}", Path(os.environ[ENV_DATA_DIR]).expanduser() / spec.name))
    places.append((f"project cache (${ENV_CACHE_DIR}/data)", data_cache_dir() / spec.name))
    places.append((f"shared folder (${ENV_SHARED_DATA})", shared_data_dir() / spec.name))
    return places


def _fix_hint(spec: DatasetSpec) -> str:
    name = spec.name
    lines = [
        f"  - set {ENV_DATA_DIR}=/path/to/data, a folder containing {name}/ "
        f"(e.g. `export {ENV_DATA_DIR}=$HOME/datasets`)",
        f"  - or pass root='/path/to/{name}' (the dataset folder itself) in Python",
    ]
    if spec.downloadable:
        lines.append(f"  - or download it: `python -m nic_lib.data download {name}` "
                     f"(or dataset_dir({name!r}, download=True))")
    return "\n".join(lines)


def _incomplete_error(spec: DatasetSpec, folder: Path, missing: list[str]
                      ) -> DatasetIncompleteError:
    shown = ", ".join(missing[:10])
    if len(missing) > 10:
        shown += f" and {len(missing) - 10} more"
    fix = (f"run `python -m nic_lib.data download {spec.name} --dest {folder}` (it resumes)"
           if spec.downloadable else "copy the missing files there")
    return DatasetIncompleteError(
        f"dataset {spec.name!r} at {folder} is incomplete: missing {shown}. "
        f"Fix: {fix}, or remove that folder so the next place in the look-up order is used "
        f"(source: {spec.source})."
    )


def dataset_dir(name: str, root: str | os.PathLike | None = None, download: bool = False) -> Path:
    """Find a dataset's folder, following the look-up order in the module docstring.

    Args:
        name: dataset name, e.g. ``"kodak"``, ``"train"``, ``"train/bsd200"``.
        root: a folder containing ``<name>/``, or the dataset folder itself; when given,
            only this place is searched (and downloads go to ``root/<name>``).
        download: fetch the dataset into the cache (or ``root/<name>``) when it is not
            found, or finish an incomplete download there, where a public source exists.

    Returns:
        The dataset folder (for ``sample``, scikit-image's bundled data folder).

    Raises:
        KeyError: unknown dataset name.
        DatasetNotFoundError: the dataset is in none of the places; the message lists every
            place looked and how to fix it.
        DatasetIncompleteError: the first folder found lacks files.
        ChecksumError: a download did not match its pinned checksum.
    """
    spec = get_spec(name)
    if spec.embedded:
        return _embedded_dir()
    places = _candidates(spec, root)
    dest = places[0][1] if root is not None else data_cache_dir() / spec.name
    for _label, folder in places:
        if not _looks_like_dataset(spec, folder):  # absent, or an empty folder left behind
            continue
        missing = _missing(spec, folder)
        if not missing:
            return folder
        if download and spec.downloadable and folder == dest:
            return download_dataset(name, dest)
        raise _incomplete_error(spec, folder, missing)
    if download and spec.downloadable:
        return download_dataset(name, dest)
    looked = "\n".join(f"  - {folder}  [{label}]" for label, folder in places)
    if root is None and not os.environ.get(ENV_DATA_DIR):
        looked = f"  - (${ENV_DATA_DIR} is not set)\n" + looked
    raise DatasetNotFoundError(
        f"dataset {name!r} not found ({spec.description}; source: {spec.source}).\n"
        f"Looked in:\n{looked}\nFix:\n{_fix_hint(spec)}"
    )


def list_images(name: str, root: str | os.PathLike | None = None, limit: int | None = None
                ) -> list[Path]:
    """The image files of a dataset, sorted.

    Args:
        name: dataset name (see :data:`DATASETS`).
        root: see :func:`dataset_dir`.
        limit: keep only the first ``limit`` files (after sorting); ``None`` keeps all.

    Returns:
        Sorted paths. A dataset with fixed file names lists exactly those; others list the
        image files (:data:`IMAGE_SUFFIXES`) of their folder, or of every subset folder.

    Raises:
        KeyError, DatasetNotFoundError, DatasetIncompleteError: as :func:`dataset_dir`.
    """
    return _image_paths(get_spec(name), dataset_dir(name, root=root), limit)


def _image_paths(spec: DatasetSpec, folder: Path, limit: int | None) -> list[Path]:
    """The sorted image files of ``spec`` in its (already found) ``folder``; see list_images."""
    if spec.subsets:
        paths = [p for s in spec.subsets for p in (folder / Path(s).name).iterdir() if is_image_file(p)]
    elif spec.files:
        paths = [folder / f for f in spec.files]
    else:
        paths = [p for p in folder.iterdir() if is_image_file(p)]
    paths = sorted(paths)
    return paths if limit is None else paths[:limit]


def load_images(name: str, limit: int | None = None, root: str | os.PathLike | None = None
                ) -> list[tuple[str, np.ndarray]]:
    """Load a dataset as (image name, pixels) pairs.

    Args:
        name: dataset name; ``"sample"`` works offline with no data files.
        limit: load only the first ``limit`` images of :func:`list_images`.
        root: see :func:`dataset_dir`.

    Returns:
        ``[(name, (H, W, 3) uint8 RGB array), ...]`` in file order. The name is the path
        relative to the dataset folder without extension (``"kodim01"``, ``"bsd200/100075"``).

    Raises:
        KeyError, DatasetNotFoundError, DatasetIncompleteError: as :func:`dataset_dir`.
        ImageLoadError: a file cannot be decoded.
    """
    spec = get_spec(name)
    folder = dataset_dir(name, root=root)  # found once: the look-up checks every file
    return [(p.relative_to(folder).with_suffix("").as_posix(), load_image(p))
            for p in _image_paths(spec, folder, limit)]


#: Held-out photos for tuning coding parameters (PQ-MIM's attention radius, the hyperprior
#: models' scale calibration): photos-hr, the CLIC stand-in, never Kodak (the test set).
TUNING_SET = "photos-hr"
#: Tuning crops have Kodak's size (landscape; portrait photos get the transpose).
TUNING_CROP = (512, 768)


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


def load_tuning_images(limit: int = 12) -> list[tuple[str, np.ndarray]]:
    """The first ``limit`` images of :data:`TUNING_SET`, centre-cropped to :data:`TUNING_CROP`."""
    return [(name, centre_crop_oriented(img, *TUNING_CROP))
            for name, img in load_images(TUNING_SET, limit=limit)]


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


# ---------------------------------------------------------------------------------------
# Checksums and downloads


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in chunks.

    Args:
        path: the file.

    Returns:
        Hex digest.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verified(spec: DatasetSpec, file: str, path: Path) -> bool:
    """Whether ``path`` matches the pinned file hash or, failing that, the pixel hash."""
    if file not in spec.sha256 and file not in spec.pixel_sha256:
        return path.is_file() and path.stat().st_size > 0
    if spec.sha256.get(file) == file_sha256(path):
        return True
    if file in spec.pixel_sha256:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return pixel_sha256(load_image(path)) == spec.pixel_sha256[file]
        except OSError:
            return False
    return False


def verify_dataset(name: str, root: str | os.PathLike | None = None) -> Path:
    """Check every file of a dataset against its pinned checksums.

    Args:
        name: dataset name.
        root: see :func:`dataset_dir`.

    Returns:
        The verified dataset folder.

    Raises:
        ChecksumError: files that match neither their file nor their pixel hash.
        KeyError, DatasetNotFoundError, DatasetIncompleteError: as :func:`dataset_dir`.
    """
    spec = get_spec(name)
    folder = dataset_dir(name, root=root)
    bad = [f for f in spec.files if not _verified(spec, f, folder / f)]
    if bad:
        raise ChecksumError(f"{len(bad)} file(s) of {name!r} in {folder} do not match the pinned "
                            f"checksums: {', '.join(bad)}. Fix: delete them and re-copy or re-run "
                            f"`python -m nic_lib.data download {name} --dest {folder}`")
    return folder


def _fetch(url: str, out) -> None:
    """Stream ``url`` into the open binary file ``out`` (http(s) and file:// URLs)."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
        shutil.copyfileobj(response, out, CHUNK_BYTES)


def _download_to(url: str, target: Path, accept) -> None:
    """Download ``url`` to ``target`` atomically; ``accept(tmp_path)`` must approve it.

    The download goes to a hidden ``.part`` file beside ``target``; ``accept`` checks it
    (raising to reject it) before it is renamed onto ``target``. A rejected or failed
    download leaves no file behind.
    """
    with fileio.atomic_path(target, suffix=".part") as tmp:
        with open(tmp, "wb") as out:
            try:
                _fetch(url, out)
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                raise DownloadError(
                    f"cannot download {url} ({getattr(err, 'reason', err)}). Fix: check the "
                    f"network or proxy and retry (finished files are kept), or put the files "
                    f"in {target.parent} by hand, or set {ENV_DATA_DIR} to a folder holding them"
                ) from err
        accept(tmp)


def _checksum_error(what: str, url: str, expected: str, path: Path) -> ChecksumError:
    return ChecksumError(
        f"checksum mismatch for {what} downloaded from {url}: expected SHA-256 {expected}, "
        f"got {file_sha256(path)}; the file was not kept. Fix: retry the download (a "
        "truncated transfer or a proxy page is the usual cause); if it persists the upstream "
        "file has changed: report it and place verified copies under $NIC_DATA_DIR"
    )


def _download_files(spec: DatasetSpec, dest: Path) -> None:
    for file in spec.files:
        target = dest / file
        if target.exists() and _verified(spec, file, target):
            continue
        url = spec.base_url + file

        def accept(tmp: Path, file=file, url=url) -> None:
            if not _verified(spec, file, tmp):
                raise _checksum_error(file, url, spec.sha256.get(file, "(pixel hash)"), tmp)

        _download_to(url, target, accept)


def _download_archive(spec: DatasetSpec, dest: Path) -> None:
    if dest.is_dir() and not _missing(spec, dest):
        return
    archive = dest.parent / f"{Path(spec.name).name}.zip"
    if not (archive.is_file() and file_sha256(archive) == spec.archive_sha256):

        def accept(tmp: Path) -> None:
            if file_sha256(tmp) != spec.archive_sha256:
                raise _checksum_error(archive.name, spec.archive_url, spec.archive_sha256, tmp)

        _download_to(spec.archive_url, archive, accept)
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as zf:
        members = [m for m in zf.infolist() if not m.is_dir() and "__MACOSX" not in m.filename
                   and Path(m.filename).suffix.lower() in IMAGE_SUFFIXES]
        names = [Path(m.filename).name for m in members]  # flattened: no path escapes dest
        if len(set(names)) != len(names):
            raise ValueError(f"{archive} holds several images with the same file name; "
                             f"unpack it by hand into {dest} keeping what you need")
        for member, name in zip(members, names):
            with fileio.atomic_open(dest / name, "wb", suffix=".part") as out, zf.open(member) as src:
                shutil.copyfileobj(src, out, CHUNK_BYTES)
    archive.unlink()  # unpacked and complete: the images are what we keep


def download_dataset(name: str, dest: str | os.PathLike | None = None) -> Path:
    """Download a public dataset, verifying checksums; resumes where it stopped.

    Args:
        name: a dataset with a public source (``kodak``, ``clic2020-test``).
        dest: the dataset folder to fill; default ``<data_cache_dir()>/<name>``.

    Returns:
        The dataset folder, complete.

    Raises:
        KeyError: unknown dataset name.
        DatasetNotFoundError: the dataset has no public source (the message says where it
            can come from).
        ChecksumError: a downloaded file does not match its pinned SHA-256 (not kept).
        DownloadError: the server cannot be reached or does not have the file.
    """
    spec = get_spec(name)
    if not spec.downloadable:
        raise DatasetNotFoundError(
            f"dataset {name!r} cannot be downloaded: {spec.source}.\nFix:\n{_fix_hint(spec)}")
    dest = Path(dest).expanduser() if dest is not None else data_cache_dir() / spec.name
    try:
        if spec.archive_url:
            _download_archive(spec, dest)
        else:
            _download_files(spec, dest)
    finally:
        if dest.is_dir() and not any(dest.iterdir()):
            dest.rmdir()  # nothing arrived: leave no empty folder to shadow other places
    missing = _missing(spec, dest)
    if missing:
        raise _incomplete_error(spec, dest, missing)
    return dest


# ---------------------------------------------------------------------------------------
# Command line: python -m nic_lib.data {list,where,download,verify} ...


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point.

    Args:
        argv: arguments without the program name; default ``sys.argv[1:]``.

    Returns:
        Exit status: 0 on success, 1 when a dataset is missing, incomplete or corrupt.
    """
    parser = argparse.ArgumentParser(prog="python -m nic_lib.data",
                                     description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every dataset, and where it is found")
    where = sub.add_parser("where", help="print the folder a dataset is found in")
    where.add_argument("name", choices=list(DATASETS))
    where.add_argument("--root", help="search only this folder (see dataset_dir)")
    where.add_argument("--download", action="store_true", help="download if not found")
    download = sub.add_parser("download", help="download a public dataset into the cache")
    download.add_argument("name", choices=[n for n, s in DATASETS.items() if s.downloadable])
    download.add_argument("--dest", help="dataset folder to fill (default: the project cache)")
    verify = sub.add_parser("verify", help="check a dataset's files against pinned checksums")
    verify.add_argument("name", choices=[n for n, s in DATASETS.items() if s.sha256])
    verify.add_argument("--root", help="search only this folder (see dataset_dir)")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            for name, spec in DATASETS.items():
                try:
                    found = str(dataset_dir(name))
                except DatasetNotFoundError as err:
                    found = "incomplete" if isinstance(err, DatasetIncompleteError) else "not found"
                print(f"{name:22s} {found}\n{'':22s} {spec.description}")
        elif args.command == "where":
            print(dataset_dir(args.name, root=args.root, download=args.download))
        elif args.command == "download":
            print(download_dataset(args.name, args.dest))
        else:
            print(f"{verify_dataset(args.name, root=args.root)}: all files match")
    except (DatasetNotFoundError, ChecksumError, DownloadError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
