"""Training data: image files -> one uint8 pool (decoded once, cached) -> crops from memory.

Speed on a CPU-only machine comes from decoding the training set once into a uint8 pool
(cached as ``.npy`` in the project cache, memory-mapped, so every later run and every DDP
rank starts at once and shares the pages) and cropping from memory in a background thread
instead of decoding files in data-loader processes that compete with the model for the
cores.

Evaluation sets are never trained on: :func:`training_files` refuses them by name and by
folder, and :func:`load_pool` refuses any training image pixel-identical to one of them.
The crops of a step are a pure function of (seed, step) (:class:`CropSampler`), and so is
their spectral alteration when ``--data-filter`` asks for one (:func:`filter_crops`: a
Gaussian blur or added Gaussian noise, applied to the crops after cropping; evaluation
images are never filtered).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import scipy.ndimage
from PIL import Image
from tqdm.auto import tqdm

from nic_lib import data, fileio

from .config import DataFilter, parse_data_filter

#: Datasets that are for evaluation only: training refuses them (and pixel-identical copies).
EVAL_ONLY_DATASETS = ("kodak", "photos-hr", "clic2020-test")
#: JPEG sources (the ImageNet sample) are downscaled by a random factor in this range
#: before cropping, which hides their 8x8 block artefacts (Ballé et al. 2018 did the same).
JPEG_DOWNSCALE = (0.5, 0.75)
JPEG_SUFFIXES = (".jpg", ".jpeg")
#: Bumped when the pool's cache layout changes, so old caches are not misread.
POOL_FORMAT = 1
#: Streams of the per-step random generators (arbitrary distinct constants; the noise's
#: is in :mod:`nic_lib.training.loss`).
_ORDER_STREAM, _CROP_STREAM, _FILTER_STREAM = 0xDA7A, 0xC409, 0xF117
#: The blur's kernel reaches 4σ (scipy's default truncation: a Gaussian's weight beyond 4σ
#: is 6e-5 per axis, under 0.05 grey levels on any image).
BLUR_TRUNCATE = 4.0


def _eval_pixel_hashes() -> dict[str, str]:
    """pixel SHA-256 -> "dataset/file" for every evaluation image with pinned checksums."""
    return {h: f"{name}/{f}" for name in EVAL_ONLY_DATASETS if name in data.DATASETS
            for f, h in data.DATASETS[name].pixel_sha256.items()}


def _eval_dirs() -> list[Path]:
    dirs = []
    for name in EVAL_ONLY_DATASETS:
        try:
            dirs.append(data.dataset_dir(name).resolve())
        except (KeyError, data.DatasetNotFoundError):
            pass
    return dirs


def training_files(sources: tuple[str, ...] | list[str]) -> list[Path]:
    """The image files to train on, refusing evaluation sets.

    Args:
        sources: dataset names of :mod:`nic_lib.data` (``"train"``, ``"train/bsd200"``,
            ``"sample"``) or folders of images.

    Returns:
        Sorted, de-duplicated image paths.

    Raises:
        ValueError: a source is an evaluation set (Kodak, photos-hr, CLIC), lies inside
            one, or holds no images.
        DatasetNotFoundError: a dataset name that cannot be found (message says how).
    """
    files: set[Path] = set()
    for source in sources:
        if source in data.DATASETS:
            if source in EVAL_ONLY_DATASETS:
                raise ValueError(f"--data {source}: {source!r} is an evaluation set and must "
                                 "never be trained on; use --data train (or a folder of your "
                                 "own training images)")
            found = data.list_images(source)
        else:
            folder = Path(source).expanduser().resolve()
            if not folder.is_dir():
                raise ValueError(f"--data {source}: neither a dataset of nic_lib.data "
                                 f"({', '.join(data.DATASETS)}) nor a folder")
            named = [p for p in folder.parts if p.lower() in EVAL_ONLY_DATASETS]
            inside = [d for d in _eval_dirs() if folder == d or d in folder.parents]
            if named or inside:
                raise ValueError(f"--data {source}: folder {folder} is (inside) an evaluation "
                                 "set; training on evaluation images is not allowed. Fix: "
                                 "point --data at training images (e.g. --data train)")
            # the rule data.list_images uses: image suffixes, no hidden files (macOS ._*.jpg)
            found = sorted(p for p in folder.iterdir() if data.is_image_file(p))
        if not found:
            raise ValueError(f"--data {source}: no images found ({', '.join(data.IMAGE_SUFFIXES)})")
        files.update(Path(p).resolve() for p in found)
    return sorted(files)


@dataclasses.dataclass
class ImagePool:
    """Decoded training images in one flat uint8 array (memory-mapped from the cache).

    Attributes:
        pixels: all images, (H, W, 3) C-ordered, concatenated.
        offsets: start of image i in ``pixels``.
        shapes: (H, W) of image i.
        downscale: whether image i is a JPEG to downscale before cropping.
        names: file path of image i.
    """

    pixels: np.ndarray
    offsets: np.ndarray
    shapes: np.ndarray
    downscale: np.ndarray
    names: list[str]

    def image(self, i: int) -> np.ndarray:
        """Image ``i`` as an (H, W, 3) uint8 view (no copy)."""
        h, w = self.shapes[i]
        start = self.offsets[i]
        return self.pixels[start:start + h * w * 3].reshape(h, w, 3)


def _pool_key(files: list[Path]) -> str:
    stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    text = json.dumps({"format": POOL_FORMAT, "files": stats})
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _decode_pool(files: list[Path], target: Path | None) -> tuple[np.ndarray, list]:
    """Decode every file into one uint8 array (written to ``target`` as .npy if given)."""
    sizes = []
    for p in files:
        with Image.open(p) as im:
            w, h = im.size  # EXIF rotation swaps H and W but keeps H*W
            sizes.append(h * w * 3)
    total = int(sum(sizes))
    if target is None:
        pixels = np.empty(total, np.uint8)
    else:
        pixels = np.lib.format.open_memmap(target, mode="w+", dtype=np.uint8, shape=(total,))
    forbidden = _eval_pixel_hashes()
    index, start = [], 0
    for p in tqdm(files, desc="decoding training images", leave=False, mininterval=2):
        img = data.load_image(p)
        digest = data.pixel_sha256(img)
        if digest in forbidden:
            raise ValueError(f"training image {p} has the same pixels as the evaluation image "
                             f"{forbidden[digest]}; remove it from the training folder")
        pixels[start:start + img.size] = img.reshape(-1)
        index.append({"path": str(p), "offset": start, "h": img.shape[0], "w": img.shape[1],
                      "downscale": p.suffix.lower() in JPEG_SUFFIXES})
        start += img.size
    if isinstance(pixels, np.memmap):
        pixels.flush()
    return pixels, index


def load_pool(files: list[Path], cache: Path | None = None) -> ImagePool:
    """Decode training images once into an :class:`ImagePool`, cached on disk.

    The first call decodes every file (checking that none is pixel-identical to an
    evaluation image) and writes ``<cache>/<key>.npy`` + ``.json``; later calls with the same
    files (same paths, sizes and mtimes) memory-map that file instead (instant, and shared
    between processes). Without a writable cache the pool is kept in memory.

    Args:
        files: image files (from :func:`training_files`).
        cache: cache folder; default ``<nic_lib.data.cache_dir()>/train-pool``.

    Returns:
        The pool.

    Raises:
        ValueError: a training image is pixel-identical to a Kodak/photos-hr image.
        ImageLoadError: a file cannot be decoded.
    """
    cache = Path(cache) if cache is not None else data.cache_dir() / "train-pool"
    key = _pool_key(files)
    npy, meta = cache / f"{key}.npy", cache / f"{key}.json"
    if not (npy.is_file() and meta.is_file()):
        with contextlib.ExitStack() as stack:
            try:
                tmp = stack.enter_context(fileio.atomic_path(npy))  # a .npy memory map
            except OSError as err:
                warnings.warn(f"cannot write the pool cache in {cache} ({err}); decoding into "
                              "memory (set NIC_CACHE_DIR to a writable folder to cache it)",
                              stacklevel=2)
                pixels, index = _decode_pool(files, None)
                return _pool_from(pixels, index)
            pixels, index = _decode_pool(files, tmp)
            del pixels
        fileio.atomic_write_text(meta, json.dumps(index))
    index = json.loads(meta.read_text())
    return _pool_from(np.load(npy, mmap_mode="r"), index)


def _pool_from(pixels: np.ndarray, index: list[dict]) -> ImagePool:
    return ImagePool(pixels=pixels,
                     offsets=np.array([e["offset"] for e in index], np.int64),
                     shapes=np.array([(e["h"], e["w"]) for e in index], np.int64),
                     downscale=np.array([e["downscale"] for e in index], bool),
                     names=[e["path"] for e in index])


def filter_crops(crops: np.ndarray, data_filter: DataFilter, seed: int, step: int,
                 rows: range) -> np.ndarray:
    """Alter a step's training crops spectrally (``--data-filter``): blur or noise.

    - ``blur``: x' = round(G_σ * x), a Gaussian of σ pixels over each crop's height and
      width, channel by channel (scipy's ``gaussian_filter``, reflecting at the crop's
      border); the power spectrum is multiplied by |Ĝ(f)|² = exp(−4π²σ²|f|²), f in
      cycles per pixel, so the fine scales fall and the coarse ones stay.
    - ``noise``: x' = clip(round(x + σ·n), 0, 255), n ~ N(0, 1) i.i.d. per pixel and
      channel: white power σ² added to every frequency, which lifts the high band, where
      natural images hold little, and leaves the low band, where they hold most.

    Both keep the mean (up to rounding, and clipping at 0 and 255 for the noise) and
    return uint8, as the crops came. The noise of global-batch row ``r`` is drawn from a
    generator keyed by (seed, step, r), so a step's crops are the same whatever the number
    of ranks sharing the batch, and on resume.

    Args:
        crops: uint8 (B, H, W, 3), rows ``rows`` of a step's global batch.
        data_filter: the parsed ``--data-filter`` (:func:`parse_data_filter`).
        seed, step: the run's seed and the step the crops are for.
        rows: the crops' row indices in the step's global batch (``len(rows) == B``).

    Returns:
        The altered crops, uint8 (B, H, W, 3) (a new array).

    Raises:
        ValueError: an unknown filter kind.
    """
    x = crops.astype(np.float32)
    if data_filter.kind == "blur":
        # x' = G_σ * x over (H, W), not across the batch or the channels
        sigma = (0.0, data_filter.sigma, data_filter.sigma, 0.0)
        x = scipy.ndimage.gaussian_filter(x, sigma, mode="reflect", truncate=BLUR_TRUNCATE)
    elif data_filter.kind == "noise":
        for j, row in enumerate(rows):
            rng = np.random.default_rng([seed, step, _FILTER_STREAM, row])
            # x' = x + σ n, n ~ N(0, 1)
            x[j] += data_filter.sigma * rng.standard_normal(x.shape[1:], dtype=np.float32)
    else:
        raise ValueError(f"data filter {data_filter.kind!r}: use blur or noise")
    # back to the crops' uint8: round, clip to 0..255
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


class CropSampler:
    """Global batches of random crops whose content depends only on (seed, step).

    Image order: one random permutation of the usable images per epoch (every image once
    per epoch, as CompressAI's ImageFolder), seeded by (seed, epoch). Crop position and
    JPEG downscale factor: uniform, seeded by (seed, step). Rank ``r`` of ``W`` takes rows
    ``r·B .. (r+1)·B − 1`` of the global batch of ``W·B`` crops. With a ``data_filter``
    every crop is then altered by :func:`filter_crops`, also a function of (seed, step).
    """

    def __init__(self, pool: ImagePool, crop: int, global_batch: int, seed: int,
                 data_filter: str | None = None):
        """Args:
            pool: decoded training images.
            crop: side of the square crops, in pixels.
            global_batch: crops per step over all ranks.
            seed: run seed.
            data_filter: ``--data-filter`` (``"blur:SIGMA"``, ``"noise:SIGMA"``) or None
                for the crops as they are.

        Raises:
            ValueError: no image is at least ``crop`` pixels on its shorter side, or a bad
                ``data_filter`` (the message names the accepted forms).
        """
        self.pool, self.crop, self.global_batch, self.seed = pool, crop, global_batch, seed
        self.data_filter = parse_data_filter(data_filter) if data_filter is not None else None
        self.usable = np.flatnonzero(pool.shapes.min(axis=1) >= crop)
        self.skipped = len(pool.names) - len(self.usable)
        if not len(self.usable):
            raise ValueError(f"no training image has both sides >= --crop {crop} px; "
                             "use a smaller --crop")
        self._epoch, self._perm = -1, None

    def _image_index(self, k: int) -> int:
        """Pool index of the k-th crop of the run (k counts over all steps and ranks)."""
        n = len(self.usable)
        epoch = k // n
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, epoch, _ORDER_STREAM])
            self._epoch, self._perm = epoch, rng.permutation(n)
        return int(self.usable[self._perm[k % n]])

    def _crop(self, i: int, u: np.ndarray) -> np.ndarray:
        img, c = self.pool.image(i), self.crop
        h, w = img.shape[:2]
        win = c
        if self.pool.downscale[i]:
            # downscale by s ~ U[0.5, 0.75], but never below the crop: s >= c / min(H, W).
            # Cropping a c/s window and resizing it to c equals downscaling the whole image
            # by s and cropping c (up to the filter's reach at the window border), for a
            # fraction of the cost.
            lo = max(JPEG_DOWNSCALE[0], c / min(h, w))
            hi = max(JPEG_DOWNSCALE[1], lo)
            s = lo + u[2] * (hi - lo)
            win = min(h, w, int(round(c / s)))
        y = int(u[0] * (h - win + 1))
        x = int(u[1] * (w - win + 1))
        patch = img[y:y + win, x:x + win]
        if win != c:
            patch = np.asarray(Image.fromarray(np.ascontiguousarray(patch))
                               .resize((c, c), Image.Resampling.BICUBIC))
        return patch

    def batch(self, step: int, rank: int = 0, world: int = 1) -> np.ndarray:
        """This rank's share of the global batch of a step.

        Args:
            step: training step (0-based).
            rank, world: DDP rank and world size (``global_batch`` must divide by ``world``).

        Returns:
            uint8 array (global_batch / world, crop, crop, 3), filtered when the sampler
            has a ``data_filter``.
        """
        per_rank = self.global_batch // world
        u = np.random.default_rng([self.seed, step, _CROP_STREAM]).random((self.global_batch, 3))
        rows = range(rank * per_rank, (rank + 1) * per_rank)
        out = np.empty((per_rank, self.crop, self.crop, 3), np.uint8)
        for j, row in enumerate(rows):
            out[j] = self._crop(self._image_index(step * self.global_batch + row), u[row])
        if self.data_filter is not None:
            out = filter_crops(out, self.data_filter, self.seed, step, rows)
        return out

