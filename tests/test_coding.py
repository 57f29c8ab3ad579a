"""Image <-> tensor and padding for the learned codecs (nic_lib/coding.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nic_lib import coding


def _image(h=40, w=70, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_padding_keeps_the_original_pixels():
    x = coding.to_tensor(_image())
    padded = coding.pad_to(x, 64)
    assert padded.shape[-2:] == (64, 128)
    assert torch.equal(padded[..., :40, :70], x)
    assert np.array_equal(coding.from_tensor(x), _image())


def test_padding_repeats_the_last_row_and_column():
    x, (pad_bottom, pad_right) = coding.pad_image(_image(), 16)
    assert (pad_bottom, pad_right) == coding.padding(40, 70, 16) == (8, 10)
    assert x.shape == (1, 3, 48, 80)
    assert torch.equal(x[..., 40:, :70], x[..., 39:40, :70].expand(-1, -1, 8, -1))
    assert torch.equal(x[..., :, 70:], x[..., :, 69:70].expand(-1, -1, -1, 10))


@pytest.mark.parametrize("side,factor,pad", [(64, 64, 0), (1, 64, 63), (65, 64, 63), (37, 1, 0)])
def test_padding_reaches_the_next_multiple(side, factor, pad):
    assert coding.padding(side, side, factor) == (pad, pad)
    assert (side + pad) % factor == 0


def test_pad_image_refuses_what_is_not_uint8_rgb():
    with pytest.raises(ValueError, match="uint8"):
        coding.pad_image(_image().astype(np.float32), 64)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        coding.pad_image(_image()[..., 0], 64)


def test_crop_in_bands_equals_one_conversion():
    x = torch.rand(1, 3, 600, 40) * 1.2 - 0.1
    x[0, 0, 5, 5] = float("nan")
    expected = (torch.nan_to_num(x[0], nan=0.0).clamp(0, 1) * 255).round().to(torch.uint8)
    np.testing.assert_array_equal(coding.crop_to_image(x, 599, 37),
                                  expected.permute(1, 2, 0).numpy()[:599, :37])


def test_crop_and_from_tensor_agree_on_a_decoder_output():
    x = torch.rand(1, 3, 48, 80) * 1.2 - 0.1
    np.testing.assert_array_equal(coding.crop_to_image(x, 40, 70),
                                  coding.from_tensor(x[..., :40, :70]))


def test_model_input_is_padded_to_the_model_factor():
    model = torch.nn.Conv2d(3, 3, 1)
    model.downsampling_factor = 16
    x = coding.model_input(model, _image())
    assert x.shape == (1, 3, 48, 80) and x.device == coding.model_device(model)
    assert coding.downsampling_factor(torch.nn.Identity()) == coding.DEFAULT_DOWNSAMPLING_FACTOR


# --------------------------------------------------------------------------- the adapter


class _Identity(torch.nn.Module):
    """Returns its input as x_hat, and p = 1/2 for each of its values (1 bit each)."""

    downsampling_factor = 16

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(x)
        return {"x_hat": x, "likelihoods": {"y": torch.full_like(x, 0.5)}}


def test_forward_images_pad_by_replication_to_the_factor_and_crop_back():
    model = _Identity()
    images = np.stack([_image(seed=1), _image(seed=2)])
    x_hat, bpp = coding.forward_images(model, images)
    [x] = model.seen
    assert x.shape == (2, 3, 48, 80)  # 40x70 -> multiples of 16
    assert torch.equal(x[..., 40:, :70], x[..., 39:40, :70].expand(-1, -1, 8, -1))
    assert torch.equal(x[..., :, 70:], x[..., :, 69:70].expand(-1, -1, -1, 10))
    np.testing.assert_array_equal(x_hat, images)  # the crop is undone exactly
    # bpp_est = Σ −log2 p / (H·W) of the unpadded image: 3·48·80 bits over 40·70 pixels
    np.testing.assert_allclose(bpp, [3 * 48 * 80 / (40 * 70)] * 2)


def test_bpp_is_the_payload_of_the_nic_file():
    from nic_lib import container
    from nic_lib.testing.fuzz import tiny_model

    model, img = tiny_model("mbt2018-mean"), _image(37, 100, seed=3)
    enc = coding.encode(model, img)
    data = container.encode_image(model, img, None, 1, "cpu")
    header, streams = container.unpack(data)
    assert enc["bits"] == 8 * sum(len(s) for s in streams)
    assert enc["bpp"] == enc["bits"] / (37 * 100)
    assert header.bpp > enc["bpp"]  # the file adds its header to the same payload
    r = coding.code_image(model, img)
    np.testing.assert_array_equal(r["x_hat"], container.decode_image(data, model))
    assert r["bpp"] == enc["bpp"] and r["bpp_est"] == pytest.approx(enc["bpp_est"])


def test_the_fast_path_estimates_what_code_image_estimates():
    from nic_lib.testing.fuzz import tiny_model

    model, img = tiny_model("mbt2018-mean"), _image(64, 64, seed=4)  # forward is its coder
    x_hat, bpp = coding.forward_images(model, img[None])
    r = coding.code_image(model, img, decode=False)
    assert bpp[0] == pytest.approx(r["bpp_est"], rel=1e-5)
    np.testing.assert_array_equal(x_hat[0], r["x_hat"])


def test_check_estimate_raises_or_warns_with_both_numbers():
    assert coding.check_estimate(1000, 990, rtol=0.02) == pytest.approx(0.01)
    with pytest.raises(coding.RateEstimateError, match=r"900 bits.*1000 bits.*10\.00%"):
        coding.check_estimate(1000, 900, rtol=0.02, what="tiny")
    with pytest.warns(coding.RateEstimateWarning, match="1000 bits"):
        assert coding.check_estimate(1000, 900, rtol=0.02, action="warn") == pytest.approx(0.1)
