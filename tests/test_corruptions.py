"""Properties of nic_lib.corruptions: severity ordering, determinism, the -C builder and its manifest."""

import json
import multiprocessing

import numpy as np
import pytest
import skimage.data

from nic_lib import corruptions, data, metrics

#: A fixed small image (96x128 crop of scikit-image's astronaut: face, suit and background).
IMAGE = np.ascontiguousarray(skimage.data.astronaut()[100:196, 150:278])
#: Corruptions that draw random numbers (the others are deterministic by construction).
RANDOM = ("snow", "frost", "fog", "motion_blur", "glass_blur", "elastic_transform",
          "gaussian_noise", "shot_noise", "impulse_noise")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Builds go to a temporary cache, never to ~/.cache."""
    monkeypatch.setenv(data.ENV_CACHE_DIR, str(tmp_path / "cache"))
    monkeypatch.delenv(data.ENV_DATA_DIR, raising=False)


def test_there_are_15_corruptions_in_three_frequency_groups():
    assert len(corruptions.CORRUPTIONS) == len(set(corruptions.CORRUPTIONS)) == 15
    assert [len(g) for g in corruptions.CORRUPTION_GROUPS.values()] == [5, 7, 3]


@pytest.mark.parametrize("corruption", corruptions.CORRUPTIONS)
def test_severity_5_moves_the_image_further_from_clean_than_severity_1(corruption):
    mild = metrics.mse(corruptions.corrupt(IMAGE, corruption, 1, "fixed"), IMAGE)
    severe = metrics.mse(corruptions.corrupt(IMAGE, corruption, 5, "fixed"), IMAGE)
    assert 0 < mild < severe


def _pixel_hashes(names):
    return [data.pixel_sha256(corruptions.corrupt(IMAGE, c, 3, "fixed")) for c in names]


def test_same_image_corruption_severity_gives_same_pixels_in_another_process():
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        other = pool.apply(_pixel_hashes, (RANDOM,))
    assert other == _pixel_hashes(RANDOM)


def test_pixels_do_not_depend_on_order_or_global_random_state():
    first = _pixel_hashes(RANDOM)
    np.random.seed(12345)
    np.random.rand(7)
    assert _pixel_hashes(RANDOM[::-1])[::-1] == first


def test_global_numpy_random_state_is_restored():
    np.random.seed(1)
    expected = np.random.rand(3)
    np.random.seed(1)
    corruptions.corrupt(IMAGE, "gaussian_noise", 2, "fixed")
    assert np.array_equal(np.random.rand(3), expected)


def test_different_images_get_different_noise():
    a = corruptions.corrupt(IMAGE, "gaussian_noise", 3, "image-a")
    b = corruptions.corrupt(IMAGE, "gaussian_noise", 3, "image-b")
    assert corruptions.corruption_seed("image-a", "gaussian_noise") != corruptions.corruption_seed(
        "image-b", "gaussian_noise")
    assert not np.array_equal(a, b)


def test_portrait_is_transposed_and_clic_is_centre_cropped():
    portrait = np.arange(40 * 30 * 3, dtype=np.uint8).reshape(40, 30, 3)
    assert np.array_equal(corruptions.preprocess(portrait, "kodak"), portrait.transpose(1, 0, 2))
    big = np.zeros((1000, 600, 3), np.uint8)
    assert corruptions.preprocess(big, "clic2020-test").shape == (512, 768, 3)
    # photos-hr, the CLIC stand-in, is cropped as CLIC-C is, after the transpose
    assert corruptions.preprocess(big, "photos-hr").shape == (512, 768, 3)


def test_unknown_corruption_or_severity_is_refused():
    with pytest.raises(ValueError, match="unknown corruption"):
        corruptions.corrupt(IMAGE, "rain", 1, "x")
    with pytest.raises(ValueError, match="severity"):
        corruptions.corrupt(IMAGE, "fog", 6, "x")


def _build(out, **kw):
    args = {"corruptions": ["gaussian_noise", "glass_blur"], "severities": [1], "limit": 1, "workers": 1, "progress": False}
    args.update(kw)
    return corruptions.build("sample", out, **args)


def test_build_writes_layout_and_manifest_and_resumes_without_rewriting(tmp_path):
    folder = _build(tmp_path)
    assert folder == tmp_path / "sample-C"
    files = json.loads((folder / corruptions.MANIFEST_NAME).read_text())["files"]
    assert sorted(files) == ["gaussian_noise/1/astronaut.png", "glass_blur/1/astronaut.png"]
    stamps = {rel: (folder / rel).stat().st_mtime_ns for rel in files}
    _build(tmp_path)
    assert {rel: (folder / rel).stat().st_mtime_ns for rel in files} == stamps


def test_parallel_build_gives_the_same_pixels_as_a_serial_one(tmp_path):
    kw = {"corruptions": ["gaussian_noise", "frost"]}  # glass blur's numba compile is tested in a spawned process above
    serial = corruptions.read_manifest(_build(tmp_path / "a", workers=1, **kw))["files"]
    parallel = corruptions.read_manifest(_build(tmp_path / "b", workers=2, **kw))["files"]
    assert {k: v["pixel_sha256"] for k, v in serial.items()} == {k: v["pixel_sha256"] for k, v in parallel.items()}


def test_verification_catches_a_changed_file_and_build_repairs_it(tmp_path):
    folder = _build(tmp_path)
    corruptions.verify("sample", tmp_path)
    changed = folder / "gaussian_noise/1/astronaut.png"
    changed.write_bytes(changed.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(corruptions.CorruptedDatasetError, match="changed gaussian_noise/1/astronaut.png"):
        corruptions.verify("sample", tmp_path)
    assert corruptions.main(["verify", "sample", "--out", str(tmp_path)]) == 1
    _build(tmp_path)
    corruptions.verify("sample", tmp_path)


def test_load_corrupted_builds_on_demand_or_names_the_build_command(tmp_path):
    with pytest.raises(corruptions.CorruptedDatasetError, match="python -m nic_lib.corruptions build sample"):
        corruptions.load_corrupted("sample", "contrast", 2, limit=1, out=tmp_path, build_missing=False)
    [(name, pixels)] = corruptions.load_corrupted("sample", "contrast", 2, limit=1, out=tmp_path)
    [(_, clean)] = corruptions.load_clean("sample", limit=1)
    assert name == "astronaut" and pixels.shape == clean.shape
    assert np.array_equal(pixels, corruptions.corrupt(clean, "contrast", 2, "astronaut"))


def test_default_location_is_the_project_cache_never_the_shared_data(tmp_path, monkeypatch):
    assert corruptions.corrupted_dir("kodak") == tmp_path / "cache" / "data" / "kodak-C"
    with pytest.raises(ValueError, match="shared read-only"):
        corruptions.corrupted_dir("kodak", out=data.shared_data_dir())


def test_one_corrupted_image_is_the_file_of_the_dataset_or_the_same_pixels_computed(tmp_path):
    (name, clean), = corruptions.load_clean("sample", limit=1)
    computed = corruptions.corrupted_image("sample", name, "pixelate", 2, out=tmp_path)  # nothing built yet
    assert np.array_equal(computed, corruptions.corrupt(clean, "pixelate", 2, name))
    corruptions.build("sample", tmp_path, ["pixelate"], [2], limit=1, workers=1, progress=False)
    (_, from_file), = corruptions.load_corrupted("sample", "pixelate", 2, limit=1, out=tmp_path)
    assert np.array_equal(corruptions.corrupted_image("sample", name, "pixelate", 2, out=tmp_path), from_file)
    with pytest.raises(KeyError, match="not an image"):
        corruptions.corrupted_image("sample", "no-such-image", "pixelate", 2, out=tmp_path)
