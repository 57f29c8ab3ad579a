"""Properties of nic_lib.colour: CIELAB by the standard formulas, and a colour shift that
reads zero for an identity, the angle of a hue rotation, the factor of a desaturation and
the permutation of a channel swap."""

import numpy as np
import pytest

from nic_lib import colour


def _natural(h=48, w=64, seed=0):
    """Smooth colourful gradients plus noise, away from 0 and 255 (no clipping)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / 10.0
    base = np.stack([128 + 80 * np.sin(x), 128 + 70 * np.cos(y + x / 2), 128 + 60 * np.sin(y - x)], -1)
    return np.clip(base + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)


def _lab_patch(hue_deg, chroma=25.0, lightness=60.0, n=16):
    """A (1, n·len(hue), 3) strip of CIELAB colours of one L* and C*, various hues."""
    h = np.radians(np.asarray(hue_deg, float))
    lab = np.stack([np.full_like(h, lightness), chroma * np.cos(h), chroma * np.sin(h)], -1)
    return np.repeat(lab, n, axis=0)[None]


# --- the colour space -------------------------------------------------------------------

def test_white_black_and_grey_are_achromatic_at_the_standard_lightness():
    img = np.array([[[255, 255, 255], [0, 0, 0], [119, 119, 119]]], np.uint8)
    lab = colour.srgb_to_lab(img)
    assert lab[0, 0] == pytest.approx([100, 0, 0], abs=1e-9)
    assert lab[0, 1] == pytest.approx([0, 0, 0], abs=1e-9)
    # sRGB 119 is L* ≈ 50 (the mid grey of the CIELAB scale)
    assert lab[0, 2, 0] == pytest.approx(50.0, abs=0.5) and abs(lab[0, 2, 1:]).max() < 1e-9


def test_primaries_match_published_cielab_values():
    # sRGB primaries in CIELAB (D65), as tabulated by Bruce Lindbloom's calculator
    img = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    lab = colour.srgb_to_lab(img)[0]
    assert lab[0] == pytest.approx([53.24, 80.09, 67.20], abs=0.05)
    assert lab[1] == pytest.approx([87.73, -86.18, 83.18], abs=0.05)
    assert lab[2] == pytest.approx([32.30, 79.19, -107.86], abs=0.05)


def test_lab_to_srgb_inverts_srgb_to_lab_including_the_linear_segments():
    img = np.concatenate([_natural().astype(float), np.arange(0, 12 * 3).reshape(1, 12, 3) * np.ones((48, 1, 1))],
                         axis=1)  # dark values exercise the linear pieces of both curves
    assert colour.lab_to_srgb(colour.srgb_to_lab(img)) == pytest.approx(img, abs=1e-8)


# --- colour_shift -------------------------------------------------------------------------

def test_identity_measures_no_shift_and_the_identity_map():
    img = _natural()
    s = colour.colour_shift(img, img)
    for key in ("bias_r", "bias_g", "bias_b", "delta_L", "delta_a", "delta_b", "delta_E",
                "hue_shift", "hue_shift_abs"):
        assert s[key] == pytest.approx(0.0, abs=1e-9), key
    assert s["chroma_ratio"] == pytest.approx(1.0)
    assert np.asarray(s["colour_map"]) == pytest.approx(np.eye(3), abs=1e-9)
    assert np.asarray(s["colour_offset"]) == pytest.approx(0.0, abs=1e-6)
    assert s["channel_order"] == colour.IDENTITY_ORDER


def test_a_hue_rotation_is_measured_as_its_angle_with_chroma_and_lightness_kept():
    lab = _lab_patch(np.arange(0, 360, 15))
    x = colour.lab_to_srgb(lab)
    rotated = _lab_patch(np.arange(0, 360, 15) + 20.0)
    x_hat = colour.lab_to_srgb(rotated)
    assert 0 <= min(x.min(), x_hat.min()) and max(x.max(), x_hat.max()) <= 255  # in gamut
    s = colour.colour_shift(x, x_hat)
    assert s["saturated"] == 1.0
    assert s["hue_shift"] == pytest.approx(20.0, abs=1e-6)
    assert s["hue_shift_abs"] == pytest.approx(20.0, abs=1e-6)
    assert s["chroma_ratio"] == pytest.approx(1.0, abs=1e-9)
    assert s["delta_L"] == pytest.approx(0.0, abs=1e-9)
    back = colour.colour_shift(x_hat, x)
    assert back["hue_shift"] == pytest.approx(-20.0, abs=1e-6)


def test_hue_shift_wraps_across_the_minus_180_degree_cut():
    x = colour.lab_to_srgb(_lab_patch([175.0]))
    x_hat = colour.lab_to_srgb(_lab_patch([-175.0]))  # +10° counter-clockwise, not −350°
    assert colour.colour_shift(x, x_hat)["hue_shift"] == pytest.approx(10.0, abs=1e-6)


def test_a_desaturation_is_a_chroma_ratio_with_no_hue_shift():
    hues = np.arange(0, 360, 30)
    x = colour.lab_to_srgb(_lab_patch(hues, chroma=28.0))
    x_hat = colour.lab_to_srgb(_lab_patch(hues, chroma=16.8))
    s = colour.colour_shift(x, x_hat)
    assert s["chroma_ratio"] == pytest.approx(0.6, abs=1e-9)
    assert s["hue_shift_abs"] == pytest.approx(0.0, abs=1e-6)
    # chroma falls symmetrically around the hue circle: no mean Δa*, Δb*
    assert abs(s["delta_a"]) < 1e-6 and abs(s["delta_b"]) < 1e-6


def test_the_colour_map_of_a_desaturated_natural_image_shrinks_and_mixes_channels():
    img = _natural()
    lab = colour.srgb_to_lab(img) * np.array([1.0, 0.5, 0.5])  # chroma halved, L* kept
    x_hat = colour.lab_to_srgb(lab)
    assert 0 <= x_hat.min() and x_hat.max() <= 255
    s = colour.colour_shift(img, x_hat)
    assert s["chroma_ratio"] == pytest.approx(0.5, abs=1e-9)
    # each channel is pulled toward the others: diagonal below 1, off-diagonals positive
    A = np.asarray(s["colour_map"])
    assert (np.diag(A) < 0.9).all() and (A[~np.eye(3, dtype=bool)] > 0).all()
    assert s["channel_order"] == colour.IDENTITY_ORDER


def test_a_channel_swap_is_detected_as_a_permuted_colour_map():
    img = _natural()
    s = colour.colour_shift(img, img[..., ::-1])  # RGB read as BGR
    assert s["channel_order"] == (2, 1, 0)
    assert np.asarray(s["colour_map"]) == pytest.approx(np.eye(3)[::-1], abs=1e-9)
    assert s["hue_shift_abs"] > 30


def test_a_constant_offset_is_a_bias_and_the_map_offset():
    img = _natural().astype(float) * 0.8 + 20  # room for the offset within 0..255
    shifted = img + np.array([0.0, -8.0, 0.0])
    s = colour.colour_shift(img, shifted)
    assert [s["bias_r"], s["bias_g"], s["bias_b"]] == pytest.approx([0, -8, 0], abs=1e-9)
    assert np.asarray(s["colour_offset"]) == pytest.approx([0, -8, 0], abs=1e-6)
    assert np.asarray(s["colour_map"]) == pytest.approx(np.eye(3), abs=1e-9)
    assert s["delta_a"] > 0  # less green is more magenta: a* grows


def test_grey_images_have_no_hue_and_no_determined_map():
    grey = np.full((8, 8, 3), 90, np.uint8)
    s = colour.colour_shift(grey, grey)
    assert s["saturated"] == 0 and np.isnan(s["hue_shift"]) and np.isnan(s["chroma_ratio"])
    assert np.isnan(s["colour_map"]).all() and s["channel_order"] == (-1, -1, -1)
    with pytest.raises(ValueError, match="not determined"):
        colour.colour_map(grey, grey)


@pytest.mark.parametrize("x, x_hat, match", [
    (np.zeros((4, 4, 3)), np.zeros((4, 5, 3)), "differ in shape"),
    (np.zeros((4, 4)), np.zeros((4, 4)), r"\(H, W, 3\)"),
    (np.zeros((4, 4, 3)), np.full((4, 4, 3), 0.5) * 600, "0..255"),
    (np.zeros((4, 4, 3)), np.full((4, 4, 3), np.nan), "NaN"),
])
def test_bad_inputs_are_refused_with_the_cause(x, x_hat, match):
    with pytest.raises(ValueError, match=match):
        colour.colour_shift(x, x_hat)


def test_non_numeric_images_and_negative_thresholds_are_refused():
    with pytest.raises(TypeError, match="numbers"):
        colour.colour_shift(np.full((2, 2, 3), "a"), np.full((2, 2, 3), "a"))
    with pytest.raises(ValueError, match="saturated_chroma"):
        colour.colour_shift(np.zeros((2, 2, 3)), np.zeros((2, 2, 3)), saturated_chroma=-1)


# --- PQ-MIM's colour path: a model whose decoder inverts its encoder returns the input ----

def _lossless_pqmim():
    """A PQ-MIM whose every stage is exact on 8-bit images, so any change of colour between
    an image and its decoded stream is the data path's (channel order, scaling, clamping,
    rounding), not the model's.

    g_a: four stride-2 convolutions set to space-to-depth (channel 4c + 2dy + dx of layer
    l+1 = channel c of layer l at offset (dy, dx)), residual blocks silenced (conv2 = 0, so
    they return their input): z holds the 16x16 block's 768 values v/255. PQ: M = 768
    scalar quantizers, codebook k/255 (K = 256), so quantizing v/255 is exact. g_s: the
    transposed convolutions set to depth-to-space, the inverse of g_a.
    """
    import torch

    from nic_lib.models import pqmim

    N, D = 192, 768  # 3·4³ channels after three space-to-depth steps, 3·4⁴ after four
    model = pqmim.PQMIM(N=N, latent_dim=D, M=D, K=256, width=8, layers=1, heads=1).eval()
    state = {k: torch.zeros_like(v) for k, v in model.state_dict().items()
             if k.startswith(("g_a.", "g_s."))}
    used = 3  # input channels carrying data at each layer
    for layer in (0, 2, 4, 6):  # g_a's convolutions, g_s's deconvolutions (same indices)
        w_a, w_s = state[f"g_a.{layer}.weight"], state[f"g_s.{6 - layer}.weight"]
        for c in range(used):
            for dy in range(2):
                for dx in range(2):
                    # conv: out[4c+2dy+dx](i, j) = in[c](2i+dy, 2j+dx)  (kernel tap dy+2, dx+2)
                    w_a[4 * c + 2 * dy + dx, c, dy + 2, dx + 2] = 1.0
                    # deconv (weights in, out, kh, kw): out[c](2i+dy, 2j+dx) = in[4c+2dy+dx](i, j)
                    w_s[4 * c + 2 * dy + dx, c, dy + 2, dx + 2] = 1.0
        used *= 4
    model.load_state_dict(state, strict=False)
    with torch.no_grad():
        model.quantizer.codebooks.copy_(torch.arange(256.0).div(255).expand(D, 256)[..., None])
    return model


@pytest.mark.slow
def test_a_pqmim_whose_decoder_inverts_its_encoder_returns_the_input_colours():
    from nic_lib import coding
    from nic_lib.models import pqmim

    model = _lossless_pqmim()
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)  # padded to 16x32 and cropped back
    img[..., 0] |= 128  # red above 127 everywhere: channels differ, a swap cannot go unnoticed
    x = coding.pad_to(coding.to_tensor(img), pqmim.DOWNSAMPLING)
    assert np.array_equal(coding.from_tensor(model.g_s(model.g_a(x))[..., :12, :20]), img)
    out = pqmim.code_image(model, img)  # the real stream: compress, rANS, decompress
    assert out["exact"]
    assert np.array_equal(out["x_hat"], img)
    s = colour.colour_shift(img, out["x_hat"])
    assert s["delta_E"] == 0.0 and s["channel_order"] == colour.IDENTITY_ORDER


# --- hue_shift_profile ----------------------------------------------------------------

def test_hue_profile_reads_a_uniform_rotation_in_every_bin():
    hues = np.arange(-165, 180, 30.0)  # one hue at the centre of each 30° bin
    x = colour.lab_to_srgb(_lab_patch(hues))
    x_hat = colour.lab_to_srgb(_lab_patch(hues + 10.0))
    rows = colour.hue_shift_profile(x, x_hat)
    assert [r["hue_from"] for r in rows] == list(np.arange(-180, 180, 30.0))
    assert all(r["hue_shift"] == pytest.approx(10.0, abs=1e-6) for r in rows)
    assert all(r["chroma_ratio"] == pytest.approx(1.0) and r["pixels"] == 16 for r in rows)


def test_hue_profile_shows_hues_pulled_toward_a_common_one_from_both_sides():
    hues = np.array([15.0, 45.0, 75.0, 105.0])
    x = colour.lab_to_srgb(_lab_patch(hues))
    x_hat = colour.lab_to_srgb(_lab_patch(hues + 0.5 * (60.0 - hues)))  # halfway to 60°
    shifts = {r["hue_from"]: r["hue_shift"] for r in colour.hue_shift_profile([x, x], [x_hat, x_hat])}
    assert shifts == pytest.approx({0.0: 22.5, 30.0: 7.5, 60.0: -7.5, 90.0: -22.5}, abs=1e-6)
    # the pooled mean hides it: the pulls cancel
    assert colour.colour_shift(x, x_hat)["hue_shift"] == pytest.approx(0.0, abs=1e-6)


def test_hue_profile_pools_images_of_different_sizes_by_pixels():
    x = colour.lab_to_srgb(_lab_patch([45.0], n=10))
    tall = colour.lab_to_srgb(_lab_patch([45.0], n=30)).transpose(1, 0, 2)  # (30, 1, 3)
    rows = colour.hue_shift_profile([x, tall], [colour.lab_to_srgb(_lab_patch([55.0], n=10)),
                                                colour.lab_to_srgb(_lab_patch([45.0], n=30)).transpose(1, 0, 2)])
    assert rows == [pytest.approx({"hue_from": 30.0, "hue_to": 60.0, "pixels": 40,
                                   "hue_shift": 10.0 * 10 / 40, "chroma_ratio": 1.0})]


def test_hue_profile_refuses_mismatched_lists_and_bins_that_do_not_divide_360():
    img = _natural()
    with pytest.raises(ValueError, match="one reconstruction per original"):
        colour.hue_shift_profile([img, img], [img])
    with pytest.raises(ValueError, match="divide 360"):
        colour.hue_shift_profile(img, img, bin_width=25)
