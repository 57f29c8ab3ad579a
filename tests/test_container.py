"""Properties of the .nic container (nic_lib/container.py), on tiny untrained models."""

from __future__ import annotations

import copy
import dataclasses
import zlib

import numpy as np
import pytest
import torch

from nic_lib import coding, container
from nic_lib.models import registry

TINY = {"N": 8, "M": 12}  # widths that keep a 64x64 decode in milliseconds


def _tiny(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = registry.default_config(name, 1, "cpu")
    config.update(TINY)
    model = registry.build_model(name, **config)
    model.update(force=True)
    return model.eval()


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    return {name: _tiny(name) for name in ("mbt2018-mean", "mbt2018")}


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _model_reconstruction(model, img: np.ndarray) -> np.ndarray:
    """What the model itself decodes from its own compress output (no container)."""
    x, _ = coding.pad_image(img, model.downsampling_factor)
    out = model.compress(x)
    x_hat = model.decompress(out["strings"], out["shape"])["x_hat"]
    return coding.crop_to_image(x_hat, *img.shape[:2])


def _refresh_crc(data: bytes) -> bytes:
    return data[:-4] + zlib.crc32(data[:-4]).to_bytes(4, "big")


@pytest.mark.parametrize("name", ["mbt2018-mean", "mbt2018"])
@pytest.mark.parametrize("size", [(64, 64), (1, 1), (37, 100)])
def test_roundtrip_equals_model_reconstruction(models, name, size):
    model = models[name]
    img = _image(*size)
    data = container.encode_image(model, img, name, 1, "cpu")
    decoded = container.decode_image(data, model)
    assert decoded.shape == (*size, 3) and decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, _model_reconstruction(model, img))


def test_header_records_image_model_and_padding(models):
    model = models["mbt2018-mean"]
    data = container.encode_image(model, _image(37, 100), None, 3, "cpu")
    h = container.read_header(data)
    assert (h.model, h.quality, h.profile) == ("mbt2018-mean", 3, "cpu")
    assert (h.height, h.width, h.pad_bottom, h.pad_right) == (37, 100, 27, 28)
    assert h.latent_shape == (1, 2)  # z of a 64x128 input: stride 64
    assert h.fingerprint == container.weights_fingerprint(model)
    assert h.file_bytes == len(data)
    assert h.bpp == pytest.approx(8 * len(data) / (37 * 100))
    assert len(h.stream_lengths) == 2


def test_loader_gets_the_files_model_and_quality(models):
    model = models["mbt2018-mean"]
    data = container.encode_image(model, _image(64, 64), None, 5, "cpu")
    asked = []
    container.decode_image(data, lambda name, q: asked.append((name, q)) or model)
    assert asked == [("mbt2018-mean", 5)]


def test_pack_unpack_roundtrip_without_a_model():
    header = container.NicHeader("mbt2018", 2, "full", bytes(range(16)), 65, 1, 63, 63,
                                 (2, 1))
    streams = [b"abc", b"", b"\x00" * 300]
    parsed, got = container.unpack(container.pack(header, streams))
    assert got == streams
    assert dataclasses.replace(parsed, file_bytes=0) == dataclasses.replace(
        header, stream_lengths=(3, 0, 300))


@pytest.fixture(scope="module")
def valid(models) -> bytes:
    return container.encode_image(models["mbt2018-mean"], _image(64, 64), None, 1, "cpu")


def test_wrong_magic_is_refused(valid):
    with pytest.raises(container.NicFormatError, match="not a .nic file"):
        container.read_header(b"\x89PNG\r\n\x1a\n" + valid[8:])


def test_future_version_is_refused_with_upgrade_hint(valid):
    future = bytearray(valid)
    future[len(container.MAGIC)] = container.FORMAT_VERSION + 1
    with pytest.raises(container.NicVersionError, match="update nic-repro"):
        container.read_header(_refresh_crc(bytes(future)))


def test_damaged_version_byte_is_reported_as_damage_not_as_future(valid):
    damaged = bytearray(valid)
    damaged[len(container.MAGIC)] = container.FORMAT_VERSION + 1  # CRC left as written
    with pytest.raises(container.NicFormatError, match="corrupt") as info:
        container.read_header(bytes(damaged))
    assert not isinstance(info.value, container.NicVersionError)


def test_every_truncation_is_refused(valid):
    for k in range(len(valid)):
        with pytest.raises(container.NicFormatError, match="truncated|empty"):
            container.unpack(valid[:k])


def test_trailing_bytes_are_refused(valid):
    with pytest.raises(container.NicFormatError, match="unexpected bytes after"):
        container.unpack(valid + b"\x00")


def test_payload_bit_flip_fails_the_crc(valid):
    flipped = bytearray(valid)
    flipped[-6] ^= 0x10  # inside the last stream
    with pytest.raises(container.NicFormatError, match="CRC32 mismatch"):
        container.unpack(bytes(flipped))


def test_oversized_header_fields_are_refused_even_with_a_valid_crc(valid):
    header, streams = container.unpack(valid)
    huge = dataclasses.replace(header, height=1, width=1, pad_bottom=63, pad_right=63)
    data = bytearray(container.pack(huge, streams))
    name_end = len(container.MAGIC) + 2 + len(header.model) + 2 + len(header.profile) + 16
    data[name_end : name_end + 4] = (container.MAX_IMAGE_SIDE + 1).to_bytes(2, "big") * 2
    with pytest.raises(container.NicFormatError, match="MAX_IMAGE_SIDE"):
        container.unpack(_refresh_crc(bytes(data)))


def test_latent_shape_other_than_coded_size_over_factor_is_refused(models, valid):
    header, streams = container.unpack(valid)  # 64x64 coded, z 1x1
    forged = container.pack(dataclasses.replace(header, latent_shape=(2, 2)), streams)
    with pytest.raises(container.NicModelMismatchError, match="latent shape"):
        container.decode_image(forged, models["mbt2018-mean"])


def test_other_weights_are_refused_before_decoding(models, valid):
    other = _tiny("mbt2018-mean", seed=1)
    other.decompress = None  # decoding would fail loudly: the check must come first
    with pytest.raises(container.NicModelMismatchError, match="other weights"):
        container.decode_image(valid, other)


def test_other_model_is_refused(models, valid):
    with pytest.raises(container.NicModelMismatchError, match="model 'mbt2018-mean'"):
        container.decode_image(valid, models["mbt2018"])


def test_other_quality_is_refused(models, valid):
    with pytest.raises(container.NicModelMismatchError, match="quality 1, not 4"):
        container.decode_image(valid, models["mbt2018-mean"], quality=4)


def test_unknown_model_name_is_refused_before_loading(valid):
    header, streams = container.unpack(valid)
    data = container.pack(dataclasses.replace(header, model="mbt2099"), streams)
    with pytest.raises(container.NicModelMismatchError, match="does not have"):
        container.decode_image(data, lambda name, q: pytest.fail("loader called"))


def test_fingerprint_covers_weights_and_coding_order(models):
    model = models["mbt2018"]
    base = container.weights_fingerprint(model)
    assert container.weights_fingerprint(copy.deepcopy(model)) == base
    tweaked = copy.deepcopy(model)
    with torch.no_grad():
        tweaked.g_s[0].weight.view(-1)[0] += 1e-6
    assert container.weights_fingerprint(tweaked) != base
    reordered = copy.deepcopy(model)
    reordered.coding_order = "something-else"
    assert container.weights_fingerprint(reordered) != base


def test_too_large_image_is_refused_with_the_limit(models):
    wide = np.zeros((1, container.MAX_IMAGE_SIDE + 1, 3), np.uint8)
    with pytest.raises(container.NicImageSizeError, match="MAX_IMAGE_SIDE"):
        container.encode_image(models["mbt2018-mean"], wide, None, 1)


def test_forged_streams_decode_to_the_header_size_or_raise_nic_errors(models, valid):
    header, streams = container.unpack(valid)
    model = models["mbt2018-mean"]
    for forged in ([b"", b""], [b"\xff" * 64, streams[1]], [streams[0], b"\x00" * 3]):
        data = container.pack(header, forged)
        try:
            img = container.decode_image(data, model)
        except container.NicDecodeError:
            continue
        assert img.shape == (64, 64, 3)


# --------------------------------------------------------------------------------------
# The decode budget
# --------------------------------------------------------------------------------------


def _announcing(data: bytes, height: int, width: int) -> bytes:
    """The file with its header rewritten to announce height x width (CRC fixed)."""
    header, streams = container.unpack(data)
    ratio = header.padded_height // header.latent_shape[0]
    pad_b, pad_r = (-height) % ratio, (-width) % ratio
    forged = dataclasses.replace(header, height=height, width=width, pad_bottom=pad_b,
                                 pad_right=pad_r, latent_shape=((height + pad_b) // ratio,
                                                                (width + pad_r) // ratio))
    return container.pack(forged, streams)


def test_header_over_the_pixel_budget_is_refused_before_the_model_loads(valid):
    bomb = _announcing(valid, 4096, 4096)
    with pytest.raises(container.NicBudgetError, match="--max-pixels"):
        container.decode_image(bomb, lambda name, q: pytest.fail("loader called"),
                               max_pixels=4096 * 4095)


def test_header_over_the_memory_budget_is_refused_before_decoding(models, valid):
    model = copy.deepcopy(models["mbt2018-mean"])
    model.decompress = None  # decoding would fail loudly: the budget must come first
    bomb = _announcing(valid, 4096, 4096)
    need = container.decode_memory_bytes(container.read_header(bomb), model)
    with pytest.raises(container.NicBudgetError, match="--max-memory-mb") as info:
        container.decode_image(bomb, model, max_memory=need - 1)
    assert f"--max-memory-mb {-(-need // 2**20)}" in str(info.value)


def test_file_within_a_tight_budget_decodes(models, valid):
    header = container.read_header(valid)
    need = container.decode_memory_bytes(header, models["mbt2018-mean"])
    img = container.decode_image(valid, models["mbt2018-mean"], max_memory=need,
                                 max_pixels=64 * 64)
    assert img.shape == (64, 64, 3)


@pytest.mark.parametrize("name", ["mbt2018-mean", "mbt2018"])
def test_memory_estimate_grows_with_the_announced_image(models, valid, name):
    sizes = [(64, 64), (512, 768), (2048, 2048), (4096, 8192)]
    needs = [container.decode_memory_bytes(container.read_header(_announcing(valid, h, w)),
                                           models[name]) for h, w in sizes]
    assert needs == sorted(needs) and needs[-1] > 12 * 4096 * 8192  # x_hat alone is 12 B/px


def test_default_budget_takes_16_mp_and_refuses_the_largest_image_at_shipped_widths():
    # mbt2018 at the shipped main model's widths (N=64, M=192), untrained: only the
    # widths enter the estimate
    model = registry.build_model("mbt2018", N=64, M=192)

    def header(height, width):
        return container.NicHeader("mbt2018", 1, "cpu", bytes(16), height, width, 0, 0,
                                   (height // 64, width // 64), (10_000, 1_000))

    assert container.decode_memory_bytes(header(4096, 4096), model) <= container.DEFAULT_MAX_MEMORY
    largest = header(4096, 8192)
    assert largest.height * largest.width == container.MAX_IMAGE_PIXELS
    assert container.decode_memory_bytes(largest, model) > container.DEFAULT_MAX_MEMORY


# --------------------------------------------------------------------------------------
# PQ-MIM in the container (issue 27: one path from image to bits)


def _tiny_pqmim(seed: int = 0) -> torch.nn.Module:
    """A tiny untrained PQ-MIM with initialised codebooks."""
    from nic_lib.models import pqmim

    torch.manual_seed(seed)
    model = pqmim.PQMIM(N=8, latent_dim=4, M=2, K=8, width=16, layers=1, heads=2)
    model.train()(torch.rand(2, 3, 64, 64), generator=torch.Generator().manual_seed(seed))
    return model.eval()


@pytest.fixture(scope="module")
def pqmim_file() -> tuple[torch.nn.Module, np.ndarray, bytes]:
    model, img = _tiny_pqmim(), _image(37, 50)
    return model, img, container.encode_image(model, img, None, 1, "cpu")


def test_pqmim_roundtrip_equals_its_own_decode(pqmim_file):
    model, img, data = pqmim_file
    header, streams = container.unpack(data)
    assert (header.model, header.quality, header.latent_shape) == ("pqmim", 1, (3, 4))
    x, _ = coding.pad_image(img, model.downsampling_factor)
    own = model.compress(x)
    assert streams == [own["strings"][0][0]]  # the container wraps PQ-MIM's stream unchanged
    expected = coding.crop_to_image(model.decompress(own["strings"])["x_hat"], *img.shape[:2])
    np.testing.assert_array_equal(container.decode_image(data, model), expected)


def test_a_pqmim_file_and_another_models_file_refuse_each_others_model(models, valid, pqmim_file):
    model, _, data = pqmim_file
    with pytest.raises(container.NicModelMismatchError, match="model 'pqmim'"):
        container.decode_image(data, models["mbt2018"])
    with pytest.raises(container.NicModelMismatchError, match="model 'mbt2018-mean'"):
        container.decode_image(valid, model)
    other = _tiny_pqmim(seed=1)
    with pytest.raises(container.NicModelMismatchError, match="other weights"):
        container.decode_image(data, other)


def test_a_pqmim_checkpoint_name_is_its_model_for_the_container(pqmim_file):
    model, img, _ = pqmim_file
    data = container.encode_image(model, img, "pqmim-M2-K8", 1, "cpu")
    asked = []
    decoded = container.decode_image(data, lambda name, q: asked.append((name, q)) or model)
    assert asked == [("pqmim-M2-K8", 1)] and decoded.shape == img.shape
    header, streams = container.unpack(data)
    for name in ("pqmim-", "pqmim2-M2"):  # not a checkpoint name of a registered model
        forged = container.pack(dataclasses.replace(header, model=name), streams)
        with pytest.raises(container.NicModelMismatchError, match="does not have"):
            container.decode_image(forged, lambda name, q: pytest.fail("loader called"))


def test_shipped_pqmim_checkpoint_codes_through_the_container_as_by_itself():
    from nic_lib.models import hub

    path = hub.single_rate_checkpoint_path("pqmim-M4-K256")
    if not path.is_file():
        pytest.skip(f"no shipped {path}")
    model = hub.get_model("pqmim-M4-K256", 1)
    assert model.attention_radius == 5  # the tuned radius, from the checkpoint's config
    img = _image(40, 56, seed=3)
    data = container.encode_image(model, img, "pqmim-M4-K256", 1, "cpu")
    decoded = container.decode_image(data, lambda name, q: hub.get_model(name, q))
    x, _ = coding.pad_image(img, model.downsampling_factor)
    own = model.compress(x)
    assert container.unpack(data)[1] == [own["strings"][0][0]]
    np.testing.assert_array_equal(
        decoded, coding.crop_to_image(model.decompress(own["strings"])["x_hat"], 40, 56))


def test_a_pqmim_file_announcing_a_large_image_is_refused_by_its_transformers_memory(pqmim_file):
    model, _, data = pqmim_file
    header, streams = container.unpack(data)
    # 2048x2048: 16,384 tokens, ~17 GB for one MIM pass (its attention is quadratic)
    large = dataclasses.replace(header, height=2048, width=2048, pad_bottom=0, pad_right=0,
                                latent_shape=(128, 128))
    assert container.decode_memory_bytes(large, model) > 16 * 2**30
    model = copy.deepcopy(model)
    model.decompress = None  # decoding would fail loudly: the budget must refuse first
    with pytest.raises(container.NicBudgetError, match="--max-memory-mb"):
        container.decode_image(container.pack(large, streams), model)
