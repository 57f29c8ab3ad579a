"""The ``full`` profile's download path, against the stand-in zoo on a loopback server:
download, hash check, cache, load; a corrupt download is refused and not cached. And the
stand-in's designed codecs behave as codecs: rate and PSNR rise with the quality."""

from __future__ import annotations

import hashlib
import importlib

import numpy as np
import pytest
import torch

from nic_lib.models import get_model, zoo
from nic_lib.models.registry import ZOO_FUNCTIONS
from nic_lib.models.zoo import PretrainedWeightsUnavailableError, ZooHashMismatchError
from nic_lib.testing import standin_zoo


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    with standin_zoo.serve(tmp_path_factory.mktemp("standin-zoo")) as served:
        yield served


@pytest.fixture
def use_standin(standin, tmp_path, monkeypatch):
    """$NIC_ZOO_URLS at the stand-in, a fresh torch hub cache; yields the stand-in."""
    monkeypatch.setenv(zoo.ZOO_URLS_ENV, str(standin.manifest))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    standin.requests.clear()
    standin.corrupt.clear()
    yield standin
    standin.corrupt.clear()


def test_the_zoo_table_is_compressai_1_2_8s_image_zoo():
    import compressai
    import compressai.zoo

    assert compressai.__version__ == "1.2.8"
    assert set(zoo.ZOO) | {"bmshj2018-factorized-relu"} == set(compressai.zoo.image_models)
    for key, entry in zoo.ZOO.items():
        urls = importlib.import_module(f"compressai.zoo.{entry.module}").model_urls[key][zoo.METRIC]
        assert (isinstance(urls, str)) == entry.variable_rate
        if not entry.variable_rate:
            assert tuple(sorted(urls)) == entry.qualities
    assert set(ZOO_FUNCTIONS) <= set(zoo.ZOO)


def test_standin_files_are_named_as_compressai_names_them_with_their_own_hash(standin):
    for key, entry in zoo.ZOO.items():
        for quality in entry.qualities[:1] + entry.qualities[-1:]:
            name = standin.file_name(key, quality)
            published = standin_zoo._compressai_url(key, quality).rsplit("/", 1)[1]
            prefix = zoo.hash_prefix(name)
            # same name up to the prefix, which is as long as the published one's
            assert name.replace(prefix, "") == published.replace(zoo.hash_prefix(published), "")
            assert len(prefix) == len(zoo.hash_prefix(published))
            digest = hashlib.sha256((standin.folder / name).read_bytes()).hexdigest()
            assert digest.startswith(prefix)


def test_download_is_hash_checked_cached_and_loaded_into_the_registered_class(use_standin):
    model = get_model("mbt2018", 3, profile="full")
    name = use_standin.file_name("mbt2018", 3)
    assert use_standin.requests == [name]
    assert (zoo.cache_dir() / name).is_file()
    from nic_lib.models import JointAutoregressiveHierarchicalPriors

    assert type(model) is JointAutoregressiveHierarchicalPriors and not model.training
    assert (model.N, model.M) == standin_zoo.standin_widths("mbt2018", 3)
    # the weights are the file's
    from compressai.zoo import load_state_dict

    stored = load_state_dict(torch.load(zoo.cache_dir() / name, weights_only=True))
    assert torch.equal(model.g_a[0].weight, stored["g_a.0.weight"])
    # a second load reads the cache: no request
    get_model("mbt2018", 3, profile="full")
    assert use_standin.requests == [name]


@pytest.mark.parametrize("key", list(zoo.ZOO))
def test_every_zoo_model_round_trips_a_bitstream(use_standin, key):
    quality = zoo.ZOO[key].qualities[-1]
    model = zoo.load_zoo_model(key, quality)
    torch.manual_seed(0)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        enc = model.compress(x)
        dec = model.decompress(enc["strings"], enc["shape"])
        again = model.compress(x)
    assert dec["x_hat"].shape == x.shape and torch.isfinite(dec["x_hat"]).all()
    assert again["strings"] == enc["strings"]  # deterministic encoder


def test_a_corrupt_download_is_refused_and_not_cached(use_standin):
    name = use_standin.file_name("mbt2018-mean", 2)
    use_standin.corrupt.add(name)
    with pytest.raises(ZooHashMismatchError) as err:
        get_model("mbt2018-mean", 2, profile="full")
    message = str(err.value)
    assert zoo.hash_prefix(name) in message and "nothing was cached" in message
    folder = zoo.cache_dir()
    assert not folder.exists() or list(folder.iterdir()) == []  # no file, no partial
    # once the server sends the right bytes, the same call works
    use_standin.corrupt.clear()
    get_model("mbt2018-mean", 2, profile="full")
    assert (folder / name).is_file()


def test_a_cached_file_altered_after_download_is_refused(use_standin):
    get_model("bmshj2018-factorized", 1, profile="full")
    path = zoo.cache_dir() / use_standin.file_name("bmshj2018-factorized", 1)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ZooHashMismatchError, match=f"rm {path}"):
        get_model("bmshj2018-factorized", 1, profile="full")


def test_offline_gives_an_error_naming_the_cache_and_the_fixes(tmp_path, monkeypatch):
    import json
    import socket

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    manifest = tmp_path / "urls.json"
    manifest.write_text(json.dumps({"mbt2018": {"mse": {"3": f"http://127.0.0.1:{port}/mbt2018-3-22901978.pth.tar"}}}))
    monkeypatch.setenv(zoo.ZOO_URLS_ENV, str(manifest))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    with pytest.raises(PretrainedWeightsUnavailableError) as err:
        get_model("mbt2018", 3, profile="full")
    message = str(err.value)
    assert "internet" in message and str(tmp_path / "th" / "hub" / "checkpoints") in message
    assert not (tmp_path / "th" / "hub" / "checkpoints" / "mbt2018-3-22901978.pth.tar").exists()


def test_without_override_the_urls_are_compressais(monkeypatch):
    monkeypatch.delenv(zoo.ZOO_URLS_ENV, raising=False)
    assert zoo.zoo_url("mbt2018", 3) == "https://compressai.s3.amazonaws.com/models/v1/mbt2018-3-22901978.pth.tar"
    assert zoo.hash_prefix("mbt2018-3-22901978.pth.tar") == "22901978"
    with pytest.raises(PretrainedWeightsUnavailableError, match="qualities"):
        zoo.zoo_url("cheng2020-anchor", 7)


def _kodak_crop(side: int = 128) -> np.ndarray:
    from nic_lib import data

    try:
        _, pixels = data.load_images("kodak", limit=1)[0]
    except data.DatasetNotFoundError as err:
        pytest.skip(f"Kodak not found ({err})")
    top, left = (pixels.shape[0] - side) // 2, (pixels.shape[1] - side) // 2
    return pixels[top : top + side, left : left + side].copy()


@pytest.fixture(scope="module")
def standin_rd(standin, tmp_path_factory):
    """bpp, estimated bpp and PSNR of the stand-in codecs on a Kodak crop, qualities 1-6."""
    from nic_lib import coding

    img = _kodak_crop()
    folder = tmp_path_factory.mktemp("standin-rd-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(zoo.ZOO_URLS_ENV, str(standin.manifest))
        curves = {}
        for key in standin_zoo.CODEC_KEYS:
            rows = []
            for quality in range(1, 7):
                out = coding.code_image(zoo.load_zoo_model(key, quality, folder=folder), img)
                mse = np.mean((out["x_hat"].astype(np.float64) - img) ** 2)
                rows.append((out["bpp"], out["bpp_est"], 10 * np.log10(255.0**2 / mse)))
            curves[key] = np.array(rows)
    return curves


@pytest.mark.parametrize("key", standin_zoo.CODEC_KEYS)
def test_standin_codecs_spend_more_bits_for_a_better_picture_at_each_quality(standin_rd, key):
    from nic_lib import rd

    bpp, bpp_est, psnr = standin_rd[key].T
    assert (np.diff(bpp) > 0).all() and (np.diff(psnr) > 0).all(), standin_rd[key]
    assert psnr[0] > 15 and psnr[-1] - psnr[0] > 3  # a codec's range, not noise
    assert rd.bd_rate(bpp, psnr, bpp * 1.1, psnr) == pytest.approx(10.0, abs=0.5)  # BD-rate accepts the curve
    # the designed densities are the coder's: real bits within 5% of the estimate, plus
    # the rANS streams' few bytes of overhead (which dominate at q1: ~6 of 48 bytes)
    pixels = 128 * 128
    assert (np.abs(bpp - bpp_est) <= 0.05 * bpp_est + 16 * 8 / pixels).all(), bpp / bpp_est


def test_standin_joint_model_uses_its_context(standin_rd):
    # the joint model predicts means from the left neighbour: fewer bits than mean-scale
    assert (standin_rd["mbt2018"][:, 0] < standin_rd["mbt2018-mean"][:, 0]).all()


def test_standin_decoder_is_the_adjoint_of_the_encoder(use_standin):
    # g_s(g_a(.)) of the stand-in codec is an orthogonal projection: applying it twice
    # changes nothing, and it keeps the part of an image it projects on
    model = zoo.load_zoo_model("bmshj2018-factorized", 3)
    x = torch.from_numpy(_kodak_crop(64)).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        once = model.g_s(model.g_a(x))
        twice = model.g_s(model.g_a(once))
    assert torch.allclose(once, twice, atol=1e-5)
    assert float(((once - x) ** 2).mean()) < 0.01  # >20 dB: it keeps the image's coarse part
