"""Properties of nic_lib.spectral: Parseval, flat white noise, bands, codec callables (heat maps: test_heatmaps.py)."""

import warnings

import numpy as np
import pytest
import scipy.ndimage

from nic_lib import metrics, spectral


def _cosine_image(h, w, fy, fx, amplitude):
    y, x = np.mgrid[:h, :w]
    return amplitude * np.cos(2 * np.pi * (fy * y / h + fx * x / w))


def test_unwindowed_spectrum_mean_equals_mse_parseval():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
    spec = spectral.error_power_spectrum([a], [b], window=None, channels="rgb")
    mse = np.mean((a.astype(float) - b.astype(float)) ** 2)
    assert spec.mean() == pytest.approx(mse, rel=1e-10)
    assert sum(spectral.band_energies(spec).values()) == pytest.approx(mse, rel=1e-10)


def test_white_noise_spectrum_is_flat_with_and_without_window():
    rng = np.random.default_rng(1)
    noise = [rng.normal(0, 3.0, (64, 64)) for _ in range(40)]
    for window in (None, "hann"):
        profile = spectral.radial_profile(spectral.mean_power_spectrum(noise, window=window), bins=8)
        power = profile["power"].iloc[1:].to_numpy()  # the centre annulus has too few bins
        # flat at the noise variance (9), within sampling error of 40 images
        assert np.allclose(power, 9.0, rtol=0.12), power


def test_sub_grey_level_error_is_not_rounded_away():
    # a 0.3-grey-level ripple: rounding before the FFT (the reference code) would give zero
    diff = _cosine_image(32, 32, 4, 0, 0.3)
    spec = spectral.power_spectrum(diff, window=None)
    assert spec.sum() > 0
    assert spec.mean() == pytest.approx(np.mean(diff**2))


def test_cosine_energy_lands_in_its_band():
    # 0.75 Nyquist -> high band; 0.0625 Nyquist -> low band
    for f, band in ((24, "high"), (2, "low"), (8, "mid")):
        spec = spectral.power_spectrum(_cosine_image(64, 64, f, 0, 10.0), window=None)
        energies = spectral.band_energies(spec)
        assert energies[band] == pytest.approx(sum(energies.values()), rel=1e-9), (f, energies)


def test_luma_spectrum_of_grey_error_equals_channel_spectrum():
    grey = np.repeat(np.random.default_rng(2).normal(0, 1, (16, 16))[..., None], 3, axis=2)
    assert np.allclose(spectral.power_spectrum(grey, channels="luma"), spectral.power_spectrum(grey, channels="rgb"))
    assert spectral.power_spectrum(grey, channels="per-channel").shape == (3, 16, 16)


def test_mean_spectrum_rejects_mixed_shapes_and_landscape_fixes_portraits():
    portrait, land = np.zeros((20, 10, 3)), np.zeros((10, 20, 3))
    with pytest.raises(ValueError, match="landscape"):
        spectral.mean_power_spectrum([portrait, land])
    assert spectral.mean_power_spectrum([spectral.landscape(portrait), land]).shape == (10, 20)


def test_ood_spectra_vs_clean_is_shift_when_codec_is_lossless():
    rng = np.random.default_rng(3)
    x = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)]
    cx = [np.clip(x[0].astype(int) + 7, 0, 255).astype(np.uint8)]
    maps = spectral.ood_error_spectra(x, cx, cx)
    assert np.allclose(maps["vs_clean"], maps["shift"])
    assert np.all(maps["vs_corrupted"] == 0)


def test_classic_codec_reports_the_real_rate():
    img = np.random.default_rng(4).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    recon, bpp = spectral.classic_codec("jpeg", setting=50)(img[None])
    assert recon.shape == (1, 64, 64, 3) and recon.dtype == np.uint8
    assert bpp[0] > 0.5  # noise costs many bits even at quality 50
    with pytest.raises(ValueError, match="exactly one"):
        spectral.classic_codec("jpeg")


def test_nic_codec_runs_a_tiny_untrained_model_on_a_batch():
    torch = pytest.importorskip("torch")
    from nic_lib.models import build_model

    torch.manual_seed(0)
    codec = spectral.nic_codec(build_model("bmshj2018-hyperprior", N=8, M=12), check=None)
    images = np.random.default_rng(5).integers(0, 256, (2, 40, 72, 3), dtype=np.uint8)
    recon, bpp = codec(images)
    assert recon.shape == images.shape and recon.dtype == np.uint8
    assert bpp.shape == (2,) and np.all(bpp > 0)


def test_classic_codec_at_another_codecs_rate_lands_on_that_rate():
    rng = np.random.default_rng(3)
    clean = [np.clip(scipy.ndimage.gaussian_filter(rng.uniform(0, 255, (96, 96, 3)), (2, 2, 0)), 0, 255).astype(np.uint8)]
    noisy = [np.clip(clean[0] + rng.normal(0, 20, clean[0].shape), 0, 255).astype(np.uint8)]
    table = spectral.psnr_at_matched_rate(["a"], clean, noisy, [1.0], "jpeg2000")
    row = table.iloc[0]
    assert row["bpp"] == pytest.approx(1.0, rel=0.15)
    # PSNR of the reconstruction of the *noisy* input, against it and against the clean image
    recon, _ = spectral.classic_codec("jpeg2000", bpp=1.0)(noisy[0][None])
    assert row["psnr_vs_input"] == pytest.approx(metrics.psnr(noisy[0], recon[0]))
    assert row["psnr_vs_clean"] == pytest.approx(metrics.psnr(clean[0], recon[0]))


def test_one_size_images_are_landscape_crops_of_the_first_ones_size():
    rng = np.random.default_rng(0)
    portrait, landscape_, small = (rng.integers(0, 256, s + (3,), dtype=np.uint8)
                                   for s in ((48, 32), (32, 48), (20, 40)))
    kept = spectral.one_size_images([("p", portrait), ("l", landscape_), ("s", small)])
    assert [n for n, _ in kept] == ["p", "l"] and kept[0][1].shape == (32, 48, 3)
    cropped = spectral.one_size_images([("p", portrait), ("s", small)], crop=16)
    assert [img.shape for _, img in cropped] == [(16, 16, 3), (16, 16, 3)]
    with pytest.raises(ValueError, match="smaller than"):
        spectral.one_size_images([("s", small)], crop=24)


def test_nic_codec_checks_its_estimate_against_real_bits_once():
    from nic_lib import coding
    from nic_lib.testing.fuzz import tiny_model

    images = np.random.default_rng(6).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    strict = spectral.nic_codec(tiny_model("mbt2018-mean"), check="raise", rtol=0.0)
    with pytest.raises(coding.RateEstimateError, match="real bitstream"):
        strict(images)  # no estimate equals the real bits exactly
    lenient = spectral.nic_codec(tiny_model("mbt2018-mean"), rtol=0.0)
    with pytest.warns(coding.RateEstimateWarning):
        recon, bpp = lenient(images)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.array_equal(lenient(images)[0], recon)  # checked on the first call only


def _smooth_images(n=12, side=64, seed=3):
    """Images with a natural-looking falling spectrum: white noise blurred, around mid-grey."""
    rng = np.random.default_rng(seed)
    return [np.clip(128 + 6 * scipy.ndimage.gaussian_filter(rng.normal(0, 8, (side, side, 3)), (2, 2, 0)), 0, 255)
            .astype(np.uint8) for _ in range(n)]


def test_corruption_spectrum_of_gaussian_noise_is_flat_at_one():
    clean = _smooth_images()
    rng = np.random.default_rng(4)
    noisy = [np.clip(x + rng.normal(0, 10, x.shape), 0, 255).astype(np.uint8) for x in clean]
    spec = spectral.corruption_spectra(clean, {"gaussian_noise": noisy})["gaussian_noise"]
    assert spec.mean() == pytest.approx(1.0)  # relative: mean 1 over the plane
    profile = spectral.radial_profile(spec, bins=8)["power"].iloc[1:-1].to_numpy()  # centre and corner: few bins
    assert np.allclose(profile, 1.0, atol=0.15), profile
    assert spectral.spectral_centroid(spec) == pytest.approx(spectral.radial_frequency(spec.shape).mean(), rel=0.05)


def test_corruption_spectrum_of_blur_is_high_pass_against_the_images_own_spectrum():
    # c(x) - x = (h * x) - x: its spectrum is |H(f) - 1|^2 P_x(f), which is 0 at f = 0 and rises with f
    rng = np.random.default_rng(5)
    clean = [rng.integers(64, 192, (64, 64, 3), dtype=np.uint8) for _ in range(12)]  # white: P_x flat
    blurred = [scipy.ndimage.gaussian_filter(x.astype(float), (1.5, 1.5, 0)).round().astype(np.uint8) for x in clean]
    spectra = spectral.corruption_spectra(clean, {"blur": blurred})
    power = spectral.radial_profile(spectra["blur"], bins=8)["power"].to_numpy()[:-1]
    # rises from ~0 at the centre to the plateau |H - 1|^2 -> 1 where the blur removes everything
    assert power[0] < 0.05 * power.max() and np.all(np.diff(power[:4]) > 0), power
    assert power[3:].min() > 0.8 * power.max(), power
    energies = spectral.band_energies(spectra["blur"])
    assert energies["low"] / 0.012 < energies["high"] / 0.80  # per unit area of each band (shares of the plane)


def test_corruption_spectra_absolute_and_relative_differ_by_the_mse():
    clean = _smooth_images(n=2, side=32)
    brighter = [np.clip(x.astype(int) + 20, 0, 255).astype(np.uint8) for x in clean]
    absolute = spectral.corruption_spectra(clean, {"b": brighter}, window=None, relative=False)["b"]
    relative = spectral.corruption_spectra(clean, {"b": brighter}, window=None)["b"]
    assert absolute.mean() == pytest.approx(400.0, rel=1e-6)  # Parseval: the MSE of a +20 shift
    assert np.allclose(relative * 400.0, absolute)
    assert spectral.spectral_centroid(absolute) == pytest.approx(0.0, abs=1e-9)  # all at zero frequency
    unchanged = spectral.corruption_spectra(clean, {"none": clean})["none"]
    assert not unchanged.any() and np.isnan(spectral.spectral_centroid(unchanged))


def test_condition_spectra_average_each_condition_with_one_codec_per_image():
    clean = _smooth_images(n=2, side=32)
    lossless = lambda batch: (np.asarray(batch), np.full(len(batch), 24.0))  # noqa: E731
    noisy = [np.clip(x.astype(int) + 5, 0, 255).astype(np.uint8) for x in clean]
    maps, table = spectral.condition_spectra(["a", "b"], clean, {"clean": clean, "shifted": noisy},
                                             [lossless, lossless], window=None)
    assert set(maps) == {"clean", "shifted"} and not maps["clean"]["vs_clean"].any()
    assert np.allclose(maps["shifted"]["vs_clean"], maps["shifted"]["shift"])  # a lossless codec: R error = shift
    assert set(table["condition"]) == {"clean", "shifted"} and set(table["image"]) == {"a", "b"}
    with pytest.raises(ValueError, match="one per image"):
        spectral.condition_spectra(["a", "b"], clean, {"clean": clean}, [lossless])


def test_pooled_spectra_are_the_mean_over_all_images():
    clean = _smooth_images(n=3, side=16)
    lossy = lambda batch: ((np.asarray(batch) // 8) * 8, np.full(len(batch), 1.0))  # noqa: E731
    conditions = {"clean": clean}
    whole, _ = spectral.condition_spectra(["a", "b", "c"], clean, conditions, [lossy] * 3)
    head, _ = spectral.condition_spectra(["a"], clean[:1], {"clean": clean[:1]}, [lossy])
    tail, _ = spectral.condition_spectra(["b", "c"], clean[1:], {"clean": clean[1:]}, [lossy] * 2)
    pooled = spectral.pool_spectra([(1, head), (2, tail), (0, {})])
    for kind in spectral.KINDS:
        assert np.allclose(pooled["clean"][kind], whole["clean"][kind])
    with pytest.raises(ValueError, match="no images"):
        spectral.pool_spectra([(0, head)])
