"""The Gaussian coders' scale table (nic_lib/models/tables.py): its values, which models
use it, checkpoints and .nic files of CompressAI's 64-scale table (refused)."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import torch
from compressai.entropy_models import GaussianConditional
from compressai.models.base import get_scale_table

from nic_lib import container
from nic_lib.models import checkpoints, registry, tables

TINY = {"N": 8, "M": 12}
#: Registered models whose y is coded by a Gaussian conditional (the factorized prior
#: has none; the GMM keeps one, unused by its coder, and gets the table too).
GAUSSIAN = ("bmshj2018-hyperprior", "mbt2018-mean", "mbt2018", "mbt2018-context",
            "mbt2018-gmm", "mbt2018-checkerboard")


def _tiny(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = registry.default_config(name, 1, "cpu")
    config.update(TINY)
    model = registry.build_model(name, **config).eval()
    with torch.no_grad():  # masked convolutions zero their masked weights in place on
        model(torch.zeros(1, 3, 64, 64))  # the first call; trained weights already are
    model.update(force=True)
    return model


def _conditional(model) -> GaussianConditional:
    (gc,) = [m for m in model.modules() if isinstance(m, GaussianConditional)]
    return gc


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (48, 80, 3), dtype=np.uint8)


def _as_version(data: bytes, version: int) -> bytes:
    """The same file with another version byte (and its CRC refreshed)."""
    raw = bytearray(data)
    raw[len(container.MAGIC)] = version
    return bytes(raw[:-4]) + zlib.crc32(bytes(raw[:-4])).to_bytes(4, "big")


def test_scale_table_is_log_spaced_over_compressai_range():
    t = tables.scale_table().double()
    assert t.shape == (tables.SCALE_LEVELS,) and tables.SCALE_LEVELS == 256
    assert math.isclose(t[0], 0.11, rel_tol=1e-6) and math.isclose(t[-1], 256, rel_tol=1e-6)
    ratios = t[1:] / t[:-1]
    # s_{i+1} / s_i = (256 / 0.11)^(1/255) ≈ 1.031 everywhere
    np.testing.assert_allclose(ratios, (256 / 0.11) ** (1 / 255), rtol=1e-5)
    # the same formula with 64 levels is CompressAI's default table
    np.testing.assert_allclose(tables.scale_table(64), get_scale_table(), rtol=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        tables.scale_table(1)


@pytest.mark.parametrize("name", GAUSSIAN)
def test_every_gaussian_model_codes_with_the_fine_table(name):
    model = _tiny(name)
    assert torch.equal(_conditional(model).scale_table, tables.scale_table())
    assert tables.scale_table_matches(model, tables.scale_table())
    assert not tables.scale_table_matches(model, get_scale_table())


def test_factorized_prior_has_no_gaussian_table_to_change():
    model = _tiny("bmshj2018-factorized")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert tables.scale_table_matches(model, tables.scale_table(64))
    assert not tables.set_scale_table(model, tables.scale_table(64))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_set_scale_table_rebuilds_only_the_gaussian_coder():
    model = _tiny("mbt2018-mean")
    z_cdf = model.entropy_bottleneck._quantized_cdf.clone()
    assert tables.set_scale_table(model, tables.scale_table(64))
    gc = _conditional(model)
    assert gc._quantized_cdf.shape[0] == 64
    assert gc._offset.numel() == gc._cdf_length.numel() == 64
    assert torch.equal(model.entropy_bottleneck._quantized_cdf, z_cdf)
    assert not tables.set_scale_table(model, tables.scale_table(64))  # already there
    assert tables.set_scale_table(model)
    assert gc._quantized_cdf.shape[0] == tables.SCALE_LEVELS


def test_a_checkpoint_coded_for_another_scale_table_is_refused_by_name(tmp_path):
    model = _tiny("mbt2018-mean")
    tables.set_scale_table(model, get_scale_table())  # CompressAI's 64 scales (the M = 96 set's files)
    path = tmp_path / "old.pt"
    checkpoints.save_checkpoint(model, path, {"quality": 1})
    assert torch.load(path, weights_only=True)["state_dict"]["gaussian_conditional.scale_table"].shape == (64,)
    with pytest.raises(checkpoints.CheckpointMismatchError, match="64 scales"):
        checkpoints.load_checkpoint(path)
    # the same weights saved for this project's table load, their CDFs rebuilt from the table
    tables.set_scale_table(model)
    checkpoints.save_checkpoint(model, path, {"quality": 1})
    loaded, _ = checkpoints.load_checkpoint(path)
    assert tables.scale_table_matches(loaded, tables.scale_table())
    img = _image()
    data = container.encode_image(loaded, img, "mbt2018-mean", 1, "cpu")
    np.testing.assert_array_equal(container.decode_image(data, loaded), container.decode_image(data, model))


def test_version_1_files_are_refused_naming_the_version_and_the_fix():
    """Version 1 (CompressAI's 64-scale table) is retired: an intact version-1 file is
    refused before any model is asked for, with the version and how to re-encode."""
    model = _tiny("mbt2018-mean")
    v2 = container.encode_image(model, _image(2), "mbt2018-mean", 1, "cpu")
    assert container.read_header(v2).version == container.FORMAT_VERSION == 2
    v1 = _as_version(v2, 1)
    for read in (container.read_header, lambda d: container.decode_image(d, model)):
        with pytest.raises(container.NicVersionError,
                           match=r"version 1 \(.*64-scale.*\).*re-encode the image"):
            read(v1)
    # a damaged version byte is damage, not a retired version
    with pytest.raises(container.NicFormatError, match="CRC32"):
        container.read_header(v2[: len(container.MAGIC)] + b"\x01" + v2[len(container.MAGIC) + 1 :])


def test_a_decoder_holding_compressai_tables_refuses_a_version_2_file():
    model = _tiny("mbt2018-mean")
    v2 = container.encode_image(model, _image(2), "mbt2018-mean", 1, "cpu")
    other = _tiny("mbt2018-mean")
    _conditional(other).update_scale_table(get_scale_table(), force=True)
    with pytest.raises(container.NicModelMismatchError, match="fingerprint"):
        container.decode_image(v2, other)


def test_fine_table_codes_the_same_symbols_in_fewer_or_equal_table_steps():
    """Every scale is coded with a table scale at most 3.1% above it (64 scales: 13%)."""
    model = _tiny("mbt2018-mean")
    gc = _conditional(model)
    scales = torch.exp(torch.linspace(math.log(0.12), math.log(200), 1000))
    for table, ratio in ((tables.scale_table(), (256 / 0.11) ** (1 / 255)),
                         (get_scale_table(), (256 / 0.11) ** (1 / 63))):
        tables.set_scale_table(model, table)
        coded = gc.scale_table[gc.build_indexes(scales).long()]
        assert torch.all(coded >= scales * (1 - 1e-6))
        assert torch.all(coded <= scales * ratio * (1 + 1e-5))


def test_float64_tables_agree_with_compressai_float32_construction():
    """build_gaussian_tables computes GaussianConditional.update's quantities in float64:
    the same offsets and lengths, CDFs equal up to a few 16-bit units in rare entries."""
    ours = GaussianConditional(None)
    theirs = GaussianConditional(None)
    table = tables.scale_table()
    tables.build_gaussian_tables(ours, table)
    theirs.update_scale_table(table, force=True)
    assert torch.equal(ours.scale_table, theirs.scale_table)
    assert torch.equal(ours._offset, theirs._offset)
    assert torch.equal(ours._cdf_length, theirs._cdf_length)
    diff = (ours._quantized_cdf - theirs._quantized_cdf).abs()
    assert diff.max() <= 4 and (diff > 0).float().mean() < 0.05
    for row, n in zip(ours._quantized_cdf, ours._cdf_length):
        cdf = row[:n]
        assert cdf[0] == 0 and cdf[-1] == 1 << 16 and torch.all(cdf[1:] > cdf[:-1])


def test_update_builds_and_force_rebuilds_the_same_tables():
    model = _tiny("mbt2018")
    gc = _conditional(model)
    before = gc._quantized_cdf.clone()
    assert not model.update()  # built already: nothing to do
    assert model.update(force=True)
    assert torch.equal(gc._quantized_cdf, before)  # deterministic


def test_checkpoints_store_gaussian_cdfs_empty_and_load_rebuilds_them(tmp_path):
    model = _tiny("mbt2018-mean")
    path = checkpoints.save_checkpoint(model, tmp_path / "new.pt", {"quality": 1})
    stored = torch.load(path, weights_only=True)["state_dict"]
    for name in ("_quantized_cdf", "_offset", "_cdf_length"):
        assert stored[f"gaussian_conditional.{name}"].numel() == 0
    assert torch.equal(stored["gaussian_conditional.scale_table"], tables.scale_table())
    assert stored["entropy_bottleneck._quantized_cdf"].numel() > 0  # depends on weights: kept
    loaded, _ = checkpoints.load_checkpoint(path)
    # the decoder rebuilds exactly the encoder's tables: same fingerprint, same image
    assert container.weights_fingerprint(loaded) == container.weights_fingerprint(model)
    img = _image(3)
    data = container.encode_image(model, img, "mbt2018-mean", 1, "cpu")
    np.testing.assert_array_equal(container.decode_image(data, loaded),
                                  container.decode_image(data, model))
