"""One image corrupted: the 15 corruptions and their frequency groups, the per-image seed
(:func:`corruption_seed`), :func:`corrupt`, and the clean images a corrupted dataset starts
from (:func:`preprocess`, :func:`load_clean`). Part of :mod:`nic_lib.corruptions`, which
builds and reads the corrupted datasets; import from there.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
from pathlib import Path

import numpy as np

from nic_lib import data


#: The paper's frequency grouping of the 15 corruptions (Lieberman et al. 2023).
CORRUPTION_GROUPS: dict[str, tuple[str, ...]] = {
    "low": ("snow", "frost", "fog", "brightness", "contrast"),
    "mid": ("motion_blur", "zoom_blur", "defocus_blur", "glass_blur", "elastic_transform",
            "jpeg_compression", "pixelate"),
    "high": ("gaussian_noise", "shot_noise", "impulse_noise"),
}
#: Every corruption, in group order (low, mid, high): the order of tables and figures.
CORRUPTIONS: tuple[str, ...] = tuple(c for group in CORRUPTION_GROUPS.values() for c in group)
#: corruption -> its frequency group.
FREQUENCY_GROUP: dict[str, str] = {c: g for g, cs in CORRUPTION_GROUPS.items() for c in cs}
#: ImageNet-C's five severities.
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
#: How seeds are made; stored in the manifest so a change of scheme is never mixed with old files.
SEED_SCHEME = "sha256('<image>|<corruption>')[:4], big-endian, as a 32-bit seed; shared by the 5 severities"
#: Centre crops (height, width) applied after transposing, per dataset: the reference code
#: crops CLIC 2020 test to 512x768, so every CLIC-C image has Kodak's size. photos-hr, the
#: offline CLIC stand-in (25 photos of ~1-1.4 MP, short side >= 664 px once landscape), gets
#: the same crop, so photos-hr-C is built as CLIC-C is (and its crops are
#: nic_lib.data.TUNING_CROP, the very windows the hyperprior models' scale calibration was
#: tuned on: a NIC result on photos-hr-C is not blind to that set).
CENTRE_CROP: dict[str, tuple[int, int]] = {"clic2020-test": (512, 768), "photos-hr": (512, 768)}
#: Corruptions that take their own ``seed`` argument instead of drawing from np.random.
_OWN_SEED = ("glass_blur", "impulse_noise")


# ---------------------------------------------------------------------------------------
# One corruption


def corruption_seed(image: str, corruption: str) -> int:
    """The seed of one image's corruption, the same in every process and machine.

    All five severities use it (common random numbers; see the module docstring).

    Args:
        image: the image's name in its dataset (``"kodim01"``, ``"bsd200/100075"``).
        corruption: one of :data:`CORRUPTIONS`.

    Returns:
        An integer in [0, 2**32): seed = first 4 bytes of SHA-256("image|corruption").
    """
    digest = hashlib.sha256(f"{image}|{corruption}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def _check(corruption: str, severity: int) -> None:
    if corruption not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {corruption!r}; choose one of {list(CORRUPTIONS)} "
                         "(`python -m nic_lib.corruptions list`)")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {list(SEVERITIES)}, got {severity!r}")


@contextlib.contextmanager
def _numpy_seeded(seed: int):
    """Seed numpy's global generator for the block, restoring its previous state afterwards."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def corrupt(img: np.ndarray, corruption: str, severity: int, image: str) -> np.ndarray:
    """Apply one corruption at one severity, deterministically for this image name.

    Args:
        img: uint8 (H, W, 3) RGB, both sides >= 32 pixels (``imagecorruptions``' minimum).
        corruption: one of :data:`CORRUPTIONS`.
        severity: 1..5.
        image: the image's name, which (with the corruption) fixes the seed.

    Returns:
        uint8 (H, W, 3): the corrupted image, as ``imagecorruptions.corrupt`` makes it.

    Raises:
        ValueError: unknown corruption or severity, or an image that is not uint8 RGB >= 32 px.
    """
    from imagecorruptions import (
        corrupt as _corrupt,  # imported here: numba, OpenCV are slow
    )

    _check(corruption, severity)
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or min(img.shape[:2]) < 32:
        raise ValueError(f"image {image!r}: expected uint8 (H, W, 3) with H, W >= 32, got "
                         f"{img.dtype} {img.shape}; load it with nic_lib.data.load_image")
    seed = corruption_seed(image, corruption)
    kwargs = {"seed": seed} if corruption in _OWN_SEED else {}
    with _numpy_seeded(seed):
        out = _corrupt(np.ascontiguousarray(img), severity=severity, corruption_name=corruption, **kwargs)
    return np.ascontiguousarray(out, dtype=np.uint8)


# ---------------------------------------------------------------------------------------
# Clean images as the benchmark sees them


def preprocess(img: np.ndarray, dataset: str) -> np.ndarray:
    """The reference code's preprocessing: portrait -> landscape, then the dataset's centre crop.

    Args:
        img: uint8 (H, W, 3).
        dataset: dataset name; ``clic2020-test`` is centre-cropped to 512x768
            (:data:`CENTRE_CROP`), smaller sides are kept whole.

    Returns:
        uint8 (H', W', 3) with H' <= W' (transposed when H > W: rows and columns swapped).
    """
    if img.shape[0] > img.shape[1]:
        img = img.transpose(1, 0, 2)
    if dataset in CENTRE_CROP:
        img = data.centre_crop(img, *CENTRE_CROP[dataset], shrink=True)
    return np.ascontiguousarray(img)


def _preprocess_description(dataset: str) -> str:
    crop = CENTRE_CROP.get(dataset)
    return "transpose portrait to landscape" + (f"; centre crop {crop[0]}x{crop[1]}" if crop else "")


def _sources(dataset: str, limit: int | None, root) -> list[tuple[str, Path]]:
    """(image name, file) of the clean dataset, names as :func:`nic_lib.data.load_images` gives them."""
    folder = data.dataset_dir(dataset, root=root)
    return [(p.relative_to(folder).with_suffix("").as_posix(), p)
            for p in data.list_images(dataset, root=root, limit=limit)]


@functools.lru_cache(maxsize=2)  # a worker does every corruption of one image in a row
def _load_source(path: str, dataset: str) -> np.ndarray:
    return preprocess(data.load_image(path), dataset)


def load_clean(dataset: str, limit: int | None = None, root: str | os.PathLike | None = None
               ) -> list[tuple[str, np.ndarray]]:
    """The clean images of a dataset, preprocessed as its -C version (:func:`preprocess`).

    Args:
        dataset: a :mod:`nic_lib.data` dataset name.
        limit: only the first ``limit`` images.
        root: see :func:`nic_lib.data.dataset_dir`.

    Returns:
        ``[(name, uint8 (H, W, 3)), ...]`` in file order.

    Raises:
        nic_lib.data.DatasetNotFoundError: the dataset is not found (the message says how to get it).
    """
    return [(name, _load_source(str(path), dataset)) for name, path in _sources(dataset, limit, root)]
