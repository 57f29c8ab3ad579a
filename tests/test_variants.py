"""Tests for nic_lib.variants: the OOD benchmark's NIC variants as the grid's codecs, from
tiny checkpoints in a temporary checkpoint folder (variable-rate, pruned, fixed-rate)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nic_lib import bench, pruning, variants
from nic_lib.models import build_model, default_config, hub, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
TINY = {"N": 8, "M": 12}


def _save(path, name="mbt2018", qualities=None, quality=3, prune=0.0, seed=0):
    torch.manual_seed(seed)
    config = {**default_config(name, quality), **TINY}
    if qualities:
        from nic_lib.models import registry

        config.update(lmbdas=[registry.LAMBDA_MSE[q] for q in qualities], quality=None,
                      qualities=list(qualities), lmbda=None)
    model = build_model(name, **config)
    if prune:
        pruning.apply_masks(model, pruning.magnitude_masks(model, prune))
    model.update(force=True)
    return save_checkpoint(model, path, config)


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv(hub.CHECKPOINT_DIR_ENV, str(tmp_path))
    return tmp_path


def test_missing_variants_are_skipped_with_the_command_that_trains_them(folder, capsys):
    table = variants.variant_table()
    assert set(table) == set(variants.OOD_VARIANTS)
    assert variants.variant_codecs(table, [1, 2, 3, 4, 5, 6]) == []
    out = capsys.readouterr().out
    assert out.count("NOTICE") == len(table)
    assert "python scripts/train_cpu_profile.py --only ood-pruned-50" in out
    assert "--only ood-elic-q1 ood-elic-q3 ood-elic-q4 ood-elic-q6" in out


def test_present_variants_become_grid_codecs_at_the_asked_qualities(folder, capsys):
    _save(folder / "ood" / "mbt2018-pruned-50.pt", qualities=[1, 2, 3, 4, 5, 6, 7, 8], prune=0.5)
    for q in variants.FIXED_QUALITIES:
        _save(folder / "ood" / f"mbt2018-fixed-q{q}.pt", quality=q, seed=q)
    table = {k: variants.variant_table()[k] for k in ("mbt2018-pruned-50", "mbt2018-fixed",
                                                     "elic2022")}
    codecs = variants.variant_codecs(table, [1, 2, 3, 4, 5, 6], rate="bitstream")
    assert "NOTICE: elic2022 left out" in capsys.readouterr().out
    by_name = {c.name: c for c in codecs}
    assert set(by_name) == {"mbt2018-pruned-50", "mbt2018-fixed"}
    assert by_name["mbt2018-pruned-50"].settings == (1, 2, 3, 4, 5, 6)
    assert by_name["mbt2018-fixed"].settings == (1, 3, 4, 6)
    assert pruning.sparsity_report(by_name["mbt2018-pruned-50"].models[3])["sparsity"] >= 0.5 - 1e-3
    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for codec in codecs:
        rows = codec.code_many(img)
        assert len(rows) == len(codec.settings)
    assert isinstance(codecs[0], bench.NicCodec)


def test_smoke_lists_present_variants_without_loading_them(folder, capsys):
    _save(folder / "ood" / "mbt2018-dense.pt", qualities=[1, 2])
    table = {"mbt2018-dense": variants.variant_table()["mbt2018-dense"]}
    assert variants.variant_codecs(table, [1, 2], evaluate=False) == []
    assert "mbt2018-dense: present, not evaluated" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore::nic_lib.coding.RateEstimateWarning")  # untrained tiny models
def test_variant_spectra_of_a_copy_of_the_control_are_the_controls(folder, capsys):
    from nic_lib import spectral

    _save(folder / "ood" / "mbt2018-dense.pt", qualities=[1, 3])
    _save(folder / "ood" / "mbt2018-data-blur.pt", qualities=[1, 3])  # the same weights
    _save(folder / "ood" / "mbt2018-data-noise.pt", qualities=[1, 3], seed=1)  # other weights
    rng = np.random.default_rng(0)
    clean = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2)]
    corrupted = {"clean": clean, "noisy": [np.clip(x + rng.normal(0, 20, x.shape), 0, 255).astype(np.uint8)
                                           for x in clean]}
    maps, table = variants.variant_spectra(variants.DATA_SPECTRUM_VARIANTS, 3, ["a", "b"], clean, corrupted)
    assert list(maps) == list(variants.DATA_SPECTRUM_VARIANTS)
    assert set(maps["mbt2018-dense"]) == {"clean", "noisy"}
    ratio = spectral.relative_band_energies(table.query("kind != 'shift'"), "mbt2018-dense")
    assert set(ratio.index.get_level_values("codec")) == {"mbt2018-data-blur", "mbt2018-data-noise"}
    np.testing.assert_allclose(ratio.loc["mbt2018-data-blur"].to_numpy(), 1.0)
    assert not np.allclose(ratio.loc["mbt2018-data-noise"].to_numpy(), 1.0)
    # a missing variant is left out with the command that trains it
    (folder / "ood" / "mbt2018-data-noise.pt").unlink()
    maps, _ = variants.variant_spectra(variants.DATA_SPECTRUM_VARIANTS, 3, ["a"], clean[:1],
                                       {"clean": clean[:1]})
    assert list(maps) == ["mbt2018-dense", "mbt2018-data-blur"]
    assert "--only ood-data-noise" in capsys.readouterr().out
