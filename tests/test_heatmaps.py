"""Properties of nic_lib.heatmaps: basis images, half-plane sampling, the two measures, the budget."""

import numpy as np
import pytest
import scipy.ndimage

from nic_lib import heatmaps


def _identity_codec(images):
    return np.asarray(images).copy(), np.ones(len(images))


def _blur_codec(images):
    out = scipy.ndimage.gaussian_filter(np.asarray(images, dtype=float), sigma=(0, 1.5, 1.5, 0))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), np.ones(len(images))


def _textured(side=64, seed=0):
    rng = np.random.default_rng(seed)
    smooth = scipy.ndimage.gaussian_filter(rng.normal(0, 30, (side, side, 3)), (2, 2, 0))
    return np.clip(128 + smooth, 0, 255).astype(np.uint8)


def test_fourier_basis_has_unit_norm_mirror_symmetry_and_one_frequency():
    u = heatmaps.fourier_basis(32, 32, 3, -5)
    assert np.linalg.norm(u) == pytest.approx(1.0)
    assert np.allclose(u, heatmaps.fourier_basis(32, 32, -3, 5))
    power = np.abs(np.fft.fft2(u)) ** 2
    assert set(zip(*np.nonzero(power > 1e-9))) == {(3, 27), (29, 5)}


def test_half_plane_of_32_grid_is_32_by_17_and_mirrors_the_rest():
    computed, source = heatmaps.heatmap_frequencies(32)
    assert len(computed) == 32 * 17
    assert len(source) == 32 * 32
    for (i, j), (si, sj) in source.items():
        assert (si, sj) in ((i, j), (-i, -j))


def test_heatmap_of_a_blurring_codec_is_worse_at_high_frequencies():
    flat = np.full((40, 40, 3), 128, dtype=np.uint8)
    table = heatmaps.fourier_heatmap([flat], _blur_codec, grid=8, eps=1.0, crop=32, batch=7)
    assert len(table) == len(heatmaps.heatmap_frequencies(8, 4, 32)[0])
    psnr = heatmaps.heatmap_array(table, "psnr")
    assert not np.isnan(psnr).any()  # every cell computed or mirrored (DC is inf: a flat shift survives a blur)
    inner = psnr[1:, 1:]  # cells (i, j) and (-i, -j) with both in the grid
    assert np.allclose(inner, inner[::-1, ::-1])
    low = table.loc[table["radius"] < 0.3, "psnr"].mean()
    high = table.loc[table["radius"] > 0.7, "psnr"].mean()
    assert high < low - 3


def test_identity_codec_has_zero_generalization_and_robustness_equal_to_the_perturbation():
    table = heatmaps.add_measures(heatmaps.fourier_heatmap([_textured()], _identity_codec, grid=6, crop=48, step=1))
    assert np.all(table["mse"] == 0) and np.all(table["generalization"] == 0)
    # against the clean image the identity keeps exactly the (rounded) perturbation's energy ...
    assert np.allclose(table["mse_clean"], table["mse_perturbation"])
    assert np.allclose(table["robustness"], 1.0)
    # ... which is eps^2 / (H W) on the [0, 1] scale, to within the rounding to uint8
    expected = (255 * heatmaps.DEFAULT_EPS) ** 2 / 48**2
    assert table["mse_perturbation"].mean() == pytest.approx(expected, rel=0.15)


def test_low_pass_codec_generalization_grows_with_frequency_and_robustness_falls():
    # lowest 16x16 frequencies of a 64 crop, every 2nd: the blur's gain falls from 1 at DC
    table = heatmaps.add_measures(heatmaps.fourier_heatmap([_textured(seed=1)], _blur_codec, grid=8, crop=64, step=2,
                                                           eps=8.0))
    g = heatmaps.heatmap_array(table, "generalization")
    r = heatmaps.heatmap_array(table, "robustness")
    near = table["radius"] < 0.1
    far = table["radius"] > 0.2
    assert table.loc[far, "generalization"].mean() > table.loc[near, "generalization"].mean() + 0.2
    assert table.loc[far, "robustness"].mean() < table.loc[near, "robustness"].mean() - 0.2
    assert g.shape == r.shape == (8, 8) and not np.isnan(g).any()


def test_extent_is_in_cycles_per_pixel_and_centres_zero_frequency():
    table = heatmaps.fourier_heatmap([_textured()], _identity_codec, grid=4, crop=32, step=2)
    left, right, bottom, top = heatmaps.heatmap_extent(table)
    assert right - left == pytest.approx(4 * 2 / 32)  # 4 cells of 2 cycles per 32 px
    assert left == top and right == bottom  # fy grows downwards, as in an image
    assert (left + 2.5 * 2 / 32) == pytest.approx(0.0)  # cell index 2 (frequency 0) is centred on 0


def test_setting_counts_runs_and_says_how_it_differs_from_the_reference():
    ref = heatmaps.REFERENCE_SETTING
    assert ref.frequencies == 64 * 33  # the reference code's 2,112 runs per image
    assert ref.calls == 24 * (ref.frequencies + 1)
    mine = heatmaps.HeatmapSetting(window=64, stride=2, crop=512, images=8)
    assert mine.grid == 32 and mine.max_cycles_per_pixel == pytest.approx(32 / 512)
    assert mine.calls < ref.calls / 10
    text = mine.versus(ref)
    assert "8 crops instead of 24" in text and "every 2 cycles" in text
    assert mine.seconds(0.5) == pytest.approx(0.5 * mine.calls)
    with pytest.raises(ValueError, match="even multiple"):
        heatmaps.HeatmapSetting(window=64, stride=3, crop=512, images=1)


def test_seconds_per_call_times_one_crop():
    assert heatmaps.seconds_per_call(_identity_codec, _textured(), 32, calls=2) >= 0.0


def test_nic_codec_heatmap_runs_a_tiny_untrained_model():
    torch = pytest.importorskip("torch")
    from nic_lib import spectral
    from nic_lib.models import build_model

    torch.manual_seed(0)
    codec = spectral.nic_codec(build_model("bmshj2018-hyperprior", N=8, M=12), check=None)
    images = np.random.default_rng(5).integers(0, 256, (1, 40, 72, 3), dtype=np.uint8)
    table = heatmaps.fourier_heatmap(images, codec, grid=4, crop=32, batch=16)
    assert np.isfinite(table["bpp"]).all()
