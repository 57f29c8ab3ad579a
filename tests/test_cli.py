"""The `nic` command line (nic_lib/cli.py), with tiny checkpoints in a temporary folder."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from nic_lib import cli, coding, container, data
from nic_lib.models import get_model, hub, registry
from nic_lib.models.checkpoints import save_checkpoint

TINY = {"N": 8, "M": 12}  # widths that keep a 64x64 decode in milliseconds
MODELS = ("mbt2018-mean", "mbt2018")


def _save_tiny(name: str, quality: int, seed: int) -> None:
    """A one-level variable-rate checkpoint, where the cpu profile looks for it."""
    torch.manual_seed(seed)
    config = registry.default_config(name, quality, "cpu")
    config.update(TINY, lmbdas=[config.pop("lmbda")], quality=None, qualities=[quality])
    model = registry.build_model(name, **config)
    model.update(force=True)
    save_checkpoint(model, hub.variable_rate_checkpoint_path(name), config)


@pytest.fixture(scope="module", autouse=True)
def checkpoints(tmp_path_factory):
    """Tiny q1 checkpoints of both models under $NIC_CHECKPOINT_DIR."""
    folder = tmp_path_factory.mktemp("checkpoints")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(hub.CHECKPOINT_DIR_ENV, str(folder))
        for name in MODELS:
            _save_tiny(name, 1, seed=0)
        yield folder


def _png(path, array, mode=None):
    Image.fromarray(array, mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


@pytest.fixture
def rgb_png(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (40, 70, 3), dtype=np.uint8)
    return _png(tmp_path / "in.png", img)


def _run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _assert_user_error(code, err, *words):
    assert code == cli.EXIT_USER_ERROR
    assert err.startswith("nic: error: ") and err.count("\n") == 1
    assert "Traceback" not in err
    for word in words:
        assert word in err


@pytest.mark.parametrize("name", MODELS)
def test_cli_roundtrip_equals_model_reconstruction(capsys, tmp_path, rgb_png, name):
    nic, out_png = tmp_path / "x.nic", tmp_path / "out.png"
    assert _run(capsys, "compress", rgb_png, nic, "--model", name, "--quality", 1)[0] == 0
    assert _run(capsys, "decompress", nic, out_png)[0] == 0
    model = get_model(name, 1, "cpu")
    img = data.load_image(rgb_png)
    x, _ = coding.pad_image(img, model.downsampling_factor)
    coded = model.compress(x)
    expected = coding.crop_to_image(model.decompress(coded["strings"], coded["shape"])["x_hat"],
                                       *img.shape[:2])
    np.testing.assert_array_equal(data.load_image(out_png), expected)


def test_info_prints_header_fields_and_bpp(capsys, tmp_path, rgb_png):
    nic = tmp_path / "x.nic"
    cli.main(["compress", str(rgb_png), str(nic), "--model", "mbt2018-mean", "--quality", "1"])
    capsys.readouterr()
    code, out, _ = _run(capsys, "info", nic)
    assert code == 0
    fields = dict(line.split(": ", 1) for line in out.splitlines())
    assert fields["model"] == "mbt2018-mean" and fields["quality"] == "1"
    assert (fields["height"], fields["width"]) == ("40", "70")
    assert float(fields["bpp"]) == pytest.approx(8 * nic.stat().st_size / (40 * 70), abs=1e-4)
    assert fields["file_bytes"] == str(nic.stat().st_size)


def test_existing_output_is_kept_without_force(capsys, tmp_path, rgb_png):
    nic = tmp_path / "x.nic"
    nic.write_bytes(b"precious")
    code, _, err = _run(capsys, "compress", rgb_png, nic, "--model", "mbt2018-mean",
                        "--quality", 1)
    _assert_user_error(code, err, "exists", "--force")
    assert nic.read_bytes() == b"precious"
    code, _, _ = _run(capsys, "compress", rgb_png, nic, "--model", "mbt2018-mean",
                      "--quality", 1, "--force")
    assert code == 0 and nic.read_bytes().startswith(container.MAGIC)


def test_output_equal_to_input_is_refused_even_with_force(capsys, rgb_png):
    before = rgb_png.read_bytes()
    code, _, err = _run(capsys, "compress", rgb_png, rgb_png, "--model", "mbt2018-mean",
                        "--quality", 1, "--force")
    _assert_user_error(code, err, "is the input")
    assert rgb_png.read_bytes() == before


@pytest.mark.parametrize("kind", ["gray", "rgba", "gray16", "palette", "1x1"])
def test_unusual_inputs_round_trip_at_their_size(capsys, tmp_path, kind):
    rng = np.random.default_rng(1)
    src = tmp_path / f"{kind}.png"
    if kind == "gray":
        _png(src, rng.integers(0, 256, (17, 5), dtype=np.uint8), "L")
    elif kind == "rgba":
        _png(src, rng.integers(0, 256, (8, 8, 4), dtype=np.uint8), "RGBA")
    elif kind == "gray16":
        Image.fromarray(rng.integers(0, 65536, (9, 13), dtype=np.uint16)).save(src)
    elif kind == "palette":
        Image.fromarray(rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)).convert("P").save(src)
    else:
        _png(src, np.array([[[200, 10, 30]]], dtype=np.uint8))
    with Image.open(src) as im:
        expected_shape = (im.height, im.width, 3)
    nic, out = tmp_path / "x.nic", tmp_path / "out.png"
    code, _, err = _run(capsys, "compress", src, nic, "--model", "mbt2018-mean", "--quality", 1)
    assert code == 0
    assert ("nic: warning:" in err and "transparent" in err) == (kind == "rgba")
    assert _run(capsys, "decompress", nic, out)[0] == 0
    assert data.load_image(out).shape == expected_shape


def test_not_an_image_gives_one_line_error(capsys, tmp_path):
    fake = tmp_path / "notes.png"
    fake.write_text("hello, not a PNG")
    code, _, err = _run(capsys, "compress", fake, tmp_path / "x.nic", "--model",
                        "mbt2018-mean", "--quality", 1)
    _assert_user_error(code, err, "notes.png", "not an image")
    assert not (tmp_path / "x.nic").exists()


@pytest.mark.parametrize("command", ["compress", "decompress", "info"])
def test_missing_input_gives_one_line_error(capsys, tmp_path, command):
    argv = [command, tmp_path / "missing.file"]
    if command != "info":
        argv.append(tmp_path / "out.png")
    code, _, err = _run(capsys, *argv)
    _assert_user_error(code, err, "missing.file", "does not exist")


def test_very_large_image_is_refused_with_the_limit(capsys, tmp_path):
    big = _png(tmp_path / "wide.png", np.zeros((1, container.MAX_IMAGE_SIDE + 1), np.uint8), "L")
    code, _, err = _run(capsys, "compress", big, tmp_path / "x.nic", "--model",
                        "mbt2018-mean", "--quality", 1)
    _assert_user_error(code, err, str(container.MAX_IMAGE_SIDE), "MAX_IMAGE_SIDE")


@pytest.fixture
def nic_file(capsys, tmp_path, rgb_png):
    nic = tmp_path / "x.nic"
    assert _run(capsys, "compress", rgb_png, nic, "--model", "mbt2018-mean",
                "--quality", 1)[0] == 0
    return nic


def test_wrong_magic_is_reported(capsys, tmp_path, nic_file, rgb_png):
    code, _, err = _run(capsys, "decompress", rgb_png, tmp_path / "out.png")
    _assert_user_error(code, err, "not a .nic file")


def test_future_version_is_reported(capsys, tmp_path, nic_file):
    raw = bytearray(nic_file.read_bytes())
    raw[len(container.MAGIC)] = container.FORMAT_VERSION + 1
    raw[-4:] = zlib.crc32(raw[:-4]).to_bytes(4, "big")  # an intact file from the future
    nic_file.write_bytes(bytes(raw))
    code, _, err = _run(capsys, "info", nic_file)
    _assert_user_error(code, err, "version", "update nic-repro")


def test_file_from_other_weights_is_refused(capsys, tmp_path, nic_file, checkpoints):
    _save_tiny("mbt2018-mean", 1, seed=1)  # retrained: same name, other weights
    try:
        code, _, err = _run(capsys, "decompress", nic_file, tmp_path / "out.png")
        _assert_user_error(code, err, "other weights")
        assert not (tmp_path / "out.png").exists()
    finally:
        _save_tiny("mbt2018-mean", 1, seed=0)


def test_missing_checkpoint_names_the_training_command(capsys, tmp_path, rgb_png):
    code, _, err = _run(capsys, "compress", rgb_png, tmp_path / "x.nic", "--model",
                        "mbt2018-mean", "--quality", 2)
    _assert_user_error(code, err, "python scripts/train_cpu_profile.py --only ablate-mbt2018-mean")


@pytest.mark.parametrize("flags,words", [
    (["--model", "no-such-model"], ["unknown model 'no-such-model'", "available"]),
    (["--model", "mbt2018-mean", "--quality", "9"], ["quality must be one of"]),
    (["--model", "mbt2018-context", "--profile", "full"], ["without published weights"]),
])
def test_unknown_model_or_setting_is_a_one_line_user_error(capsys, tmp_path, rgb_png, flags, words):
    code, _, err = _run(capsys, "compress", rgb_png, tmp_path / "x.nic", *flags)
    _assert_user_error(code, err, *words)
    assert not (tmp_path / "x.nic").exists()


@pytest.mark.parametrize("bug", [KeyError("state_dict"), ValueError("bad shape"),
                                 OSError("disk on fire")], ids=["KeyError", "ValueError", "OSError"])
def test_a_library_bug_keeps_its_traceback(monkeypatch, capsys, tmp_path, rgb_png, bug):
    # the library's KeyError / ValueError / OSError are not the user's to fix: they must
    # reach the developer with their traceback, not become a one-line "user error"
    def broken(*args, **kwargs):
        raise bug

    monkeypatch.setattr(container, "encode_image", broken)
    with pytest.raises(type(bug)) as info:
        cli.main(["compress", str(rgb_png), str(tmp_path / "x.nic"), "--model", "mbt2018-mean",
                  "--quality", "1"])
    assert info.value is bug
    assert "nic: error" not in capsys.readouterr().err


def test_every_user_facing_error_is_the_projects_own():
    from nic_lib import coding
    from nic_lib.errors import NicReproError
    from nic_lib.models import checkpoints, registry, zoo

    for cls in (cli.NicCliError, container.NicError, container.NicBudgetError, coding.RateEstimateError,
                checkpoints.CheckpointError, checkpoints.CheckpointNotFoundError,
                zoo.PretrainedWeightsUnavailableError, registry.UnknownModelError,
                registry.ModelSettingError, data.ImageLoadError, data.DatasetNotFoundError):
        assert issubclass(cls, NicReproError), cls
    # and keep the built-in bases callers catch today
    assert issubclass(container.NicError, ValueError)
    assert issubclass(checkpoints.CheckpointNotFoundError, FileNotFoundError)
    assert issubclass(registry.UnknownModelError, KeyError)
    assert issubclass(zoo.PretrainedWeightsUnavailableError, RuntimeError)


def test_kodak_c_subcommand_forwards_to_the_corruption_builder(tmp_path):
    from nic_lib import cli

    out = tmp_path / "kodak-C"
    code = cli.main(["kodak-c", "--out", str(out), "--limit", "1", "--corruptions", "fog",
                     "--severities", "1", "--workers", "1", "--quiet"])
    assert code == 0
    assert len(list(out.rglob("*.png"))) == 1


def _forged_large(nic_file, height: int, width: int):
    """Rewrite the file's header to announce a larger image (padding, latent shape, CRC)."""
    header, streams = container.unpack(nic_file.read_bytes())
    ratio = header.padded_height // header.latent_shape[0]
    pad_b, pad_r = (-height) % ratio, (-width) % ratio
    forged = container.NicHeader(header.model, header.quality, header.profile,
                                 header.fingerprint, height, width, pad_b, pad_r,
                                 ((height + pad_b) // ratio, (width + pad_r) // ratio))
    nic_file.write_bytes(container.pack(forged, streams))
    return nic_file


@pytest.mark.parametrize("flag, value", [("--max-pixels", 1_000_000), ("--max-memory-mb", 64)])
def test_decompression_bomb_is_refused_naming_the_flag(capsys, tmp_path, nic_file, flag, value):
    bomb = _forged_large(nic_file, 4096, 4096)
    code, _, err = _run(capsys, "decompress", bomb, tmp_path / "out.png", flag, value)
    _assert_user_error(code, err, "4096x4096", flag)
    assert not (tmp_path / "out.png").exists()


def test_budget_flags_reject_non_positive_values(capsys, tmp_path, nic_file):
    with pytest.raises(SystemExit) as info:
        cli.main(["decompress", str(nic_file), str(tmp_path / "o.png"), "--max-memory-mb", "0"])
    assert info.value.code == 2
    assert "positive whole number" in capsys.readouterr().err


def _save_tiny_pqmim(path) -> torch.nn.Module:
    from nic_lib.models import pqmim

    torch.manual_seed(0)
    model = pqmim.PQMIM(N=8, latent_dim=4, M=2, K=8, width=16, layers=1, heads=2)
    model.train()(torch.rand(2, 3, 64, 64), generator=torch.Generator().manual_seed(0))
    save_checkpoint(model.eval(), path, {"mask_law": "schedule"})
    return model.eval()


def _own_decode(model, img):
    x, _ = coding.pad_image(img, model.downsampling_factor)
    return coding.crop_to_image(model.decompress(model.compress(x)["strings"])["x_hat"],
                                *img.shape[:2])


def test_pqmim_by_name_and_by_checkpoint_roundtrips_to_its_own_decode(capsys, tmp_path, rgb_png,
                                                                      checkpoints):
    model = _save_tiny_pqmim(checkpoints / "pqmim" / "M2-K8.pt")
    img = data.load_image(rgb_png)
    by_name, by_path, out_png = tmp_path / "n.nic", tmp_path / "p.nic", tmp_path / "out.png"
    assert _run(capsys, "compress", rgb_png, by_name, "--model", "pqmim-M2-K8")[0] == 0
    assert _run(capsys, "compress", rgb_png, by_path, "--checkpoint",
                checkpoints / "pqmim" / "M2-K8.pt")[0] == 0
    assert by_name.read_bytes() == by_path.read_bytes()  # a shipped file is named as by name
    header = container.read_header(by_name.read_bytes())
    assert (header.model, header.quality) == ("pqmim-M2-K8", 1)
    assert _run(capsys, "decompress", by_name, out_png)[0] == 0
    np.testing.assert_array_equal(data.load_image(out_png), _own_decode(model, img))
    _assert_user_error(*_run(capsys, "compress", rgb_png, tmp_path / "q.nic", "--model",
                             "pqmim-M2-K8", "--quality", "3")[::2], "quality 1")


def test_pqmim_checkpoint_outside_the_folder_decodes_with_that_checkpoint(capsys, tmp_path,
                                                                        rgb_png):
    path = tmp_path / "run" / "final.pt"
    model = _save_tiny_pqmim(path)
    nic, out_png = tmp_path / "x.nic", tmp_path / "out.png"
    assert _run(capsys, "compress", rgb_png, nic, "--checkpoint", path)[0] == 0
    assert container.read_header(nic.read_bytes()).model == "pqmim"
    _assert_user_error(*_run(capsys, "decompress", nic, out_png)[::2], "checkpoints")
    assert _run(capsys, "decompress", nic, out_png, "--checkpoint", path)[0] == 0
    np.testing.assert_array_equal(data.load_image(out_png),
                                  _own_decode(model, data.load_image(rgb_png)))
    other = tmp_path / "other.pt"
    save_checkpoint(get_model("mbt2018", 1, "cpu"), other, {"quality": 1})
    _assert_user_error(*_run(capsys, "decompress", nic, tmp_path / "o.png", "--force",
                             "--checkpoint", other)[::2], "model 'pqmim'")
