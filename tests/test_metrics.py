import numpy as np
import pytest

from nic_lib import metrics

SIDE = metrics.MS_SSIM_MIN_SIDE  # smallest image MS-SSIM accepts


def _image(h=SIDE, w=SIDE, seed=0):
    """A natural-ish test image: smooth gradients plus texture, values away from 0 and 255."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = 60 + 40 * np.sin(x / 9.0)[..., None] + 30 * np.cos(y / 13.0)[..., None] + np.array([0, 20, 40])
    return np.clip(base + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)


def test_psnr_of_an_off_by_one_image_is_48_13_db():
    a = np.full((8, 8, 3), 100, dtype=np.uint8)
    # MSE = 1, PSNR = 10 log10(255^2 / 1) = 48.1308 dB; a - b in uint8 would wrap to 255.
    assert metrics.mse(a, a + 1) == 1.0
    assert metrics.psnr(a, a + 1) == pytest.approx(48.1308, abs=1e-4)


def test_psnr_of_a_known_pattern():
    a = np.zeros((4, 4, 3), dtype=np.uint8)
    b = a.copy()
    b[0, 0, 0] = 255  # one of 48 values off by 255: MSE = 255^2 / 48, PSNR = 10 log10(48)
    assert metrics.mse(a, b) == pytest.approx(255.0**2 / 48)
    assert metrics.psnr(a, b) == pytest.approx(10 * np.log10(48))
    assert metrics.psnr(b, a) == metrics.psnr(a, b)


def test_psnr_pools_mse_over_channels_not_psnr():
    a = np.zeros((2, 2, 3), dtype=np.uint8)
    b = a.copy()
    b[..., 0] = 10  # channel MSEs 100, 0, 0: pooled MSE 100/3, not mean of (20.2 dB, inf, inf)
    assert metrics.psnr(a, b) == pytest.approx(10 * np.log10(255.0**2 * 3 / 100))


def test_identical_images_have_infinite_psnr_and_ms_ssim_one():
    a = _image()
    assert metrics.psnr(a, a) == float("inf")
    assert metrics.ms_ssim(a, a) == pytest.approx(1.0, abs=1e-6)
    assert metrics.ms_ssim_db(1.0) == float("inf")


@pytest.mark.parametrize(
    ("b", "message"),
    [(np.zeros((8, 9, 3), np.uint8), "differ in shape"), (np.zeros((8, 8, 4), np.uint8), "differ in shape")],
)
def test_shape_mismatch_is_rejected(b, message):
    with pytest.raises(ValueError, match=message):
        metrics.psnr(np.zeros((8, 8, 3), np.uint8), b)


@pytest.mark.parametrize("shape", [(8, 8), (8, 8, 4), (8, 8, 1)])
def test_non_rgb_images_are_rejected(shape):
    a = np.zeros(shape, np.uint8)
    with pytest.raises(ValueError, match="RGB"):
        metrics.mse(a, a)


def test_ms_ssim_decreases_with_more_noise():
    a = _image()
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 1, a.shape)
    scores = [metrics.ms_ssim(a, np.clip(a + s * noise, 0, 255).astype(np.uint8)) for s in (2, 8, 32)]
    assert 1.0 > scores[0] > scores[1] > scores[2] > 0.0
    db = [metrics.ms_ssim_db(s) for s in scores]
    assert db[0] > db[1] > db[2]


def test_ms_ssim_db_matches_its_formula():
    assert metrics.ms_ssim_db(0.99) == pytest.approx(20.0)
    assert metrics.ms_ssim_db(0.9) == pytest.approx(10.0)


def test_ms_ssim_accepts_the_minimum_side_and_rejects_smaller_images():
    metrics.ms_ssim(_image(SIDE, SIDE + 40), _image(SIDE, SIDE + 40, seed=1))
    small = _image(SIDE - 1, 300)
    with pytest.raises(ValueError, match=f">= {SIDE}"):
        metrics.ms_ssim(small, small)


def test_bpp_is_eight_bits_per_byte_over_pixels():
    # A Kodak image is 768x512 = 393216 pixels; 49152 bytes = 393216 bits = 1 bpp.
    assert metrics.bpp(49152, 512, 768) == 1.0
    assert metrics.bpp(0, 10, 10) == 0.0
    assert metrics.bpp(3, 2, 3) == pytest.approx(4.0)


@pytest.mark.parametrize(("num_bytes", "h", "w"), [(10, 0, 5), (10, 5, -1), (-1, 5, 5)])
def test_bpp_rejects_impossible_sizes(num_bytes, h, w):
    with pytest.raises(ValueError):
        metrics.bpp(num_bytes, h, w)


@pytest.mark.parametrize("shape", [(161, 161), (200, 301), (257, 390)])
def test_ms_ssim_equals_pytorch_msssim_at_even_and_odd_sizes(shape):
    import torch
    from pytorch_msssim import ms_ssim as reference

    rng = np.random.default_rng(sum(shape))
    # a smooth image (so every scale has structure) and three noisier versions of it
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    base = 127 + 60 * np.sin(xx / 9.0)[..., None] * np.cos(yy / 13.0)[..., None] + rng.normal(0, 8, (*shape, 3))
    a = np.clip(base, 0, 255).astype(np.uint8)
    noisy = [np.clip(a + rng.normal(0, s, a.shape), 0, 255).astype(np.uint8) for s in (2, 15, 50)]
    ours = metrics.ms_ssim_many(a, noisy)

    def as_tensor(img):
        return torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)[None]

    theirs = [float(reference(as_tensor(a), as_tensor(b), data_range=255)) for b in noisy]
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert ours == [metrics.ms_ssim(a, b) for b in noisy]
    assert ours[0] > ours[1] > ours[2]
