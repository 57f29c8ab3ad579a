"""Tests for nic_lib.data: look-up order, errors, downloads with checksums, loading rules.

No test uses the network: downloads are served from file:// URLs of temporary folders.
Tests that read the shared data folder find it as the module does (<repo>/../shared/data)
and skip, saying so, when it is absent.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import socket
import struct
import subprocess
import sys
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image

import nic_lib
from nic_lib import data

REPO_ROOT = Path(nic_lib.__file__).resolve().parent.parent
SHARED = REPO_ROOT.parent / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not (SHARED / "kodak").is_dir(),
    reason=f"shared data folder {SHARED} is absent (it exists only on the project's machines)",
)
KODAK_FILES = [f"kodim{i:02d}.png" for i in range(1, 25)]


@pytest.fixture(autouse=True)
def isolated_places(tmp_path, monkeypatch):
    """Every test starts with an empty cache, no NIC_DATA_DIR and the default shared folder."""
    monkeypatch.setenv("NIC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("NIC_DATA_DIR", raising=False)
    monkeypatch.delenv("NIC_SHARED_DATA", raising=False)


def _no_shared(monkeypatch, tmp_path):
    monkeypatch.setenv("NIC_SHARED_DATA", str(tmp_path / "no-shared"))


def _png(path: Path, pixels: np.ndarray, mode: str | None = None, **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode).save(path, **save)
    return path


def _fake_kodak(folder: Path, files=KODAK_FILES) -> Path:
    """Tiny stand-ins with Kodak's file names (look-up checks names, not content)."""
    for f in files:
        _png(folder / f, np.zeros((2, 3, 3), np.uint8))
    return folder


def _rgb(h=5, w=7, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------------------
# Registry


def test_kodak_spec_pins_a_sha256_for_each_of_24_files():
    spec = data.DATASETS["kodak"]
    assert list(spec.files) == KODAK_FILES
    for table in (spec.sha256, spec.pixel_sha256):
        assert sorted(table) == KODAK_FILES
        assert all(len(h) == 64 and int(h, 16) >= 0 for h in table.values())
    assert spec.downloadable and spec.base_url.endswith("/kodak/")


def test_registry_has_every_dataset_and_train_subnames():
    assert {"kodak", "photos-hr", "clic2020-test", "train", "sample"} <= set(data.DATASETS)
    for sub in data.DATASETS["train"].subsets:
        assert sub in data.DATASETS and sub.startswith("train/")


def test_unknown_dataset_name_lists_the_known_ones():
    with pytest.raises(KeyError, match="kodak.*photos-hr"):
        data.dataset_dir("kodac")


# ---------------------------------------------------------------------------------------
# Look-up order


def test_nic_data_dir_wins_over_cache_and_shared(tmp_path, monkeypatch):
    _fake_kodak(tmp_path / "mine" / "kodak")
    _fake_kodak(data.data_cache_dir() / "kodak")
    monkeypatch.setenv("NIC_DATA_DIR", str(tmp_path / "mine"))
    assert data.dataset_dir("kodak") == tmp_path / "mine" / "kodak"


def test_cache_wins_over_shared_and_a_nic_data_dir_without_the_dataset_is_passed_over(
        tmp_path, monkeypatch):
    (tmp_path / "mine").mkdir()
    monkeypatch.setenv("NIC_DATA_DIR", str(tmp_path / "mine"))  # holds no kodak/
    _fake_kodak(tmp_path / "shared" / "kodak")
    monkeypatch.setenv("NIC_SHARED_DATA", str(tmp_path / "shared"))
    assert data.dataset_dir("kodak") == tmp_path / "shared" / "kodak"
    _fake_kodak(data.data_cache_dir() / "kodak")
    assert data.dataset_dir("kodak") == data.data_cache_dir() / "kodak"


def test_explicit_root_accepts_parent_or_dataset_folder_and_searches_nothing_else(tmp_path):
    parent = tmp_path / "datasets"
    _fake_kodak(parent / "kodak")
    assert data.dataset_dir("kodak", root=parent) == parent / "kodak"
    assert data.dataset_dir("kodak", root=parent / "kodak") == parent / "kodak"
    _fake_kodak(data.data_cache_dir() / "kodak")
    with pytest.raises(data.DatasetNotFoundError, match="root argument"):
        data.dataset_dir("kodak", root=tmp_path / "empty")


@needs_shared
def test_shared_folder_is_found_beside_the_repository():
    assert data.shared_data_dir() == SHARED
    assert data.dataset_dir("kodak") == SHARED / "kodak"
    assert data.dataset_dir("photos-hr") == SHARED / "photos-hr"


def test_missing_dataset_error_lists_every_place_and_the_fix(tmp_path, monkeypatch):
    _no_shared(monkeypatch, tmp_path)
    monkeypatch.setenv("NIC_DATA_DIR", str(tmp_path / "mine"))
    with pytest.raises(data.DatasetNotFoundError) as info:
        data.dataset_dir("kodak")
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    for place in (tmp_path / "mine", data.data_cache_dir(), tmp_path / "no-shared"):
        assert str(place / "kodak") in msg
    assert "NIC_DATA_DIR=" in msg and "root=" in msg
    assert "python -m nic_lib.data download kodak" in msg


def test_photos_hr_error_says_there_is_no_public_source(tmp_path, monkeypatch):
    _no_shared(monkeypatch, tmp_path)
    with pytest.raises(data.DatasetNotFoundError) as info:
        data.dataset_dir("photos-hr", download=True)
    msg = str(info.value)
    assert "no public" in msg and "NIC_DATA_DIR=" in msg and "root=" in msg
    assert "download" not in msg.split("Fix:")[1]  # no download command to suggest


def test_incomplete_folder_is_an_error_naming_the_missing_file(tmp_path, monkeypatch):
    _fake_kodak(tmp_path / "mine" / "kodak", KODAK_FILES[:-1])
    _fake_kodak(tmp_path / "shared" / "kodak")  # complete, but later in the order: not used
    monkeypatch.setenv("NIC_DATA_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("NIC_SHARED_DATA", str(tmp_path / "shared"))
    with pytest.raises(data.DatasetIncompleteError, match="kodim24.png"):
        data.list_images("kodak")


def test_train_needs_every_subset_and_each_its_image_count(tmp_path, monkeypatch):
    for sub in data.DATASETS["train"].subsets:  # two images suffice for these tests
        small = dataclasses.replace(data.DATASETS[sub], min_count=2)
        monkeypatch.setitem(data.DATASETS, sub, small)
    root = tmp_path / "mine"
    _png(root / "train" / "bsd200" / "a.png", _rgb())
    _png(root / "train" / "bsd200" / "b.jpg", _rgb(), format="JPEG")
    (root / "train" / "bsd200" / "notes.txt").write_text("not an image")
    assert [p.name for p in data.list_images("train/bsd200", root=root)] == ["a.png", "b.jpg"]
    with pytest.raises(data.DatasetIncompleteError, match="div2k-crops/"):
        data.dataset_dir("train", root=root)
    _png(root / "train" / "div2k-crops" / "c.png", _rgb())
    with pytest.raises(data.DatasetIncompleteError, match="train/div2k-crops.*1 of 2"):
        data.dataset_dir("train/div2k-crops", root=root)


def test_list_images_is_sorted_and_limit_takes_the_first(tmp_path):
    folder = _fake_kodak(tmp_path / "kodak", reversed(KODAK_FILES))
    paths = data.list_images("kodak", root=folder)
    assert [p.name for p in paths] == KODAK_FILES
    assert data.list_images("kodak", root=folder, limit=3) == paths[:3]


@needs_shared
def test_shared_training_folders_load_as_rgb_with_subset_names():
    paths = data.list_images("train")
    assert len(paths) == 1000 and paths == sorted(paths)
    assert {p.suffix for p in paths} == {".png", ".JPEG"}
    names = [n for n, _ in data.load_images("train/imagenet-sample", limit=2)]
    assert names == [p.stem for p in data.list_images("train/imagenet-sample", limit=2)]
    first_name, first = data.load_images("train", limit=1)[0]
    assert first_name == "bsd200/" + paths[0].stem and first.shape == (321, 481, 3)


@needs_shared
def test_shared_kodak_and_photos_hr_match_their_pinned_checksums():
    assert data.verify_dataset("kodak") == SHARED / "kodak"
    assert data.verify_dataset("photos-hr") == SHARED / "photos-hr"


def test_sample_loads_without_network_or_data_files(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    _no_shared(monkeypatch, tmp_path)
    images = data.load_images("sample")
    import skimage.data

    assert [n for n, _ in images] == ["astronaut", "chelsea", "coffee", "rocket"]
    for name, pixels in images:
        assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3
        np.testing.assert_array_equal(pixels, getattr(skimage.data, name)())


# ---------------------------------------------------------------------------------------
# Downloads (served from file:// URLs)


def _serve(tmp_path, monkeypatch, files: dict[str, bytes], sha: dict[str, str] | None = None,
           pixel: dict[str, str] | None = None) -> tuple[str, list[str]]:
    """Make 'kodak' the dataset `files`, served from a local folder.

    Returns the dataset name and the list that records every URL fetched.
    """
    src = tmp_path / "server"
    src.mkdir()
    for f, content in files.items():
        (src / f).write_bytes(content)
    spec = dataclasses.replace(
        data.DATASETS["kodak"], files=tuple(files), base_url=src.as_uri() + "/",
        sha256=sha if sha is not None else {f: hashlib.sha256(c).hexdigest()
                                            for f, c in files.items()},
        pixel_sha256=pixel or {})
    monkeypatch.setitem(data.DATASETS, "kodak", spec)
    fetched = []
    real_fetch = data._fetch

    def spy(url, out):
        fetched.append(url)
        real_fetch(url, out)

    monkeypatch.setattr(data, "_fetch", spy)
    _no_shared(monkeypatch, tmp_path)
    return "kodak", fetched


def _png_bytes(pixels: np.ndarray, **save) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", **save)
    return buf.getvalue()


def test_download_verifies_writes_and_resumes_without_refetching(tmp_path, monkeypatch):
    files = {f"kodim0{i}.png": _png_bytes(_rgb(seed=i)) for i in (1, 2, 3)}
    name, fetched = _serve(tmp_path, monkeypatch, files)
    dest = data.download_dataset(name)
    assert dest == data.data_cache_dir() / "kodak"
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == files  # no temporary files left
    (dest / "kodim02.png").unlink()
    (dest / "kodim03.png").write_bytes(b"truncated")
    fetched.clear()
    data.download_dataset(name)
    assert sorted(u.rsplit("/", 1)[1] for u in fetched) == ["kodim02.png", "kodim03.png"]
    assert (dest / "kodim03.png").read_bytes() == files["kodim03.png"]


def test_checksum_mismatch_raises_and_keeps_no_file(tmp_path, monkeypatch):
    files = {"kodim01.png": _png_bytes(_rgb())}
    name, _ = _serve(tmp_path, monkeypatch, files, sha={"kodim01.png": "0" * 64})
    with pytest.raises(data.ChecksumError, match="kodim01.png.*expected SHA-256 0{64}"):
        data.download_dataset(name)
    assert not (data.data_cache_dir() / "kodak").exists()  # neither the file nor a temporary


def test_reencoded_png_with_same_pixels_passes_the_pixel_checksum(tmp_path, monkeypatch):
    pixels = _rgb(16, 16)
    served = _png_bytes(pixels, compress_level=0)
    pinned = _png_bytes(pixels, compress_level=9)
    assert served != pinned
    name, _ = _serve(tmp_path, monkeypatch, {"kodim01.png": served},
                     sha={"kodim01.png": hashlib.sha256(pinned).hexdigest()},
                     pixel={"kodim01.png": data.pixel_sha256(pixels)})
    assert (data.download_dataset(name) / "kodim01.png").read_bytes() == served


def test_unreachable_source_raises_download_error_naming_url_and_fix(tmp_path, monkeypatch):
    name, _ = _serve(tmp_path, monkeypatch, {"kodim01.png": _png_bytes(_rgb())})
    (tmp_path / "server" / "kodim01.png").unlink()  # the server lacks the file
    with pytest.raises(data.DownloadError, match="kodim01.png.*NIC_DATA_DIR"):
        data.download_dataset(name)
    assert not (data.data_cache_dir() / "kodak").exists()


def test_empty_dataset_folder_is_passed_over(tmp_path, monkeypatch):
    (data.data_cache_dir() / "kodak").mkdir(parents=True)  # e.g. left by a failed download
    _fake_kodak(tmp_path / "shared" / "kodak")
    monkeypatch.setenv("NIC_SHARED_DATA", str(tmp_path / "shared"))
    assert data.dataset_dir("kodak") == tmp_path / "shared" / "kodak"


def test_dataset_dir_with_download_fetches_into_the_cache(tmp_path, monkeypatch):
    name, fetched = _serve(tmp_path, monkeypatch, {"kodim01.png": _png_bytes(_rgb())})
    with pytest.raises(data.DatasetNotFoundError):
        data.dataset_dir(name)
    assert data.dataset_dir(name, download=True) == data.data_cache_dir() / "kodak"
    assert len(fetched) == 1


@needs_shared
def test_real_kodak_files_pass_the_pinned_checksums_when_downloaded(tmp_path, monkeypatch):
    files = {f: (SHARED / "kodak" / f).read_bytes() for f in KODAK_FILES[:3]}
    spec = data.DATASETS["kodak"]
    name, fetched = _serve(tmp_path, monkeypatch, files, sha=dict(spec.sha256),
                           pixel=dict(spec.pixel_sha256))
    dest = data.download_dataset(name)
    assert sorted(p.name for p in dest.iterdir()) == KODAK_FILES[:3] and len(fetched) == 3


def test_archive_download_extracts_images_flat(tmp_path, monkeypatch):
    src = tmp_path / "server" / "test.zip"
    src.parent.mkdir()
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("professional/a.png", _png_bytes(_rgb(seed=1)))
        zf.writestr("professional/b.png", _png_bytes(_rgb(seed=2)))
        zf.writestr("professional/readme.txt", "not an image")
    spec = dataclasses.replace(data.DATASETS["clic2020-test"], min_count=2,
                               archive_url=src.as_uri(), archive_sha256=data.file_sha256(src))
    monkeypatch.setitem(data.DATASETS, "clic2020-test", spec)
    _no_shared(monkeypatch, tmp_path)
    folder = data.dataset_dir("clic2020-test", download=True)
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "b.png"]
    assert [n for n, _ in data.load_images("clic2020-test")] == ["a", "b"]
    assert not (folder.parent / "clic2020-test.zip").exists()


def test_archive_with_wrong_checksum_is_not_kept(tmp_path, monkeypatch):
    src = tmp_path / "test.zip"
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("a.png", _png_bytes(_rgb()))
    spec = dataclasses.replace(data.DATASETS["clic2020-test"], archive_url=src.as_uri(),
                               archive_sha256="f" * 64)
    monkeypatch.setitem(data.DATASETS, "clic2020-test", spec)
    with pytest.raises(data.ChecksumError):
        data.download_dataset("clic2020-test")
    assert list(data.data_cache_dir().iterdir()) == []


def test_dataset_without_public_source_cannot_be_downloaded():
    with pytest.raises(data.DatasetNotFoundError, match="no public source"):
        data.download_dataset("photos-hr")


# ---------------------------------------------------------------------------------------
# Command line


def test_cli_where_prints_the_folder_found(tmp_path):
    _fake_kodak(tmp_path / "mine" / "kodak")
    env = {**os.environ, "NIC_DATA_DIR": str(tmp_path / "mine")}
    out = subprocess.run([sys.executable, "-m", "nic_lib.data", "where", "kodak"], env=env,
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(tmp_path / "mine" / "kodak")


def test_cli_download_fills_dest_and_missing_dataset_exits_1(tmp_path, monkeypatch, capsys):
    name, _ = _serve(tmp_path, monkeypatch, {"kodim01.png": _png_bytes(_rgb())})
    assert data.main(["download", name, "--dest", str(tmp_path / "k")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "k")
    assert data.main(["where", "photos-hr"]) == 1
    assert "no public source" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# Image loading rules


def test_8bit_rgb_is_returned_as_stored(tmp_path):
    pixels = _rgb()
    out = data.load_image(_png(tmp_path / "x.png", pixels))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, pixels)


def test_exif_orientation_is_applied(tmp_path):
    pixels = _rgb(4, 6)
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # stored rotated: display turns it 90 degrees clockwise
    out = data.load_image(_png(tmp_path / "x.png", pixels, exif=exif))
    np.testing.assert_array_equal(out, np.rot90(pixels, k=-1))


def test_grayscale_is_replicated_to_three_channels(tmp_path):
    gray = _rgb()[..., 0]
    out = data.load_image(_png(tmp_path / "g.png", gray))
    np.testing.assert_array_equal(out, np.stack([gray] * 3, axis=2))


def test_16bit_grayscale_is_scaled_by_round_v_over_257(tmp_path):
    v = np.array([[0, 128, 255, 32767, 40000, 65535]], np.uint16)
    out = data.load_image(_png(tmp_path / "g16.png", v))
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    np.testing.assert_array_equal(out[..., 0], np.round(v / 257).astype(np.uint8))
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_16bit_rgb_png_is_scaled_by_round_v_over_257_not_truncated(tmp_path):
    cv2 = pytest.importorskip("cv2")
    rgb16 = np.array([[[255, 200, 65535], [40000, 0, 383]]], np.uint16)
    path = tmp_path / "rgb48.png"
    assert cv2.imwrite(str(path), rgb16[..., ::-1])
    assert np.asarray(Image.open(path))[0, 0, 0] == 0  # Pillow alone drops the low byte
    expected = np.round(rgb16 / 257).astype(np.uint8)
    assert expected[0, 0, 0] == 1
    np.testing.assert_array_equal(data.load_image(path), expected)


def _add_exif_orientation(png: bytes, orientation: int) -> bytes:
    """Insert an eXIf chunk before the first IDAT (OpenCV writes 16-bit PNGs without EXIF)."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    payload = exif.tobytes().removeprefix(b"Exif\x00\x00")
    body = b"eXIf" + payload
    chunk = struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))
    at = png.index(b"IDAT") - 4  # the chunk starts with its 4-byte length
    return png[:at] + chunk + png[at:]


def test_16bit_rgb_png_with_exif_orientation_is_scaled_and_rotated(tmp_path):
    cv2 = pytest.importorskip("cv2")
    rgb16 = (np.arange(4 * 6 * 3).reshape(4, 6, 3) * 3001 % 65536).astype(np.uint16)
    ok, png = cv2.imencode(".png", rgb16[..., ::-1])
    assert ok
    path = tmp_path / "rotated48.png"
    path.write_bytes(_add_exif_orientation(png.tobytes(), 6))
    expected = np.rot90(np.round(rgb16 / 257).astype(np.uint8), k=-1)
    np.testing.assert_array_equal(data.load_image(path), expected)


def test_16bit_rgba_png_keeps_channel_order_and_drops_opaque_alpha(tmp_path):
    cv2 = pytest.importorskip("cv2")
    rgb16 = np.array([[[255, 30000, 65535], [65535, 514, 0]]], np.uint16)
    rgba16 = np.dstack([rgb16, np.full(rgb16.shape[:2], 65535, np.uint16)])
    path = tmp_path / "rgba64.png"
    assert cv2.imwrite(str(path), rgba16[..., [2, 1, 0, 3]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = data.load_image(path)
    np.testing.assert_array_equal(out, np.round(rgb16 / 257).astype(np.uint8))


def test_palette_image_becomes_rgb(tmp_path):
    pixels = _rgb(8, 8) // 64 * 64  # few colours: an exact palette
    Image.fromarray(pixels).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    np.testing.assert_array_equal(data.load_image(tmp_path / "p.png"), pixels)


def test_palette_transparency_is_composited_over_white_with_a_warning(tmp_path):
    im = Image.new("P", (2, 1))
    im.putpalette([10, 20, 30, 200, 100, 50])
    im.putdata([0, 1])
    im.save(tmp_path / "pt.png", transparency=1)
    with pytest.warns(UserWarning, match="pt.png"):
        out = data.load_image(tmp_path / "pt.png")
    np.testing.assert_array_equal(out[0], [[10, 20, 30], [255, 255, 255]])


def test_rgba_with_transparency_is_composited_over_white_and_warns_naming_the_file(tmp_path):
    rgba = np.array([[[100, 0, 200, 255], [100, 0, 200, 0], [100, 0, 200, 128]]], np.uint8)
    path = _png(tmp_path / "alpha.png", rgba)
    with pytest.warns(UserWarning, match="alpha.png"):
        out = data.load_image(path)
    # out = a * rgb + (1 - a) * 255
    half = np.round(128 / 255 * np.array([100, 0, 200]) + (1 - 128 / 255) * 255)
    np.testing.assert_array_equal(out[0], [[100, 0, 200], [255, 255, 255], half])


def test_opaque_alpha_is_dropped_silently(tmp_path):
    pixels = _rgb()
    opaque = np.full(pixels.shape[:2], 255, np.uint8)
    cases = (("RGBA", np.dstack([pixels, opaque])), ("LA", np.dstack([pixels[..., 0], opaque])))
    for mode, arr in cases:
        Image.fromarray(arr, mode).save(tmp_path / f"{mode}.png")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            out = data.load_image(tmp_path / f"{mode}.png")
        expected = pixels if mode == "RGBA" else np.stack([pixels[..., 0]] * 3, axis=2)
        np.testing.assert_array_equal(out, expected)


def test_cmyk_is_converted_like_pillow(tmp_path):
    cmyk = Image.fromarray(_rgb()).convert("CMYK")
    cmyk.save(tmp_path / "c.tif")
    out = data.load_image(tmp_path / "c.tif")
    np.testing.assert_array_equal(out, np.asarray(Image.open(tmp_path / "c.tif").convert("RGB")))


def test_file_that_is_not_an_image_raises_an_error_naming_it(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("hello")
    with pytest.raises(data.ImageLoadError, match="notes.png"):
        data.load_image(path)


def test_truncated_image_raises_an_error_naming_it(tmp_path):
    good = _png_bytes(_rgb(64, 64))
    (tmp_path / "cut.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(data.ImageLoadError, match="cut.png"):
        data.load_image(tmp_path / "cut.png")


def test_missing_file_raises_file_not_found_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.png"):
        data.load_image(tmp_path / "nowhere.png")


def test_load_images_names_files_without_extension(tmp_path):
    folder = _fake_kodak(tmp_path / "kodak")
    images = data.load_images("kodak", limit=2, root=folder)
    assert [n for n, _ in images] == ["kodim01", "kodim02"]
    assert all(p.shape == (2, 3, 3) and p.dtype == np.uint8 for _, p in images)


# ---------------------------------------------------------------------------------------
# The centre crop


def _ramp(h: int, w: int) -> np.ndarray:
    """An (h, w, 3) image whose pixel (i, j) holds i and j: a crop says where it was cut."""
    i, j = np.mgrid[0:h, 0:w]
    return np.stack([i, j, np.zeros_like(i)], axis=-1)


def test_centre_crop_is_centred_with_the_odd_pixel_at_the_bottom_right():
    crop = data.centre_crop(_ramp(7, 10), 4)
    assert crop.shape == (4, 4, 3)
    # margins: 3 rows (1 above, 2 below), 6 columns (3 left, 3 right)
    assert (crop[0, 0, 0], crop[0, 0, 1]) == (1, 3) and (crop[-1, -1, 0], crop[-1, -1, 1]) == (4, 6)
    assert data.centre_crop(_ramp(8, 12), 2, 6).shape == (2, 6, 3)


def test_centre_window_cuts_the_same_pixels_from_every_image_of_that_size():
    a, b = _ramp(9, 9), _ramp(9, 9) + 1
    window = data.centre_window(a.shape, 3)
    assert np.array_equal(a[window] + 1, b[window])


def test_a_crop_larger_than_the_image_raises_unless_shrunk():
    img = _ramp(6, 20)
    with pytest.raises(ValueError, match="smaller than the 8x8 crop"):
        data.centre_crop(img, 8)
    # shrink: only the side that does not fit is cut to the image's
    assert data.centre_crop(img, 8, shrink=True).shape == (6, 8, 3)
    assert data.centre_crop(img, 100, shrink=True).shape == img.shape


def test_oriented_crop_transposes_the_window_for_portrait_images():
    assert data.centre_crop_oriented(_ramp(30, 20), 10, 16).shape == (16, 10, 3)
    assert data.centre_crop_oriented(_ramp(20, 30), 10, 16).shape == (10, 16, 3)
    with pytest.raises(ValueError, match="smaller than"):
        data.centre_crop_oriented(_ramp(8, 30), 10, 16)
