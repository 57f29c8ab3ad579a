"""Properties of the classic-codec interface (nic_lib.codecs), on small images.

The natural image is a crop of scikit-image's embedded astronaut photo (no data files
needed); the optional BPG/VTM codecs are exercised through stand-in programs that copy
their input, which checks the temp-file plumbing and colour conversion without the real
encoders.
"""

import os
import stat
import sys
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import skimage.data

from nic_lib import codecs, metrics

PILLOW_CODECS = ["jpeg", "webp", "jpeg2000", "avif"]


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A 96x128 crop of a natural photo: edges, texture and smooth areas."""
    return np.ascontiguousarray(skimage.data.astronaut()[40:136, 180:308])


def smooth_random(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Random but smooth RGB image (sum of a few low-frequency sinusoids), uint8."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    img = np.zeros((height, width, 3))
    for _ in range(4):
        fy, fx, phase = rng.uniform(0.5, 4.0), rng.uniform(0.5, 4.0), rng.uniform(0, 2 * np.pi, size=3)
        img += np.sin(2 * np.pi * (fy * y + fx * x)[..., None] + phase)
    return np.clip(np.rint(127.5 + 30.0 * img), 0, 255).astype(np.uint8)


def test_pillow_codecs_are_available():
    assert set(PILLOW_CODECS) <= set(codecs.available_codecs())


def test_every_codec_has_a_configuration_description_and_an_increasing_sweep():
    for name in codecs.available_codecs():
        codec = codecs.get_codec(name)
        assert codec.name == name and name in codec.description
        assert len(codec.settings) >= 8
        assert all(codec.check_setting(s) == s for s in codec.settings)


@pytest.mark.parametrize("name", PILLOW_CODECS)
@pytest.mark.parametrize("shape", [(64, 96), (37, 51)])  # odd sizes: not multiples of any block size
def test_roundtrip_keeps_shape_and_dtype(name, shape):
    codec = codecs.get_codec(name)
    img = smooth_random(*shape)
    data = codec.encode(img, codec.settings[-1])  # highest rate: on tiny images low rates are all header
    recon = codec.decode(data)
    assert isinstance(data, bytes) and len(data) > 0
    assert recon.shape == img.shape and recon.dtype == np.uint8
    assert metrics.psnr(img, recon) > 25.0  # a reconstruction of this image, not something else


@pytest.mark.parametrize("name", PILLOW_CODECS)
def test_higher_setting_gives_more_bytes_and_higher_psnr(name, photo):
    codec = codecs.get_codec(name)
    sweep = [codec.settings[0], codec.settings[len(codec.settings) // 2], codec.settings[-1]]
    sizes, psnrs = [], []
    for setting in sweep:
        data = codec.encode(photo, setting)
        sizes.append(len(data))
        psnrs.append(metrics.psnr(photo, codec.decode(data)))
    assert sizes == sorted(sizes) and len(set(sizes)) == 3, sizes
    assert psnrs == sorted(psnrs) and len(set(psnrs)) == 3, psnrs


@pytest.mark.parametrize("target_bpp", [0.5, 1.0, 2.0])
def test_jpeg2000_rate_control_lands_near_target_bpp(target_bpp, photo):
    codec = codecs.get_codec("jpeg2000")
    data = codec.encode(photo, target_bpp)
    achieved = metrics.bpp(len(data), *photo.shape[:2])
    assert achieved == pytest.approx(target_bpp, rel=0.05)


def test_jpeg_optimize_shrinks_the_file_without_changing_pixels(photo):
    optimized = codecs.get_codec("jpeg")
    plain = replace(optimized, optimize=False)
    a, b = optimized.encode(photo, 50), plain.encode(photo, 50)
    assert len(a) < len(b)
    np.testing.assert_array_equal(optimized.decode(a), plain.decode(b))


def test_rate_sweep_has_one_row_per_image_codec_setting(photo):
    images = [("photo", photo), ("smooth", smooth_random(64, 96))]
    settings = {"jpeg": [20, 80], "jpeg2000": [0.25, 0.5, 1.0]}
    table = codecs.rate_sweep(images, ["jpeg", "jpeg2000"], settings=settings, progress=False)
    assert list(table.columns) == list(codecs.SWEEP_COLUMNS)
    assert len(table) == 2 * (2 + 3)
    assert not table.duplicated(["image", "codec", "setting"]).any()
    assert table.groupby("codec").size().to_dict() == {"jpeg": 4, "jpeg2000": 6}
    # bytes are the length of the encoded stream, bpp follows from them
    row = table[(table["image"] == "photo") & (table["codec"] == "jpeg") & (table["setting"] == 80)].iloc[0]
    assert row["bytes"] == len(codecs.get_codec("jpeg").encode(photo, 80))
    assert row["bpp"] == pytest.approx(8 * row["bytes"] / (photo.shape[0] * photo.shape[1]))
    assert (table[["encode_s", "decode_s"]] >= 0).all().all()


def test_rate_sweep_ms_ssim_is_nan_below_161_px_and_measured_above():
    small, large = smooth_random(64, 96), smooth_random(161, 170, seed=1)
    table = codecs.rate_sweep([("small", small), ("large", large)], ["jpeg"], {"jpeg": [50]}, progress=False)
    by_image = table.set_index("image")["ms_ssim"]
    assert np.isnan(by_image["small"])
    assert 0.9 < by_image["large"] <= 1.0


def test_rate_sweep_accepts_codec_objects_and_generators(photo):
    variant = replace(codecs.get_codec("jpeg"), name="jpeg-444", subsampling="4:4:4")
    images = ((name, img) for name, img in [("a", photo)])  # no len(): progress bar without total
    table = codecs.rate_sweep(images, [variant, "jpeg"], {"jpeg-444": [50], "jpeg": [50]}, progress=False)
    assert set(table["codec"]) == {"jpeg-444", "jpeg"}
    assert isinstance(table, pd.DataFrame) and len(table) == 2


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "bad, fix",
    [
        (np.zeros((16, 16, 3), dtype=np.float32), "uint8"),
        (np.zeros((16, 16), dtype=np.uint8), "(H, W, 3)"),
        (np.zeros((3, 16, 16), dtype=np.uint8), "transpose"),
        (np.zeros((16, 16, 4), dtype=np.uint8), "RGBA"),
        ([[[0, 0, 0]]], "numpy array"),
    ],
)
def test_bad_image_raises_value_error_naming_the_fix(bad, fix):
    with pytest.raises(ValueError, match=fix.replace("(", r"\(").replace(")", r"\)")):
        codecs.get_codec("jpeg").encode(bad, 50)


@pytest.mark.parametrize(
    "name, setting",
    [("jpeg", 0), ("jpeg", 101), ("jpeg", 50.5), ("webp", -1), ("jpeg2000", 0.0), ("jpeg2000", 30), ("avif", 101),
     ("avif", float("nan")), ("jpeg", "high")],
)  # fmt: skip
def test_setting_out_of_range_raises_value_error(name, setting):
    with pytest.raises(ValueError, match="must be"):
        codecs.get_codec(name).encode(smooth_random(16, 16), setting)


def test_rate_sweep_checks_settings_before_encoding():
    with pytest.raises(ValueError, match=r"\[1, 100\]"):
        codecs.rate_sweep([("a", smooth_random(16, 16))], ["jpeg"], {"jpeg": [50, 500]}, progress=False)
    with pytest.raises(ValueError, match="not among the codecs"):
        codecs.rate_sweep([("a", smooth_random(16, 16))], ["jpeg"], {"jepg": [50]}, progress=False)


def test_unknown_codec_and_garbage_bytes_raise_value_error():
    with pytest.raises(ValueError, match="choose one of"):
        codecs.get_codec("jpeg-xl")
    with pytest.raises(ValueError, match="cannot decode"):
        codecs.get_codec("webp").decode(b"not an image")


# --------------------------------------------------------------------------- optional codecs


@pytest.fixture
def empty_path(tmp_path, monkeypatch):
    """PATH with no programs on it, and no VTM configuration."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv(codecs.VTM_CFG_ENV, raising=False)
    return tmp_path


@pytest.mark.parametrize("name, program", [("bpg", "bpgenc"), ("vtm", "EncoderAppStatic")])
def test_missing_optional_codec_is_skipped_with_a_notice(empty_path, name, program):
    assert name not in codecs.available_codecs()
    assert set(PILLOW_CODECS) <= set(codecs.available_codecs())
    with pytest.raises(codecs.CodecUnavailableError, match=program):
        codecs.get_codec(name)
    with pytest.raises(codecs.CodecUnavailableError, match=program):
        codecs.rate_sweep([("a", smooth_random(16, 16))], [name], progress=False)


def test_bpg_command_line_asks_for_444_x265_at_the_given_qp():
    command = codecs.BpgCodec().encode_command("bpgenc", "in.png", "out.bpg", 32)
    assert command[0] == "bpgenc" and command[-1] == "in.png"
    pairs = dict(zip(command[1:-1:2], command[2:-1:2]))
    assert pairs == {"-q": "32", "-f": "444", "-c": "ycbcr", "-b": "8", "-e": "x265", "-m": "9", "-o": "out.bpg"}
    assert codecs.BpgCodec().decode_command("bpgdec", "in.bpg", "out.png") == ["bpgdec", "-o", "out.png", "in.bpg"]


def test_vtm_command_line_names_size_qp_config_and_444():
    command = codecs.VtmCodec().encode_command("EncoderAppStatic", "intra.cfg", "in.yuv", "out.bin", 512, 768, 37)
    pairs = dict(zip(command[1:], command[2:]))
    assert pairs["-c"] == "intra.cfg" and pairs["-i"] == "in.yuv" and pairs["-b"] == "out.bin"
    assert pairs["-wdt"] == "768" and pairs["-hgt"] == "512" and pairs["-q"] == "37"
    assert "--InputChromaFormat=444" in command and "--InputBitDepth=10" in command


def _write_copy_program(folder, name: str, source_flag: str | None, target_flag: str) -> None:
    """A stand-in program that copies the file after ``source_flag`` (None: the last argument)
    to the file after ``target_flag``, so decode(encode(x)) == x."""
    path = folder / name
    path.write_text(
        f"#!{sys.executable}\n"
        "import shutil, sys\n"
        "args = sys.argv[1:]\n"
        f"source = args[-1] if {source_flag!r} is None else args[args.index({source_flag!r}) + 1]\n"
        f"shutil.copyfile(source, args[args.index({target_flag!r}) + 1])\n"
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.mark.skipif(os.name != "posix", reason="stand-in programs are executable scripts")
def test_bpg_runs_its_programs_on_temp_files(empty_path):
    for program in ("bpgenc", "bpgdec"):
        _write_copy_program(empty_path, program, None, "-o")
    assert "bpg" in codecs.available_codecs()
    img = smooth_random(37, 51)
    codec = codecs.get_codec("bpg")
    np.testing.assert_array_equal(codec.decode(codec.encode(img, 30)), img)


@pytest.mark.skipif(os.name != "posix", reason="stand-in programs are executable scripts")
def test_vtm_runs_its_programs_and_its_10_bit_ycbcr_is_lossless(empty_path, monkeypatch):
    _write_copy_program(empty_path, "EncoderAppStatic", "-i", "-b")
    _write_copy_program(empty_path, "DecoderAppStatic", "-b", "-o")
    assert "vtm" not in codecs.available_codecs()  # programs found, configuration not
    with pytest.raises(codecs.CodecUnavailableError, match=codecs.VTM_CFG_ENV):
        codecs.get_codec("vtm")
    config = empty_path / "encoder_intra_vtm.cfg"
    config.write_text("# stand-in\n")
    monkeypatch.setenv(codecs.VTM_CFG_ENV, str(config))
    img = np.random.default_rng(0).integers(0, 256, size=(37, 51, 3), dtype=np.uint8)
    codec = codecs.get_codec("vtm")
    data = codec.encode(img, 37)
    assert len(data) == 4 + 3 * 2 * 37 * 51  # size header + the stand-in's copy of the 10-bit planes
    np.testing.assert_array_equal(codec.decode(data), img)


@pytest.mark.parametrize("name", ["jpeg", "webp", "jpeg2000", "avif"])
def test_encode_at_bpp_is_at_least_as_close_as_any_sweep_setting(name, photo):
    codec = codecs.get_codec(name)
    h, w = photo.shape[:2]
    sweep_bpps = [metrics.bpp(len(codec.encode(photo, s)), h, w) for s in codec.settings]
    target = float(np.median(sweep_bpps)) * 1.07  # between sweep points, inside the reachable range
    setting, stream = codecs.encode_at_bpp(name, photo, target)
    got = metrics.bpp(len(stream), h, w)
    assert stream == codec.encode(photo, setting)  # the returned stream is that setting's
    assert abs(got - target) <= min(abs(b - target) for b in sweep_bpps)


def test_encode_at_bpp_returns_the_nearest_end_when_the_target_is_unreachable(photo):
    setting, stream = codecs.encode_at_bpp("jpeg", photo, 1e-4)
    assert setting == codecs.get_codec("jpeg").setting_range[0]
    with pytest.raises(ValueError, match="positive"):
        codecs.encode_at_bpp("jpeg", photo, 0.0)


def test_spread_settings_keep_both_ends_and_spread_the_rest():
    sweep = [10, 20, 30, 40, 50, 60, 70, 80, 90]
    assert codecs.spread_settings(sweep, 4) == [10, 40, 60, 90]
    assert codecs.spread_settings(sweep, len(sweep)) == sweep
    assert codecs.spread_settings((0.1, 0.2), 2) == [0.1, 0.2]


@pytest.mark.parametrize("name", ["jpeg", "webp", "jpeg2000"])
def test_smallest_file_is_no_larger_than_any_sweep_setting_and_a_budget_gets_the_best_fit(name, photo):
    codec = codecs.get_codec(name)
    sweep_bytes = sorted(len(codec.encode(photo, s)) for s in codec.settings)
    tiny = codecs.smallest(name, photo)
    assert tiny["fits"] and tiny["bytes"] == tiny["min_bytes"] <= sweep_bytes[0]
    assert tiny["stream"] == codec.encode(photo, tiny["setting"])
    budget = (sweep_bytes[0] + sweep_bytes[1]) // 2  # between the two lowest sweep points
    fit = codecs.smallest(name, photo, budget)
    assert fit["fits"] and sweep_bytes[0] <= fit["bytes"] <= budget  # at least as good as the sweep's fit
    assert fit["stream"] == codec.encode(photo, fit["setting"])


def test_smallest_over_a_budget_below_the_minimum_returns_the_minimum_and_says_so(photo):
    over = codecs.smallest("jpeg", photo, 1)
    assert not over["fits"] and over["bytes"] == over["min_bytes"] > 1
    assert over["setting"] == codecs.get_codec("jpeg").setting_range[0]
    with pytest.raises(ValueError, match="positive"):
        codecs.smallest("jpeg", photo, 0)


def _jpeg2000_stream(img: np.ndarray, bpp: float, **options) -> bytes:
    """A raw J2K codestream of ``img`` with the codec's options, some overridden."""
    import io

    from PIL import Image

    codec = codecs.get_codec("jpeg2000")
    buffer = io.BytesIO()
    Image.fromarray(img).save(buffer, format="JPEG2000", **{**codec.save_options(img, bpp), **options})
    return buffer.getvalue()


def test_jpeg2000_headers_are_a_fixed_cost_of_each_file(photo):
    """The same headers at every rate and image size; only the packet data grows."""
    codec = codecs.get_codec("jpeg2000")
    big = np.ascontiguousarray(skimage.data.astronaut()[:256, :384])
    headers, data_bytes = set(), []
    for img in (photo, big):
        for bpp in (0.25, 1.0, 4.0):
            stream = codec.encode(img, bpp)
            header = codecs.jpeg2000_header_bytes(stream)
            headers.add(header)
            data_bytes.append(len(stream) - header)
    assert len(headers) == 1 and 100 < headers.pop() < 300
    assert data_bytes[:3] == sorted(data_bytes[:3]) and data_bytes[3:] == sorted(data_bytes[3:])


def test_jpeg2000_headers_count_every_tile_part(photo):
    """12 tiles of 32x32: 11 more tile-part headers (SOT segment 12 bytes + SOD 2) than one tile."""
    one = codecs.jpeg2000_header_bytes(_jpeg2000_stream(photo, 1.0, num_resolutions=3))
    tiled = codecs.jpeg2000_header_bytes(_jpeg2000_stream(photo, 1.0, num_resolutions=3, tile_size=(32, 32)))
    assert tiled - one == 11 * 14


def test_jpeg2000_header_bytes_refuses_what_is_not_a_raw_codestream(photo):
    with pytest.raises(ValueError, match="no_jp2=True"):
        codecs.jpeg2000_header_bytes(_jpeg2000_stream(photo, 1.0, no_jp2=False))
    stream = codecs.get_codec("jpeg2000").encode(photo, 1.0)
    with pytest.raises(ValueError, match="truncated|malformed"):
        codecs.jpeg2000_header_bytes(stream[:100])
