"""Every named dataset (:data:`DATASETS`): what it holds, where it is published, and the
pinned SHA-256 of its files and pixels (``checksums.json``). Part of :mod:`nic_lib.data`,
which finds and downloads them and re-exports these names.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from importlib import resources


#: Pinned checksums (file SHA-256 and pixel SHA-256, see :func:`pixel_sha256`).
CHECKSUMS_RESOURCE = "checksums.json"


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
