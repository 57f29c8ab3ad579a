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
