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

Three files: this one (where datasets live, downloads, the command line), the registry of
datasets and their pinned checksums in :mod:`nic_lib.dataset_specs`, and the rules for one
image (loading, 16-bit and alpha, pixel digest, centre crops) in :mod:`nic_lib.images`; their
names are re-exported here. Besides those they import only the leaves ``nic_lib.fileio`` and
``nic_lib.errors``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import urllib.error
import urllib.request
import warnings
import zipfile
from pathlib import Path

import numpy as np

from nic_lib import fileio
from nic_lib.dataset_specs import (  # noqa: F401  re-exported: import them from here
    CHECKSUMS_RESOURCE,
    DATASETS,
    DatasetSpec,
)
from nic_lib.errors import NicReproError
from nic_lib.images import (  # noqa: F401  re-exported: import them from here
    BACKGROUND,
    centre_crop,
    centre_crop_oriented,
    centre_window,
    ImageLoadError,
    load_image,
    pixel_sha256,
    SCALE_16_TO_8,
)


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
#: Seconds without data before a download gives up; generous for slow academic servers.
DOWNLOAD_TIMEOUT_S = 60
#: Bytes read at a time while downloading and hashing (1 MiB: few syscalls, little memory).
CHUNK_BYTES = 1 << 20
#: Some servers refuse Python's default user agent; say who we are instead.
USER_AGENT = "nic-repro/0.1 (dataset download; Python urllib)"


class DatasetNotFoundError(NicReproError, FileNotFoundError):
    """A dataset is in none of the places looked; the message lists them and the fix."""


class DatasetIncompleteError(DatasetNotFoundError):
    """A dataset folder exists but lacks files; the message names them and the fix."""


class ChecksumError(NicReproError, OSError):
    """A downloaded file does not match its pinned SHA-256; the file was not kept."""


class DownloadError(NicReproError, OSError):
    """A download could not be fetched (network, proxy, missing file on the server)."""


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


def load_tuning_images(limit: int = 12) -> list[tuple[str, np.ndarray]]:
    """The first ``limit`` images of :data:`TUNING_SET`, centre-cropped to :data:`TUNING_CROP`."""
    return [(name, centre_crop_oriented(img, *TUNING_CROP))
            for name, img in load_images(TUNING_SET, limit=limit)]


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
