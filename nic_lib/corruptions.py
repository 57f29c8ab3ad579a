"""The OOD-NIC corruptions and the ``-C`` datasets built from them (Kodak-C, CLIC-C, ...).

Lieberman et al. (NeurIPS 2023) measure image codecs under distribution shift with the
15 ImageNet-C corruptions at severities 1-5, grouped by the frequencies they change:

===========  ==================================================================================
group        corruptions
===========  ==================================================================================
``low``      snow, frost, fog, brightness, contrast
``mid``      motion_blur, zoom_blur, defocus_blur, glass_blur, elastic_transform,
             jpeg_compression, pixelate
``high``     gaussian_noise, shot_noise, impulse_noise
===========  ==================================================================================

The pixels come from the ``imagecorruptions`` package (the maintained fork of the ImageNet-C
code for any image size; glass blur there is already compiled with numba, ~0.1 s per Kodak
image). This module adds only what the package lacks:

- **Determinism.** The same (image name, corruption, severity) always gives the same pixels,
  whatever the order, the process or the number of workers: :func:`corruption_seed` hashes
  the image and corruption names (SHA-256) into a 32-bit seed; numpy's global generator
  (which the package draws from) is seeded with it around the call and restored afterwards,
  and the two corruptions with their own generator (``glass_blur``'s numba one,
  ``impulse_noise``'s scikit-image one) receive it as their ``seed``. The severity is left
  out of the seed on purpose (common random numbers): the five severities of one image share
  their random draws (the same frost texture and crop, the same noise pattern scaled up), so
  severity is the only thing that changes between them. With a seed per severity, frost
  picks one of six textures independently at each severity, and on some images severity 5
  then lies *closer* to the clean image than severity 1 (seen on a 96x128 crop of
  scikit-image's astronaut: MSE 5005 at severity 1, 4086 at 5). Across machines the pixels are equal for
  equal library versions (OpenCV/SciPy kernels may round differently elsewhere); the manifest
  keeps a hash of the pixels of every file so that can be checked.
- **Preprocessing as in the reference code** (:func:`preprocess`): portrait images are
  transposed to landscape (Kodak's 6 portrait images become 768x512 like the others, so every
  Kodak-C image has one size); CLIC 2020 test images are, after that, centre-cropped to
  512x768. We transpose (swap rows and columns) rather than rotate: both give the reference's
  landscape shape, and a transpose keeps the image's spectrum (mirrored on the diagonal).
  The clean images the benchmark compares against go through the same step
  (:func:`load_clean`).
- **The -C dataset on disk**: ``<out>/<dataset>-C/<corruption>/<severity>/<image>.png`` plus
  ``MANIFEST.json`` holding, per file, the SHA-256 of its bytes, the hash of its pixels
  (:func:`nic_lib.data.pixel_sha256`), the hash of the clean source pixels and the seed.
  Built in parallel (one process per core), with a progress bar; every file written
  atomically; resumable (a file already listed in the manifest, matching its hash and built
  from the same source pixels is skipped); :func:`verify` re-hashes every file.

Where -C datasets live (:func:`corrupted_dir`): the ``out`` argument (a folder that will hold
``<dataset>-C/``), else ``$NIC_DATA_DIR/<dataset>-C`` when it holds a manifest, else the
project cache ``$NIC_CACHE_DIR/data/<dataset>-C`` (default ``~/.cache/nic-repro``), where builds
go. Never the shared read-only data folder.

Command line (``nic kodak-c`` is ``python -m nic_lib.corruptions build kodak``)::

    python -m nic_lib.corruptions list
    python -m nic_lib.corruptions build kodak [--out DIR] [--workers N] [--corruptions ...]
                                              [--severities ...] [--limit N]
    python -m nic_lib.corruptions verify kodak [--out DIR]

In Python::

    images = load_corrupted("kodak", "fog", 3)        # [(name, uint8 (H, W, 3)), ...]
    clean = load_clean("kodak")                        # the same images, uncorrupted

This module imports only :mod:`nic_lib.data` and :mod:`nic_lib.fileio` from the project.

Two files: one image's corruption and the clean images in :mod:`nic_lib.corrupt`, the
corrupted datasets (build, manifest, verify, load, command line) here; its names are
re-exported here.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import io
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from nic_lib import data, fileio
from nic_lib.corrupt import (  # noqa: F401  re-exported: import them from here
    CENTRE_CROP,
    _check,
    corrupt,
    CORRUPTION_GROUPS,
    corruption_seed,
    CORRUPTIONS,
    FREQUENCY_GROUP,
    load_clean,
    _load_source,
    preprocess,
    _preprocess_description,
    SEED_SCHEME,
    SEVERITIES,
    _sources,
)


try:  # a lock around manifest updates, so concurrent builders never lose entries (POSIX)
    import fcntl
except ImportError:  # pragma: no cover - Windows: builders must not run concurrently there
    fcntl = None


#: Folder suffix of a corrupted dataset, as in the paper (Kodak-C, CLIC-C).
SUFFIX = "-C"
#: The manifest file inside ``<dataset>-C/``.
MANIFEST_NAME = "MANIFEST.json"
MANIFEST_FORMAT = "nic-repro-corrupted-dataset"
MANIFEST_VERSION = 1
#: One process per core: corrupting is CPU-bound (numpy/OpenCV, one thread each in workers).
DEFAULT_WORKERS = os.cpu_count() or 1
#: The manifest is rewritten after this many new files (and at the end, and on Ctrl-C), so an
#: interrupted build loses at most this many files' work (~5 s on Kodak).
MANIFEST_FLUSH_EVERY = 50
#: zlib level of the PNGs: 3 writes 3x faster than Pillow's default 6 for files ~5% larger
#: (measured on Kodak: noise does not compress at any level, blurs 330 vs 293 KB).
PNG_COMPRESS_LEVEL = 3


class CorruptedDatasetError(RuntimeError):
    """A -C dataset is missing, incomplete or does not match its manifest; the message says the fix."""


# ---------------------------------------------------------------------------------------
# The -C folder and its manifest


def corrupted_dir(dataset: str, out: str | os.PathLike | None = None) -> Path:
    """Where the -C version of ``dataset`` lives (see the module docstring for the order).

    Args:
        dataset: dataset name, e.g. ``"kodak"``.
        out: a folder that holds (or will hold) ``<dataset>-C/``.

    Returns:
        ``<folder>/<dataset>-C`` (not created here).

    Raises:
        ValueError: the folder would be inside the shared, read-only data folder.
    """
    name = dataset + SUFFIX
    if out is not None:
        folder = Path(out).expanduser() / name
    else:
        env = os.environ.get(data.ENV_DATA_DIR)
        folder = data.data_cache_dir() / name
        if env and (Path(env).expanduser() / name / MANIFEST_NAME).is_file():
            folder = Path(env).expanduser() / name
    shared = data.shared_data_dir().resolve()
    if folder.resolve().is_relative_to(shared):
        raise ValueError(f"{folder} is inside the shared read-only data folder {shared}; build -C "
                         f"datasets elsewhere: pass --out DIR or set {data.ENV_CACHE_DIR}")
    return folder


def _library_version() -> str:
    """``<distribution> <version>`` of the installed imagecorruptions (the fork is ``imagecorruptions-imaug``)."""
    dists = importlib.metadata.packages_distributions().get("imagecorruptions") or ["imagecorruptions"]
    return f"{dists[0]} {importlib.metadata.version(dists[0])}"


def _build_key(dataset: str) -> dict:
    """What the pixels depend on besides the images; files built under another key are not reused."""
    return {"imagecorruptions": _library_version(), "seed_scheme": SEED_SCHEME,
            "preprocess": _preprocess_description(dataset)}


def read_manifest(folder: str | os.PathLike) -> dict:
    """The manifest of a -C folder, or an empty one when there is none yet.

    Args:
        folder: the ``<dataset>-C`` folder.

    Returns:
        ``{"format", "version", "dataset", "key", "files": {relpath: {"sha256",
        "pixel_sha256", "source_pixel_sha256", "seed"}}}``; ``files`` is ``{}`` when new.
    """
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        return {"files": {}}
    return json.loads(path.read_text(encoding="utf-8"))


@contextlib.contextmanager
def _locked(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield
        return
    with open(folder / f".{MANIFEST_NAME}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _key_mismatch(folder: Path, found: dict, wanted: dict) -> CorruptedDatasetError:
    return CorruptedDatasetError(
        f"{folder} was built with {found}, this code builds {wanted}; its images would mix two "
        f"recipes. Fix: delete {folder} and rebuild, or build into another folder with --out DIR")


def _update_manifest(folder: Path, dataset: str, key: dict, entries: dict) -> None:
    """Merge new file entries into the manifest (read-modify-write under a file lock)."""
    with _locked(folder):
        manifest = read_manifest(folder)
        if manifest.get("key", key) != key:
            raise _key_mismatch(folder, manifest["key"], key)
        files = {**manifest.get("files", {}), **entries}
        manifest = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "dataset": dataset,
                    "key": key, "files": dict(sorted(files.items()))}
        fileio.atomic_write_text(folder / MANIFEST_NAME, json.dumps(manifest, indent=1))


def _relpath(corruption: str, severity: int, image: str) -> str:
    return f"{corruption}/{severity}/{image}.png"


def _file_ok(folder: Path, rel: str, entry: dict | None, source_hash: str) -> bool:
    path = folder / rel
    return (entry is not None and entry.get("source_pixel_sha256") == source_hash
            and path.is_file() and data.file_sha256(path) == entry["sha256"])


# ---------------------------------------------------------------------------------------
# Building


def _build_one(task: tuple) -> tuple[str, dict]:
    """Worker: corrupt one image at one severity and write its PNG atomically."""
    dataset, source, image, corruption, severity, target, rel = task
    pixels = corrupt(_load_source(source, dataset), corruption, severity, image)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    blob = buffer.getvalue()
    fileio.atomic_write_bytes(target, blob)
    return rel, {"sha256": hashlib.sha256(blob).hexdigest(), "pixel_sha256": data.pixel_sha256(pixels),
                 "seed": corruption_seed(image, corruption)}


def _init_worker() -> None:
    with contextlib.suppress(ImportError):
        import cv2

        cv2.setNumThreads(1)  # one process per core already; OpenCV threads would oversubscribe


def _pool_context():
    """Spawned workers: forking a process that already runs threads (torch, OpenMP, tqdm) can
    deadlock the children on a lock held at fork time, as seen under pytest here."""
    return multiprocessing.get_context("spawn")


def build(
    dataset: str,
    out: str | os.PathLike | None = None,
    corruptions: Iterable[str] | None = None,
    severities: Iterable[int] | None = None,
    limit: int | None = None,
    workers: int | None = None,
    progress: bool = True,
    root: str | os.PathLike | None = None,
) -> Path:
    """Build (or finish building) the -C version of a dataset.

    Files already listed in the manifest, matching their SHA-256 and made from the same clean
    pixels are skipped, so an interrupted build resumes and a changed file is rebuilt.

    Args:
        dataset: a :mod:`nic_lib.data` dataset name (``"kodak"``, ``"photos-hr"``, ...).
        out: folder to hold ``<dataset>-C/`` (default: :func:`corrupted_dir`).
        corruptions: a subset of :data:`CORRUPTIONS` (default all 15).
        severities: a subset of :data:`SEVERITIES` (default all 5).
        limit: only the first ``limit`` images of the dataset.
        workers: processes (default :data:`DEFAULT_WORKERS`); 1 builds in this process.
        progress: show a tqdm progress bar.
        root: where the clean dataset is found (see :func:`nic_lib.data.dataset_dir`).

    Returns:
        The ``<dataset>-C`` folder.

    Raises:
        ValueError: unknown corruption or severity, or an output inside the shared data folder.
        CorruptedDatasetError: the folder was built with another recipe (library version,
            seed scheme or preprocessing).
        nic_lib.data.DatasetNotFoundError: the clean dataset is not found.
    """
    corruptions = list(CORRUPTIONS if corruptions is None else corruptions)
    severities = [int(s) for s in (SEVERITIES if severities is None else severities)]
    for c in corruptions:
        for s in severities:
            _check(c, s)
    folder = corrupted_dir(dataset, out)
    key = _build_key(dataset)
    manifest = read_manifest(folder)
    if manifest.get("key", key) != key:
        raise _key_mismatch(folder, manifest["key"], key)
    tasks = []
    for image, path in _sources(dataset, limit, root):
        source_hash = data.pixel_sha256(_load_source(str(path), dataset))
        for c in corruptions:
            for s in severities:
                rel = _relpath(c, s, image)
                if not _file_ok(folder, rel, manifest["files"].get(rel), source_hash):
                    tasks.append(((dataset, str(path), image, c, s, str(folder / rel), rel), source_hash))
    workers = max(1, min(workers or DEFAULT_WORKERS, len(tasks) or 1))
    pending: dict[str, dict] = {}

    def record(rel: str, entry: dict, source_hash: str) -> None:
        pending[rel] = {**entry, "source_pixel_sha256": source_hash}
        if len(pending) >= MANIFEST_FLUSH_EVERY:
            _update_manifest(folder, dataset, key, pending)
            pending.clear()

    bar = tqdm(total=len(tasks), desc=f"{dataset}{SUFFIX}", unit="img", disable=not progress)
    try:
        if workers == 1:
            for task, source_hash in tasks:
                record(*_build_one(task), source_hash)
                bar.update()
        elif tasks:
            with ProcessPoolExecutor(workers, mp_context=_pool_context(), initializer=_init_worker) as pool:
                futures = {pool.submit(_build_one, task): h for task, h in tasks}
                for future in as_completed(futures):
                    record(*future.result(), futures[future])
                    bar.update()
    finally:
        bar.close()
        if pending or not (folder / MANIFEST_NAME).is_file():
            _update_manifest(folder, dataset, key, pending)  # keep what was built, even on Ctrl-C
    return folder


# ---------------------------------------------------------------------------------------
# Verifying and loading


def verify(dataset: str, out: str | os.PathLike | None = None) -> Path:
    """Re-hash every file of a -C dataset against its manifest.

    Args:
        dataset: dataset name.
        out: see :func:`corrupted_dir`.

    Returns:
        The verified folder.

    Raises:
        CorruptedDatasetError: no manifest, or files missing, changed, or not in the manifest;
            the message lists them and the command that rebuilds them.
    """
    folder = corrupted_dir(dataset, out)
    manifest = read_manifest(folder)
    rebuild = f"`python -m nic_lib.corruptions build {dataset}" + (f" --out {out}`" if out else "`")
    if not manifest["files"]:
        raise CorruptedDatasetError(f"no {MANIFEST_NAME} in {folder}: nothing built there. Fix: {rebuild}")
    problems = []
    for rel, entry in manifest["files"].items():
        path = folder / rel
        if not path.is_file():
            problems.append(f"missing {rel}")
        elif data.file_sha256(path) != entry["sha256"]:
            problems.append(f"changed {rel}")
    listed = set(manifest["files"])
    problems += [f"not in manifest {p.relative_to(folder).as_posix()}" for p in sorted(folder.rglob("*.png"))
                 if not p.name.startswith(".") and p.relative_to(folder).as_posix() not in listed]
    if problems:
        shown = "; ".join(problems[:10]) + (f" and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise CorruptedDatasetError(f"{len(problems)} problem(s) in {folder}: {shown}. Fix: {rebuild} "
                                    "rebuilds missing and changed files (delete files not in the manifest)")
    return folder


def load_corrupted(
    dataset: str,
    corruption: str,
    severity: int,
    limit: int | None = None,
    out: str | os.PathLike | None = None,
    build_missing: bool = True,
    root: str | os.PathLike | None = None,
) -> list[tuple[str, np.ndarray]]:
    """The images of one corruption x severity of a -C dataset, checked against the manifest.

    Args:
        dataset: the clean dataset's name (``"kodak"`` for Kodak-C).
        corruption: one of :data:`CORRUPTIONS`.
        severity: 1..5.
        limit: only the first ``limit`` images.
        out: see :func:`corrupted_dir`.
        build_missing: build missing or changed files now, in this process (~0.1-0.5 s per
            Kodak image); False raises instead.
        root: where the clean dataset is found.

    Returns:
        ``[(name, uint8 (H, W, 3)), ...]`` in the clean dataset's order.

    Raises:
        CorruptedDatasetError: files are missing or changed and ``build_missing`` is False
            (the message gives the build command).
    """
    _check(corruption, severity)
    folder = corrupted_dir(dataset, out)
    sources = _sources(dataset, limit, root)

    def stale() -> list[str]:
        files = read_manifest(folder)["files"]
        return [image for image, path in sources
                if not _file_ok(folder, _relpath(corruption, severity, image),
                                files.get(_relpath(corruption, severity, image)),
                                data.pixel_sha256(_load_source(str(path), dataset)))]

    missing = stale()
    if missing and build_missing:
        build(dataset, out, [corruption], [severity], limit=limit, workers=1, progress=False, root=root)
        missing = stale()
    if missing:
        cmd = (f"python -m nic_lib.corruptions build {dataset} --corruptions {corruption} "
               f"--severities {severity}" + (f" --limit {limit}" if limit else "") + (f" --out {out}" if out else ""))
        raise CorruptedDatasetError(f"{len(missing)} image(s) of {dataset}{SUFFIX} {corruption}/{severity} are "
                                    f"missing or changed in {folder} (e.g. {missing[0]}). Fix: `{cmd}`")
    return [(image, data.load_image(folder / _relpath(corruption, severity, image))) for image, _ in sources]


def corrupted_image(dataset: str, image: str, corruption: str, severity: int,
                    out: str | os.PathLike | None = None, root: str | os.PathLike | None = None) -> np.ndarray:
    """One image of a -C dataset: its file when built and current, else computed here.

    The file and the computation give the same pixels (the seed depends only on the image
    and the corruption), so a figure may show one image of the benchmark without building
    or hashing the whole -C folder.

    Args:
        dataset: the clean dataset (``"kodak"``).
        image: the image's name in the dataset (``"kodim23"``).
        corruption, severity: one of :data:`CORRUPTIONS`, 1..5.
        out: see :func:`corrupted_dir`.
        root: where the clean dataset is found.

    Returns:
        uint8 (H, W, 3), preprocessed as the -C dataset (:func:`preprocess`).

    Raises:
        KeyError: ``image`` is not in the dataset.
    """
    _check(corruption, severity)
    sources = dict(_sources(dataset, None, root))
    if image not in sources:
        raise KeyError(f"{image!r} is not an image of {dataset} (e.g. {next(iter(sources), 'none')}); "
                       "pass a name as nic_lib.data.load_images gives it")
    clean = _load_source(str(sources[image]), dataset)
    folder = corrupted_dir(dataset, out)
    rel = _relpath(corruption, severity, image)
    if (folder / MANIFEST_NAME).is_file():
        entry = read_manifest(folder)["files"].get(rel)
        if _file_ok(folder, rel, entry, data.pixel_sha256(clean)):
            return data.load_image(folder / rel)
    return corrupt(clean, corruption, severity, image)


# ---------------------------------------------------------------------------------------
# Command line


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (also behind ``nic kodak-c``).

    Args:
        argv: arguments without the program name; default ``sys.argv[1:]``.

    Returns:
        Exit status: 0 on success, 1 when data is missing or does not verify.
    """
    parser = argparse.ArgumentParser(prog="python -m nic_lib.corruptions", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the 15 corruptions and their frequency groups")
    b = sub.add_parser("build", help="build (or resume) DATASET-C")
    b.add_argument("dataset", help="a nic_lib.data dataset name, e.g. kodak, photos-hr, clic2020-test")
    b.add_argument("--out", help="folder to hold DATASET-C/ (default: $NIC_CACHE_DIR/data)")
    b.add_argument("--workers", type=int, default=None, help=f"processes (default {DEFAULT_WORKERS})")
    b.add_argument("--corruptions", nargs="+", choices=CORRUPTIONS, metavar="NAME", help="default: all 15")
    b.add_argument("--severities", nargs="+", type=int, choices=SEVERITIES, help="default: 1 2 3 4 5")
    b.add_argument("--limit", type=int, help="only the first N images")
    b.add_argument("--root", help="where the clean dataset is (see python -m nic_lib.data where)")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    v = sub.add_parser("verify", help="re-hash every file of DATASET-C against its manifest")
    v.add_argument("dataset")
    v.add_argument("--out", help="folder holding DATASET-C/")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            for group, names in CORRUPTION_GROUPS.items():
                print(f"{group:5s} {' '.join(names)}")
        elif args.command == "build":
            start = time.perf_counter()
            folder = build(args.dataset, args.out, args.corruptions, args.severities, args.limit,
                           args.workers, progress=not args.quiet, root=args.root)
            n = len(read_manifest(folder)["files"])
            print(f"{folder}: {n} files in the manifest ({time.perf_counter() - start:.1f} s)")
        else:
            folder = verify(args.dataset, args.out)
            print(f"{folder}: {len(read_manifest(folder)['files'])} files match the manifest")
    except (CorruptedDatasetError, data.DatasetNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
