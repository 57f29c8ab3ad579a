"""The ``full`` profile's download path, against the stand-in zoo on a loopback server:
download, hash check, cache, load; a corrupt download is refused and not cached."""

from __future__ import annotations

import hashlib
import importlib

import pytest
import torch

from nic_lib.models import get_model, zoo
from nic_lib.models.registry import ZOO_FUNCTIONS, PretrainedWeightsUnavailableError, ZooHashMismatchError
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
